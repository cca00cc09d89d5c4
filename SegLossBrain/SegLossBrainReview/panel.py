"""The page: the segment editor (trame-slicer's own: segment list, paint / erase / scissors..., undo / redo,
opacity and outline) on the left, the views in the middle, and on the right the case: its QC items and volume
table (flags first, mean confidence when known; a click centres the views on the structure), the confidence
overlay switch, window/level, Save correction, Fine-tune / Stop / Activate with the validation curve plotted,
and for a results folder the case list (flagged cases first). Widgets only: ``app`` does the work.
"""
from __future__ import annotations

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import html
from trame.widgets import vuetify3 as v3

ROW_STYLE = "cursor: pointer;"


def build_page(server, controller, layout_manager, editor_ui_type):
    """The whole page; returns the trame-slicer segment editor widget (its logic connects to it)."""
    with VAppLayout(server, template_name="main", theme="dark") as layout:
        with v3.VAppBar(density="compact"):
            v3.VToolbarTitle("SegLossBrain review: {{ case_title }}", id="case-title")
            v3.VSpacer()
            html.Span("{{ model_text }}", id="model-text", classes="text-caption mr-4")
        with v3.VNavigationDrawer(permanent=True, location="left", width=330):
            editor = editor_ui_type()
            with html.Div(classes="d-flex justify-center pa-1"):
                editor.build_undo_redo_buttons()
        with v3.VNavigationDrawer(permanent=True, location="right", width=400):
            _case_panel(controller)
        with v3.VMain(), html.Div(classes="d-flex flex-row fill-height"):
            layout_manager.initialize_layout_grid(layout)
    return editor


def _case_panel(ctrl):
    with html.Div(classes="pa-3 text-body-2", style="overflow-y: auto; height: 100%;"):
        with html.Div(v_if=("cases.length > 1",), classes="mb-3"):
            html.Div("Cases (QC-flagged first)", classes="text-subtitle-2")
            with v3.VList(density="compact", id="case-list", max_height=180, style="overflow-y: auto;"):
                with v3.VListItem(v_for="(item, i) in cases", key="i", active=("i === case_index",),
                                  click=(ctrl.open_case, "[i]")):
                    html.Span("{{ item.case_id }}", classes="case-id")
                    html.Span(" ({{ item.status === 'ok' ? item.flags + ' QC' : item.status }})",
                              classes="text-caption")
        with html.Div(v_if=("qc_warnings.length",), classes="mb-2", id="qc-warnings"):
            html.Div("QC: {{ item }}", v_for="(item, i) in qc_warnings", key="i", classes="text-warning")
        html.Div("Structure volumes (mL); click one to centre the views", classes="text-subtitle-2")
        with html.Table(id="volume-table", style="width: 100%; border-collapse: collapse;"):
            with html.Tr(v_for="(row, i) in volume_rows", key="i", click=(ctrl.centre_on, "[row.index]"),
                         style=ROW_STYLE, title=("row.flag",)):
                with html.Td():
                    html.Span(style=("{display: 'inline-block', width: '10px', height: '10px', "
                                     "background: row.color, marginRight: '6px'}",))
                    html.Span("{{ row.name }}")
                html.Td("{{ row.volume_ml.toFixed(2) }}", style="text-align: right;")
                html.Td("{{ row.confidence == null ? '' : row.confidence.toFixed(2) }}", classes="text-caption",
                        style="text-align: right; padding-left: 6px;", title="mean confidence")
                html.Td("{{ row.flag ? 'QC' : '' }}", classes="text-warning", style="padding-left: 6px;")
        with html.Div(classes="d-flex mt-2"):
            v3.VBtn("Fit views", id="fit-views", click=ctrl.fit_views, size="small", variant="tonal", classes="mr-2")
            v3.VBtn("Update 3D", id="update-3d", click=(ctrl.update_surfaces, "['on Update 3D']"), size="small",
                    variant="tonal", title="rebuild the 3D view's segment surfaces from the labels as edited")
        html.Div("{{ surfaces_status }}", id="surfaces-status", classes="text-caption")
        v3.VSwitch(v_model=("confidence_on",), label="Confidence overlay", disabled=("!confidence_known",),
                   density="compact", hide_details=True, color="#ff00ff", id="confidence-switch", classes="mt-2")
        html.Div("{{ confidence_known ? 'magenta where the model was less than 90 % sure (deeper: less sure); segments as outlines meanwhile' : "
                 "'no confidence for labels read from a file (known once the page segments the case)' }}",
                 classes="text-caption", id="confidence-legend")
        html.Div("Window / level", classes="text-subtitle-2 mt-3")
        v3.VSlider(v_model=("window",), min=("wl_min",), max=("wl_max",), step=("wl_step",), label="W",
                   density="compact", hide_details=True, id="window-slider")
        v3.VSlider(v_model=("level",), min=("wl_low",), max=("wl_high",), step=("wl_step",), label="L",
                   density="compact", hide_details=True, id="level-slider")
        html.Div("Correct", classes="text-subtitle-2 mt-3")
        html.Div("Pick a segment and a tool (Paint, Erase, Scissors) on the left; undo/redo below them.",
                 classes="text-caption")
        v3.VBtn("Save correction", id="save-correction", click=ctrl.save_correction, color="primary",
                block=True, classes="mt-2")
        html.Div("{{ save_status }}", id="save-status", classes="text-caption mt-1", style="white-space: pre-wrap;")
        html.Div("Fine-tune on the saved pairs ({{ pair_count }} in {{ pairs_dir }})",
                 classes="text-subtitle-2 mt-3", id="pairs-info")
        v3.VTextField(v_model=("ft_name",), label="New version name", density="compact", hide_details=True,
                      id="ft-name")
        with html.Div(classes="d-flex mt-2"):
            v3.VBtn("Fine-tune", id="ft-start", click=(ctrl.start_finetune, "[ft_name]"),
                    disabled=("ft_running || !pair_count",),
                    classes="mr-2")
            v3.VBtn("Stop", id="ft-stop", click=ctrl.stop_finetune, disabled=("!ft_running",), classes="mr-2")
            v3.VBtn("Activate", id="ft-activate", click=(ctrl.activate, "[false]"),
                    disabled=("ft_running || !ft_version",))
        v3.VProgressLinear(model_value=("ft_progress",), height=6, classes="mt-2", id="ft-progress")
        html.Div("{{ ft_status }}", id="ft-status", classes="text-caption mt-1", style="white-space: pre-wrap;")
        html.Div(v_if=("ft_curve_svg",), v_html=("ft_curve_svg",), id="ft-curve-plot", classes="mt-2")
        with html.Div(v_if=("ft_curve.length",), classes="text-caption", id="ft-curve"):
            html.Div("validation Dice at step {{ p.step }}: {{ p.mean === null ? 'n/a' : p.mean.toFixed(3) }}",
                     v_for="(p, i) in ft_curve", key="i")
        v3.VBtn("Activate anyway", id="ft-activate-force", v_if=("ft_activate_refused",),
                click=(ctrl.activate, "[true]"), color="warning", size="small", classes="mt-1")
        html.Div("{{ activate_status }}", id="activate-status", classes="text-caption mt-1",
                 style="white-space: pre-wrap;")
        v3.VProgressLinear(v_if=("resegmenting",), indeterminate=True, height=4, classes="mt-1", id="resegmenting")
    return ctrl
