"""Tables and plots of a loss study (``runner.py``): results.csv, results.md, validation_curves.png,
structure_dice.png and lr_sensitivity.png, all in the study folder.

Structures are ordered by their voxel share over the training label maps, largest first, so that the
small-structure effect the paper is about reads off the bottom of each table and the right of each plot.
The 17 structures scored against aseg come first; CSF and optic chiasm are listed apart (aseg's CSF is not
the structure the training maps call CSF; the chiasm is not scored either). Every number is at the study's
grid; runs of one arm and rate are summarised over seeds (mean ± standard deviation); rankings and rate
comparisons are paired over images and seeds (``statistics.py``).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..imageio.atomic import open_atomic, write_text_atomic
from ..paths import VALIDATION_SIZE
from ..preprocessing.grid_constants import NETWORK_SPACING_MM
from . import plots
from .runner import VNET, StudySettings, checkpoint_state
from .scale import smallest
from .settings import PAPER_FIELD_MM, format_lr, planned_runs
from .statistics import TOLERANCE, convergence, format_difference, mean_sd, paired_difference, ranking, unit_scores

CSV_COLUMNS = ("arm", "lr", "seed", "set", "case", "structure", "size_rank", "scored", "dice")
WHOLE_BRAIN_MM = tuple(n * NETWORK_SPACING_MM for n in VALIDATION_SIZE)
SETS = (("real", "real dev scans"), ("synthetic", "held-out synthetic maps"))


def _size(values) -> str:
    return "x".join(str(v) for v in values)


def _mm(size, spacing) -> str:
    return "x".join(f"{n * spacing:g}" for n in size) + " mm"


def budget_note(settings: StudySettings, devices: list[str], judged: dict | None = None) -> list[str]:
    """What was actually run, how many runs converged, and a plain warning when it is a shrunken setting."""
    g = settings.grid_spacing
    bn = (f"BatchNorm re-estimated on {settings.validation_bn_samples} training samples before each validation"
          if settings.validation_bn_samples else "BatchNorm running averages as trained")
    lines = [f"Setting used: {settings.steps} steps per run, patch {_size(settings.patch_size)} voxels at {g:g} mm "
             f"({_mm(settings.patch_size, g)}), batch {settings.batch_size}, {settings.lr_schedule} learning-rate "
             f"schedule{f' after {settings.warmup_steps} warm-up steps' if settings.warmup_steps else ''}, validation "
             f"grid {_size(settings.validation_size)} ({_mm(settings.validation_size, g)}), "
             f"{settings.validation_draws} image(s) per held-out map, {bn}; learning rate(s) "
             f"{', '.join(f'{lr:g}' for lr in settings.learning_rates)}, seed(s) "
             f"{', '.join(map(str, settings.seeds))}, {settings.precision}, device "
             f"{', '.join(sorted(set(devices))) or settings.device}."]
    if settings.recalibrate_bn:
        lines.append(f"Best weights scored after re-estimating BatchNorm statistics on {settings.recalibrate_bn} "
                     "fresh synthetic brains (same draw for every run); the validation curves are as trained.")
    if judged:
        late = [rid for rid, c in judged.items() if c["converged"] is False]
        done = [rid for rid, c in judged.items() if c["converged"] is not None]
        rising = [rid for rid, c in judged.items() if c["flat"] is False]
        lines.append(f"Convergence (best held-out score in the last quarter of the steps within {TOLERANCE} of the "
                     f"run's best): {len(done) - len(late)} of {len(done)} finished runs converged"
                     + (f"; not converged: {', '.join(late)}" if late else "")
                     + (f"; still rising in the last quarter (gained > {TOLERANCE}): {', '.join(rising)}" if rising
                        else "") + ".")
    if len(settings.seeds) < 2:
        lines.append("One seed: no spread over seeds, and the paired differences are over images only.")
    reasons = []
    if any(p * g < PAPER_FIELD_MM - 1e-6 for p in settings.patch_size):
        reasons.append(f"patch {_mm(settings.patch_size, g)} is smaller than the paper's whole-image "
                       f"{PAPER_FIELD_MM:g} mm")
    if any(v * g < w - 1e-6 for v, w in zip(settings.validation_size, WHOLE_BRAIN_MM)):
        reasons.append(f"validation grid {_mm(settings.validation_size, g)} is smaller than the whole brain "
                       f"({_mm(WHOLE_BRAIN_MM, 1)})")
    if reasons:
        lines.append("SHRUNKEN SETTING, not the paper's: " + "; ".join(reasons) + ". Differences between arms "
                     "measure how each loss learns at this budget, not where the losses end up.")
    if g > NETWORK_SPACING_MM + 1e-6:
        lines.append(f"COARSE GRID: {g:g} mm (the shipped network runs at {NETWORK_SPACING_MM:g} mm); the small "
                     "structures are a few voxels, more unbalanced than in the paper. Real scans are scored on "
                     "this grid (labels by nearest neighbour), not on their own.")
    return lines


def structure_order(shares: dict, table) -> tuple[list[str], list[str], dict]:
    """(17 scored structures, largest first; the ones listed apart; rank by size over all 19, 1 = largest)."""
    names = [table.names[i] for i in range(1, table.num_classes)]
    by_size = sorted(names, key=lambda n: (-shares.get(n, 0.0), table.names.index(n)))
    rank = {name: position + 1 for position, name in enumerate(by_size)}
    scored = {table.names[i] for i in table.scored_indices}
    return [n for n in by_size if n in scored], [n for n in by_size if n not in scored], rank


def result_rows(settings: StudySettings, evaluations: dict, shares: dict, table) -> list[dict]:
    _, _, rank = structure_order(shares, table)
    scored = {table.names[i] for i in table.scored_indices}
    rows = []
    for rid, arm, lr, seed in planned_runs(settings):
        for set_name, _ in SETS:
            for case, result in (evaluations.get(rid) or {}).get(set_name, {}).items():
                for structure, dice in result["dice"].items():
                    rows.append({"arm": arm, "lr": f"{lr:g}", "seed": seed, "set": set_name, "case": case,
                                 "structure": structure, "size_rank": rank[structure],
                                 "scored": int(structure in scored),
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


def _cell(value: float, sd: float = float("nan")) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.3f}" if math.isnan(sd) else f"{value:.3f} ± {sd:.3f}"


class Scores:
    """Per-run scores read from the evaluations: mean over a set's cases, per structure or of the 17."""

    def __init__(self, evaluations: dict, scored: list[str]):
        self.evaluations, self.scored = evaluations, scored

    def structure(self, rids, set_name: str, structure: str) -> list[float]:
        cases = [(self.evaluations.get(r) or {}).get(set_name) or {} for r in rids]
        return [_mean([c["dice"].get(structure, float("nan")) for c in per.values()]) for per in cases if per]

    def mean17(self, rids, set_name: str) -> list[float]:
        cases = [(self.evaluations.get(r) or {}).get(set_name) or {} for r in rids]
        return [_mean([c["mean"] for c in per.values()]) for per in cases if per]


def _runs_table(out, settings, manifest, evaluations, judged) -> list[str]:
    lines = ["## Runs", "", "| run | network | loss | lr | seed | steps | status | best step | converged "
             f"(best of the last quarter within {TOLERANCE} of the best; gain in the last quarter) | held-out synthetic Dice (mean of 17) | real Dice (mean of 17) | "
             "wall time |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for rid, arm, lr, seed in planned_runs(settings):
        record = manifest.get("runs", {}).get(rid, {})
        state = checkpoint_state(Path(out) / rid) or {}
        evaluation = evaluations.get(rid) or {}
        params = ", ".join(f"{k} {v:g}" for k, v in record.get("loss_params", {}).items())
        c = judged.get(rid, {})
        verdict = "–" if c.get("converged") is None else (
            f"{'yes' if c['converged'] else 'no'} ({c['late_validations']} validations: best "
            f"{c['best_last_quarter']:.3f} vs {c['best']:.3f}; gained {c['gain_last_quarter']:+.3f}"
            f"{'' if c['flat'] is not False else ', still rising'})")
        lines.append(f"| {rid} | {record.get('architecture', '–')} | {record.get('loss', '–')}"
                     f"{f' ({params})' if params else ''} | {lr:g} | {seed} | {state.get('step', 0)}/{settings.steps} "
                     f"| {record.get('status', 'not started')} | {evaluation.get('best_step', '–')} | {verdict} | "
                     f"{_cell(_mean([c['mean'] for c in evaluation.get('synthetic', {}).values()]))} | "
                     f"{_cell(_mean([c['mean'] for c in evaluation.get('real', {}).values()]))} | "
                     f"{_cell(state.get('elapsed', float('nan')) / 3600)} h |")
    late = [rid for rid, c in judged.items() if c["converged"] is False]
    rising = [rid for rid, c in judged.items() if c["flat"] is False]
    lines += ["", f"Runs that did not converge: {', '.join(late)}." if late else
              "Every finished run converged." if judged else "No run has finished yet."]
    if rising:
        lines.append(f"\nStill rising (gained more than {TOLERANCE} in the last quarter): {', '.join(rising)}.")
    if VNET in settings.arms:
        lines += ["", f"V-Net loss (best Wong arm by held-out synthetic Dice): {manifest.get('vnet_loss') or 'not chosen yet'}."]
    return lines


def _scale_table(manifest: dict, settings, scored, apart, rank) -> list[str]:
    counts = manifest.get("structure_voxels")
    if not counts:
        return []
    lines = ["", f"## Voxels per structure at {settings.grid_spacing:g} mm (fewest over the images)", "",
             "| structure | size rank | held-out synthetic | real |", "|---|---|---|---|"]
    for name in sorted(scored + apart, key=rank.get):
        cells = [min((per.get(name, 0) for per in counts.get(s, {}).values()), default=None) for s in ("synthetic", "real")]
        lines.append(f"| {name} | {rank[name]} | " + " | ".join("–" if c is None else str(c) for c in cells) + " |")
    for set_name in ("synthetic", "real"):
        found = smallest(counts.get(set_name, {}), set(scored) if set_name == "real" else None)
        if found:
            lines.append(f"\nSmallest, {set_name}: {found[0]}, {found[1]} voxels ({found[2]}).")
    return lines


def markdown(out: Path, settings: StudySettings, manifest: dict, evaluations: dict, table, note: list[str],
             judged: dict) -> str:
    scored, apart, rank = structure_order(manifest["structure_share"], table)
    shares = manifest["structure_share"]
    scores = Scores(evaluations, scored)
    groups = plots.groups(settings)
    lines = ["# Loss study results", "", *[f"> {line}" for line in note], "",
             *_runs_table(out, settings, manifest, evaluations, judged),
             *_scale_table(manifest, settings, scored, apart, rank)]
    for set_name, title in SETS:
        cases = sorted({c for e in evaluations.values() if e for c in e.get(set_name, {})})
        if not cases:
            continue
        lines += ["", f"## Dice per structure, {title} ({', '.join(cases)}; mean over them)", "",
                  "Structures by voxel share of the training maps, largest first; mean ± standard deviation over "
                  "seeds."]
        for lr in settings.learning_rates:
            present = [(arm, [r for r, _ in runs]) for (arm, rate), runs in groups.items()
                       if rate == lr and scores.mean17([r for r, _ in runs], set_name)]
            if not present:
                continue
            labels = [plots.group_label(arm, lr, manifest) for arm, _ in present]
            lines += ["", f"### learning rate {format_lr(lr)}", "",
                      "| structure | share % | size rank | " + " | ".join(labels) + " |",
                      "|---|---|---|" + "---|" * len(present)]
            def row(name: str, prefix: str = "") -> str:
                return (f"| {prefix}{name} | {100 * shares.get(name, 0):.3f} | {rank[name]} | " + " | ".join(
                    _cell(*mean_sd(scores.structure(rids, set_name, name))) for _, rids in present) + " |")

            lines += [row(name) for name in scored]
            lines.append("| **mean of the 17** | | | " + " | ".join(
                f"**{_cell(*mean_sd(scores.mean17(rids, set_name)))}**" for _, rids in present) + " |")
            lines += [row(name, "apart: ") for name in apart]
            lines += ["", f"Ranking at learning rate {format_lr(lr)}, {title}: mean Dice of 17 over images × seeds "
                          "(± s.e.); differences paired over the same images and seeds, ± s.e. (wins/units).", "",
                      "| rank | arm | mean Dice | vs the next below | vs the best |", "|---|---|---|---|---|"]
            ranked = ranking({arm: unit_scores(evaluations, groups[(arm, lr)], set_name) for arm, _ in present})
            lines += [f"| {r['rank']} | {plots.group_label(r['arm'], lr, manifest)} | {_cell(r['mean'], r['se'])} "
                      f"(n {r['n']}) | {format_difference(r['to_next'])} | {format_difference(r['to_best'])} |"
                      for r in ranked]
    lines += _lr_sensitivity(settings, manifest, evaluations, groups)
    if any((e or {}).get("real") for e in evaluations.values()):
        lines += ["", "CSF against aseg means nothing (aseg labels almost no CSF); optic chiasm is not scored."]
    return "\n".join(lines) + "\n"


def _lr_sensitivity(settings, manifest, evaluations, groups) -> list[str]:
    if len(settings.learning_rates) < 2:
        return []
    first, *others = settings.learning_rates
    lines = ["", "## Learning-rate sensitivity (Sudre et al. 2017)", "",
             f"Mean Dice of 17 at each rate (mean over images × seeds); the change from {format_lr(first)} paired "
             "over images and seeds, ± s.e. (units where the other rate scored higher / units)."]
    for set_name, title in SETS:
        units = {(arm, lr): unit_scores(evaluations, runs, set_name) for (arm, lr), runs in groups.items()}
        if not any(units.values()):
            continue
        lines += ["", f"### {title}", "", "| arm | " + " | ".join(f"lr {format_lr(lr)}" for lr in settings.learning_rates)
                  + " | " + " | ".join(f"{format_lr(lr)} − {format_lr(first)}" for lr in others) + " |",
                  "|---|" + "---|" * (2 * len(settings.learning_rates) - 1)]
        for arm in settings.arms:
            means = [_cell(mean_sd(units.get((arm, lr), {}).values())[0]) for lr in settings.learning_rates]
            changes = [format_difference(paired_difference(units.get((arm, lr), {}), units.get((arm, first), {})))
                       for lr in others]
            lines.append(f"| {plots.group_label(arm, first, manifest).rsplit(' lr', 1)[0]} | " + " | ".join(means + changes) + " |")
    return lines


def judge_runs(out: Path, settings: StudySettings) -> dict:
    """{run id: convergence(...)} for every planned run with a log."""
    judged = {}
    for rid, *_ in planned_runs(settings):
        steps, synthetic, _ = plots.validation_series(Path(out) / rid)
        if steps:
            judged[rid] = convergence(list(zip(steps, synthetic)), settings.steps)
    return judged


def write_report(out, settings: StudySettings, manifest: dict, evaluations: dict) -> dict:
    """Write results.csv, results.md and the plots; returns {"files": [...], "note": [...]}."""
    from ..labels import load_label_table

    out = Path(out)
    table = load_label_table()
    devices = [r["device"] for r in manifest.get("runs", {}).values() if r.get("device")]
    judged = judge_runs(out, settings)
    note = budget_note(settings, devices, judged)
    rows = result_rows(settings, evaluations, manifest["structure_share"], table)
    files = [write_csv(rows, out / "results.csv")]
    files.append(write_text_atomic(out / "results.md", markdown(out, settings, manifest, evaluations, table, note,
                                                                judged)))
    title = (f"loss study: {settings.steps} steps, patch {_size(settings.patch_size)} at {settings.grid_spacing:g} mm, "
             f"seeds {','.join(map(str, settings.seeds))}"
             + (" (SHRUNKEN SETTING, not the paper's)" if any("SHRUNKEN" in line for line in note) else ""))
    scored, apart, _ = structure_order(manifest["structure_share"], table)
    scores = Scores(evaluations, scored)
    by_size = sorted(scored + apart, key=lambda n: -manifest["structure_share"].get(n, 0.0))
    try:
        files.append(plots.plot_validation_curves(out, settings, manifest, title))
        files.append(plots.plot_structure_dice(out, settings, manifest, scores.structure,
                                               {"synthetic": by_size, "real": scored}, title))
        if len(settings.learning_rates) > 1:
            files.append(plots.plot_lr_sensitivity(out, settings, manifest, scores.mean17, title))
    except ImportError:  # matplotlib is optional (the 'plots' extra)
        note.append("matplotlib is not installed: no plots (pip install 'seglossbrain[plots]')")
    return {"files": [str(f) for f in files], "note": note}


def report_study(out, settings: StudySettings, manifest: dict, on_event=None) -> dict:
    """Evaluate every run's best weights (cached) and write the report files."""
    from .runner import evaluate_runs

    evaluations = evaluate_runs(out, settings, manifest, on_event)
    return write_report(out, settings, manifest, evaluations)
