"""Tables and plots of a loss study (``runner.py``): results.csv, results.md, validation_curves.png,
structure_dice.png, all in the study folder.

Structures are ordered by their voxel share over the training label maps, largest first, so that the
small-structure effect the paper is about reads off the bottom of each table and the right of each plot.
The 17 structures scored against aseg come first; CSF and optic chiasm are listed apart (aseg's CSF is not
the structure the training maps call CSF; the chiasm is not scored either).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..imageio.atomic import open_atomic, write_text_atomic
from ..paths import VALIDATION_SIZE
from ..training.plots import pyplot, read_log, save_png
from .runner import VNET, StudySettings, checkpoint_state, run_id

CSV_COLUMNS = ("arm", "lr", "set", "case", "structure", "size_rank", "scored", "dice")
FULL_PATCH = (128, 128, 128)  # the paper trained on whole images of this size
FULL_STEPS = 10000  # the project's full schedule (``seglossbrain train``'s default)
FULL_VALIDATION = VALIDATION_SIZE  # the whole brain at 1.5 mm
SETS = (("real", "real dev scans"), ("synthetic", "held-out synthetic maps"))


def _size(values) -> str:
    return "x".join(str(v) for v in values)


def budget_note(settings: StudySettings, devices: list[str]) -> list[str]:
    """What was actually run, and a plain warning when it is a shrunken setting."""
    lines = [f"Setting used: {settings.steps} steps per run, patch {_size(settings.patch_size)} voxels at 1.5 mm, "
             f"batch 1, validation grid {_size(settings.validation_size)}, learning rate(s) "
             f"{', '.join(f'{lr:g}' for lr in settings.learning_rates)}, seed {settings.seed}, "
             f"{settings.precision}, device {', '.join(sorted(set(devices))) or settings.device}."]
    reasons = []
    if any(p < f for p, f in zip(settings.patch_size, FULL_PATCH)):
        reasons.append(f"patch {_size(settings.patch_size)} is smaller than the paper's whole-image "
                       f"{_size(FULL_PATCH)}")
    if settings.steps < FULL_STEPS:
        reasons.append(f"{settings.steps} steps is fewer than the full schedule's {FULL_STEPS}")
    if any(v < f for v, f in zip(settings.validation_size, FULL_VALIDATION)):
        reasons.append(f"validation grid {_size(settings.validation_size)} is smaller than the whole brain "
                       f"({_size(FULL_VALIDATION)})")
    if settings.recalibrate_bn:
        lines.append(f"Best weights scored after re-estimating BatchNorm statistics on {settings.recalibrate_bn} "
                     "fresh synthetic brains (same draw for every run); the validation curves are as trained.")
    if reasons:
        lines.append("SHRUNKEN SETTING, not the paper's: " + "; ".join(reasons) + ". The networks are far from "
                     "converged and each arm ran once (one seed): differences between arms measure how fast each "
                     "loss learns at this budget, not where the losses end up.")
    return lines


def structure_order(shares: dict, table) -> tuple[list[str], list[str], dict]:
    """(17 scored structures, largest first; the ones listed apart; rank by size over all 19, 1 = largest)."""
    names = [table.names[i] for i in range(1, table.num_classes)]
    by_size = sorted(names, key=lambda n: (-shares.get(n, 0.0), table.names.index(n)))
    rank = {name: position + 1 for position, name in enumerate(by_size)}
    scored = {table.names[i] for i in table.scored_indices}
    return [n for n in by_size if n in scored], [n for n in by_size if n not in scored], rank


def planned_runs(settings: StudySettings) -> list[tuple[str, str, float]]:
    """(run id, arm, lr) in table order."""
    return [(run_id(arm, lr, settings), arm, lr) for arm in settings.arms for lr in settings.learning_rates]


def result_rows(settings: StudySettings, evaluations: dict, shares: dict, table) -> list[dict]:
    _, _, rank = structure_order(shares, table)
    scored = {table.names[i] for i in table.scored_indices}
    rows = []
    for rid, arm, lr in planned_runs(settings):
        evaluation = evaluations.get(rid)
        if not evaluation:
            continue
        for set_name, _ in SETS:
            for case, result in evaluation.get(set_name, {}).items():
                for structure, dice in result["dice"].items():
                    rows.append({"arm": arm, "lr": f"{lr:g}", "set": set_name, "case": case, "structure": structure,
                                 "size_rank": rank[structure], "scored": int(structure in scored),
                                 "dice": "" if dice is None or math.isnan(dice) else f"{dice:.4f}"})
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    with open_atomic(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _cell(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def _per_structure(evaluation: dict | None, set_name: str, structure: str) -> float:
    cases = (evaluation or {}).get(set_name, {})
    return _mean([c["dice"].get(structure, float("nan")) for c in cases.values()])


def _label(rid: str, arm: str, manifest: dict) -> str:
    return f"{rid} ({manifest.get('vnet_loss')})" if arm == VNET else rid


def markdown(out: Path, settings: StudySettings, manifest: dict, evaluations: dict, table, note: list[str]) -> str:
    scored, apart, rank = structure_order(manifest["structure_share"], table)
    shares = manifest["structure_share"]
    runs = [r for r in planned_runs(settings) if evaluations.get(r[0])]
    lines = ["# Loss study results", "", *[f"> {line}" for line in note], "",
             "## Runs", "", "| run | network | loss | lr | steps | status | best step | held-out synthetic Dice "
             "(mean of 17) | real Dice (mean of 17) | wall time |", "|---|---|---|---|---|---|---|---|---|---|"]
    for rid, arm, lr in planned_runs(settings):
        record = manifest.get("runs", {}).get(rid, {})
        state = checkpoint_state(Path(out) / rid) or {}
        evaluation = evaluations.get(rid) or {}
        synthetic = _mean([c["mean"] for c in evaluation.get("synthetic", {}).values()])
        real = _mean([c["mean"] for c in evaluation.get("real", {}).values()])
        params = ", ".join(f"{k} {v:g}" for k, v in record.get("loss_params", {}).items())
        hours = state.get("elapsed", float("nan")) / 3600
        lines.append(f"| {rid} | {record.get('architecture', '–')} | {record.get('loss', '–')}"
                     f"{f' ({params})' if params else ''} | {lr:g} | {state.get('step', 0)}/{settings.steps} | "
                     f"{record.get('status', 'not started')} | {evaluation.get('best_step', '–')} | {_cell(synthetic)} | "
                     f"{_cell(real)} | {_cell(hours)} h |")
    if VNET in settings.arms:
        lines += ["", f"V-Net loss (best Wong arm by held-out synthetic Dice): {manifest.get('vnet_loss') or 'not chosen yet'}."]
    for set_name, title in SETS:
        cases = sorted({c for r in runs for c in evaluations[r[0]].get(set_name, {})})
        if not cases:
            continue
        lines += ["", f"## Dice per structure, {title} ({', '.join(cases)}; mean over them)", "",
                  "Structures by voxel share of the training maps, largest first.", "",
                  "| structure | share % | size rank | " + " | ".join(_label(*r[:2], manifest) for r in runs) + " |",
                  "|---|---|---|" + "---|" * len(runs)]

        def row(name: str, prefix: str = "") -> str:
            return (f"| {prefix}{name} | {100 * shares.get(name, 0):.3f} | {rank[name]} | " +
                    " | ".join(_cell(_per_structure(evaluations[r[0]], set_name, name)) for r in runs) + " |")

        lines += [row(name) for name in scored]
        lines.append("| **mean of the 17** | | | " + " | ".join(
            f"**{_cell(_mean([_per_structure(evaluations[r[0]], set_name, n) for n in scored]))}**" for r in runs) + " |")
        lines += [row(name, "apart: ") for name in apart]
        lines += ["", "| case, mean of 17 | " + " | ".join(_label(*r[:2], manifest) for r in runs) + " |",
                  "|---|" + "---|" * len(runs)]
        lines += [f"| {case} | " + " | ".join(
            _cell(evaluations[r[0]][set_name].get(case, {}).get("mean", float("nan"))) for r in runs) + " |"
            for case in cases]
    if any(evaluations[r[0]].get("real") for r in runs):
        lines += ["", "CSF against aseg means nothing (aseg labels almost no CSF); optic chiasm is not scored."]
    return "\n".join(lines) + "\n"


def _validation_series(run_dir: Path) -> tuple[list, list, list]:
    log = run_dir / "log.jsonl"
    records = {r["step"]: r for r in read_log(log) if "validation" in r} if log.is_file() else {}
    steps = sorted(records)
    synthetic = [records[s]["validation"].get("synthetic_mean", float("nan")) for s in steps]
    real = [records[s]["validation"].get("real_mean", float("nan")) for s in steps]
    return steps, synthetic, real


def plot_validation_curves(out: Path, settings: StudySettings, manifest: dict, title: str) -> Path:
    """Validation Dice (mean of 17) against step for every run: the paper's Fig. 3."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    styles = ["-", "--", ":", "-."]
    for index, (rid, arm, lr) in enumerate(planned_runs(settings)):
        steps, synthetic, real = _validation_series(out / rid)
        if not steps:
            continue
        style = styles[settings.learning_rates.index(lr) % len(styles)]
        colour = f"C{list(settings.arms).index(arm) % 10}"
        axes[0].plot(steps, synthetic, style, color=colour, marker="o", markersize=3, label=_label(rid, arm, manifest))
        axes[1].plot(steps, real, style, color=colour, marker="s", markersize=3, label=_label(rid, arm, manifest))
    for axis, name in zip(axes, ("held-out synthetic maps", "real dev scans")):
        axis.set_title(f"validation Dice, {name} (mean of 17)")
        axis.set_xlabel("step")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_png(figure, out / "validation_curves.png")


def plot_structure_dice(out: Path, settings: StudySettings, manifest: dict, evaluations: dict, table,
                        title: str) -> Path:
    """Dice per structure by run, structures sorted by size (largest left)."""
    plt = pyplot()
    shares = manifest["structure_share"]
    scored, apart, _ = structure_order(shares, table)
    everything = sorted(scored + apart, key=lambda n: -shares.get(n, 0.0))
    panels = (("synthetic", "held-out synthetic maps", everything), ("real", "real dev scans (17 scored)", scored))
    figure, axes = plt.subplots(2, 1, figsize=(13, 9))
    for axis, (set_name, name, structures) in zip(axes, panels):
        x = np.arange(len(structures))
        for rid, arm, lr in planned_runs(settings):
            evaluation = evaluations.get(rid)
            if not evaluation or not evaluation.get(set_name):
                continue
            style = ["-", "--", ":", "-."][settings.learning_rates.index(lr) % 4]
            axis.plot(x, [_per_structure(evaluation, set_name, s) for s in structures], style, marker="o",
                      markersize=4, color=f"C{list(settings.arms).index(arm) % 10}", label=_label(rid, arm, manifest))
        axis.set_xticks(x)
        axis.set_xticklabels([f"{s}\n{100 * shares.get(s, 0):.2g} %" for s in structures], rotation=60, ha="right",
                             fontsize=7)
        axis.set_ylim(0, 1)
        axis.set_ylabel("Dice")
        axis.set_title(f"{name}: structures by voxel share, largest left")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2, loc="lower left")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_png(figure, out / "structure_dice.png")


def write_report(out, settings: StudySettings, manifest: dict, evaluations: dict) -> dict:
    """Write results.csv, results.md and the two plots; returns {"files": [...], "note": [...]}."""
    from ..labels import load_label_table

    out = Path(out)
    table = load_label_table()
    devices = [r["device"] for r in manifest.get("runs", {}).values() if r.get("device")]
    note = budget_note(settings, devices)
    rows = result_rows(settings, evaluations, manifest["structure_share"], table)
    files = [write_csv(rows, out / "results.csv")]
    text = markdown(out, settings, manifest, evaluations, table, note)
    files.append(write_text_atomic(out / "results.md", text))
    title = (f"loss study: {settings.steps} steps, patch {_size(settings.patch_size)}"
             + (" (SHRUNKEN SETTING, not the paper's)" if len(note) > 1 else ""))
    try:
        files.append(plot_validation_curves(out, settings, manifest, title))
        files.append(plot_structure_dice(out, settings, manifest, evaluations, table, title))
    except ImportError:  # matplotlib is optional (the 'plots' extra)
        note.append("matplotlib is not installed: no plots (pip install 'seglossbrain[plots]')")
    return {"files": [str(f) for f in files], "note": note}


def report_study(out, settings: StudySettings, manifest: dict, on_event=None) -> dict:
    """Evaluate every run's best weights (cached) and write the report files."""
    from .runner import evaluate_runs

    evaluations = evaluate_runs(out, settings, manifest, on_event)
    return write_report(out, settings, manifest, evaluations)
