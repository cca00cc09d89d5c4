"""The review app: one trame server, one Slicer scene (trame-slicer's ``SlicerApp``), the views and the segment
editor of trame-slicer, and the handlers of the page's own controls (``panel``). One case is open at a time.
"""
from __future__ import annotations

import numpy as np

from .cases import Case
from .corrections import CorrectionError, list_pairs, save_correction
from .inputs import CaseData, ReviewInputError, read_case
from .scene import LoadedCase, load_case, segment_scan
from .tuning import TuningSession

LAYOUT = "Axial Primary"  # axial large; 3D, coronal and sagittal beside it
BRUSH_DIAMETER_MM = 6.0


class ReviewApp:
    def __init__(self, server, cases: list[Case], pairs_dir, first_index: int = 0, first: CaseData | None = None,
                 finetune_args=(),
                 finetune_minutes: float = 8.0, log=print):
        from trame_slicer import module as trame_slicer_module
        from trame_slicer.app.logic import SegmentEditorLogic
        from trame_slicer.app.ui import SegmentEditorUI
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories

        from .panel import build_page

        self.server, self.state, self.ctrl = server, server.state, server.controller
        self.cases, self.pairs_dir, self.log = cases, pairs_dir, log
        self.loaded: LoadedCase | None = None
        self.data: CaseData | None = None
        server.enable_module(trame_slicer_module)
        self.slicer = SlicerApp()
        # PNG: lossless, so the page shows the product's colours exactly (a local server: bandwidth is no issue)
        register_rca_factories(self.slicer.view_manager, server, rca_encoder="png")
        self.layouts = LayoutManager(self.slicer.scene, self.slicer.view_manager, server)
        self.layouts.register_layout_dict(LayoutManager.default_grid_configuration(), lazy_initialization=True)
        # the views exist before the segment editor: its effects attach their pipelines to the views when their
        # parameters are first set, and a view still being built then is missed (no brush in it)
        self.layouts.create_layout_views_if_needed(LAYOUT)
        self.editor_logic = SegmentEditorLogic(server, self.slicer)
        self.tuning = TuningSession(self, finetune_args, finetune_minutes)
        self._defaults()
        for name in ("open_case", "centre_on", "fit_views", "update_surfaces", "save_correction", "start_finetune",
                     "stop_finetune",
                     "activate"):
            self.ctrl[name] = getattr(self, name)
        editor_ui = build_page(server, self.ctrl, self.layouts, SegmentEditorUI)
        self.editor_logic.set_ui(editor_ui)
        self._brush_defaults()
        self.layouts.set_layout(LAYOUT)
        self.state.change("window", "level")(self._on_window_level)
        self.state.change("confidence_on")(self._on_confidence)
        self.open_case(first_index, first)

    def _defaults(self) -> None:
        s = self.state
        s.trame__title = "SegLossBrain review"
        s.cases = [{"case_id": c.case_id, "flags": len(c.qc), "status": c.status} for c in self.cases]
        s.case_index, s.case_title, s.model_text = 0, "", ""
        s.volume_rows, s.qc_warnings = [], []
        s.window, s.level, s.wl_min, s.wl_max, s.wl_low, s.wl_high, s.wl_step = 1, 0, 0, 1, 0, 1, 1
        s.save_status, s.activate_status = "", ""
        s.pairs_dir, s.pair_count = str(self.pairs_dir), len(list_pairs(self.pairs_dir))
        s.ft_name, s.ft_running, s.ft_progress, s.ft_status = self.tuning.default_name(), False, 0, ""
        s.ft_curve, s.ft_version, s.ft_activate_refused = [], "", False
        s.ft_curve_svg, s.resegmenting = "", False
        s.confidence_on, s.confidence_known = False, False
        s.surfaces_status = ""

    def _brush_defaults(self) -> None:
        """A brush of a fixed size in mm, painting on the shown slice only (a cylinder, not a sphere)."""
        from trame_server.utils.typed_state import TypedState
        from trame_slicer.app.ui.segmentation.paint_effect_ui import PaintEffectState
        from trame_slicer.segmentation import BrushDiameterMode

        from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectPaint

        brush = TypedState(self.state, PaintEffectState).data
        brush.brush_diameter_mode = BrushDiameterMode.Absolute
        brush.use_sphere_brush = False
        brush.brush_diameter_slider.value = BRUSH_DIAMETER_MM
        # the page syncs a brush's size and shape to the effect, not its mode: set the effects themselves too
        for effect_type in (SegmentationEffectPaint, SegmentationEffectErase):
            effect = self.slicer.segmentation_editor.get_effect(effect_type)
            effect.set_brush_diameter(BRUSH_DIAMETER_MM, BrushDiameterMode.Absolute)
            effect.set_use_sphere_brush(False)

    # -- cases ------------------------------------------------------------------------------------------------
    def open_case(self, index: int, data: CaseData | None = None) -> None:
        case = self.cases[int(index)]
        if case.status != "ok":
            self.state.save_status = f"{case.case_id} was not segmented by batch: {case.reason}"
            return
        try:
            data = data or read_case(case)
        except ReviewInputError as error:
            self.state.save_status = f"cannot open {case.case_id}: {error}"
            return
        if data.labels is None:
            self.log(f"segmenting {case.case_id} with the active model ...")
            segment_scan(data, case)
        self._load(int(index), data, reset_views=True)

    def _load(self, index: int, data: CaseData, reset_views: bool) -> None:
        self.data = data
        self.loaded = load_case(self.slicer.scene, self.cases[index], data)
        volume = self.loaded.volume
        self.slicer.display_manager.show_volume(volume, do_reset_views=reset_views)
        self.editor_logic.on_volume_changed(volume)
        self._show_case(index, data)
        self.update_surfaces("when the case opened")
        self._on_confidence(self.state.confidence_on)

    async def resegment(self) -> None:
        """The open case segmented again with the (newly) active model, off the event loop; the views keep
        their slices. Corrections not saved are replaced, as the page says before."""
        import asyncio

        if self.loaded is None or self.data is None:
            return
        index, case = self.state.case_index, self.loaded.case
        data = CaseData(self.data.image, None, False)
        with self.state:
            self.state.resegmenting = True
        self.log(f"segmenting {case.case_id} again with the active model ...")
        try:
            await asyncio.to_thread(segment_scan, data, case)
        except Exception as error:  # the page says why, the old labels stay
            with self.state:
                self.state.resegmenting = False
                self.state.activate_status += f"\nThe case was not segmented again: {error}"
            return
        with self.state:
            self._load(index, data, reset_views=False)
            self.state.resegmenting = False

    def _show_case(self, index: int, data: CaseData) -> None:
        import SimpleITK as sitk

        s, loaded = self.state, self.loaded
        s.case_index, s.case_title = index, loaded.case.case_id
        s.model_text = f"labels: {loaded.model or 'from file'} | active model: {self.tuning.active_model()}"
        s.volume_rows = [vars(row) for row in loaded.rows]
        s.confidence_known = loaded.confidence is not None
        s.qc_warnings = loaded.warnings
        s.save_status = ""
        values = sitk.GetArrayViewFromImage(data.image)
        low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
        full_low, full_high = float(values.min()), float(values.max())
        span = max(full_high - full_low, 1e-6)
        s.wl_min, s.wl_max, s.wl_low, s.wl_high, s.wl_step = span / 1000, span, full_low, full_high, span / 1000
        s.window, s.level = max(high - low, span / 1000), (high + low) / 2

    def _on_window_level(self, window, level, **_) -> None:
        if self.loaded is None:
            return
        display = self.loaded.volume.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(float(window), float(level))

    def _on_confidence(self, confidence_on, **_) -> None:
        from .overlay import show_confidence

        if self.loaded is not None:
            show_confidence(self.slicer.view_manager, self.loaded.confidence, self.loaded.segmentation,
                            bool(confidence_on))

    def fit_views(self) -> None:
        """Each slice view shows its whole slice of the scan again (Slicer's fit to window)."""
        self.slicer.display_manager.reset_views()

    def update_surfaces(self, when: str = "on Update 3D") -> None:
        """The 3D view's segment surfaces rebuilt from the labels as they are now (not on every paint stroke)."""
        from .surfaces import build_surfaces

        if self.loaded is None:
            return
        seconds = build_surfaces(self.slicer.scene, self.loaded.segmentation)
        self.log(f"3D surfaces of {self.loaded.case.case_id} built in {seconds:.1f} s")
        self.state.surfaces_status = f"3D: the segments as {when} (built in {seconds:.1f} s)"

    def centre_on(self, index: int) -> None:
        from SegLossBrainSlicer.confidence import centre_views_on, segment_view_point
        from SegLossBrainSlicer.segmentation_io import structure_segment_ids

        if self.loaded is None:
            return
        for segment_id in structure_segment_ids(self.loaded.segmentation, int(index)):
            point = segment_view_point(self.loaded.segmentation, segment_id)
            if point is not None:
                centre_views_on(self.slicer.scene, point)
                self.editor_logic.segmentation_editor.set_active_segment_id(segment_id)
                return

    # -- correction and fine-tuning ---------------------------------------------------------------------------
    def save_correction(self) -> None:
        if self.loaded is None:
            return
        try:
            saved = save_correction(self.loaded.volume, self.loaded.segmentation, self.loaded.case, self.pairs_dir)
        except CorrectionError as error:
            self.state.save_status = f"Not saved: {error}"
            return
        self.state.pair_count = len(list_pairs(self.pairs_dir))
        self.update_surfaces("saved")
        self.state.save_status = "\n".join([f"Saved {saved.labels.name} and {saved.image.name} ({saved.structures} "
                                            f"structures) in {saved.labels.parent}"] + saved.notes)

    def start_finetune(self, name: str | None = None) -> None:
        """``name``: the field's text as the page shows it when clicked (its keystrokes may still be on their way
        to the server while it is busy, e.g. drawing the 3D view after Save)."""
        if name is not None:
            self.state.ft_name = name
        self.tuning.start(self.state.ft_name, list_pairs(self.pairs_dir))

    def stop_finetune(self) -> None:
        self.tuning.stop()

    def activate(self, force: bool = False) -> None:
        self.tuning.activate(bool(force))
