"""The figures of a loss study (``report.py`` calls them): validation curves (the paper's Fig. 3), Dice per
structure by size, and the learning-rate sensitivity of each loss (Sudre et al.'s figure). Runs of one arm and
learning rate are drawn as one line, the mean over seeds, with the range over seeds shaded or as error bars."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..training.plots import pyplot, read_log, save_png
from .settings import StudySettings, format_lr, planned_runs
from .statistics import mean_sd

STYLES = ["-", "--", ":", "-."]
SETS = (("synthetic", "held-out synthetic maps"), ("real", "real dev scans"))


def validation_series(run_dir: Path) -> tuple[list, list, list]:
    """(steps, held-out synthetic mean Dice, real mean Dice) of every validation in a run's log."""
    log = run_dir / "log.jsonl"
    records = {r["step"]: r for r in read_log(log) if "validation" in r} if log.is_file() else {}
    steps = sorted(records)
    synthetic = [records[s]["validation"].get("synthetic_mean", float("nan")) for s in steps]
    real = [records[s]["validation"].get("real_mean", float("nan")) for s in steps]
    return steps, synthetic, real


def groups(settings: StudySettings) -> dict:
    """{(arm, lr): [(run id, seed)]} in table order."""
    found = {}
    for rid, arm, lr, seed in sorted(planned_runs(settings), key=lambda r: (settings.arms.index(r[1]),
                                                                             settings.learning_rates.index(r[2]))):
        found.setdefault((arm, lr), []).append((rid, seed))
    return found


def group_label(arm: str, lr: float, manifest: dict) -> str:
    loss = f" ({manifest.get('vnet_loss')})" if arm == "vnet" else ""
    return f"{arm}{loss} lr {format_lr(lr)}"


def _style(settings: StudySettings, arm: str, lr: float) -> dict:
    return {"linestyle": STYLES[settings.learning_rates.index(lr) % len(STYLES)],
            "color": f"C{list(settings.arms).index(arm) % 10}"}


def plot_validation_curves(out: Path, settings: StudySettings, manifest: dict, title: str) -> Path:
    """Validation Dice (mean of 17) against step, mean over seeds and their range: the paper's Fig. 3."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for (arm, lr), runs in groups(settings).items():
        series = [validation_series(out / rid) for rid, _ in runs]
        steps = sorted({s for run in series for s in run[0]})
        if not steps:
            continue
        for axis, column in zip(axes, (1, 2)):
            table = np.full((len(series), len(steps)), np.nan)
            for row, run in enumerate(series):
                for step, value in zip(run[0], run[column]):
                    table[row, steps.index(step)] = value
            with warnings.catch_warnings():  # a step no seed reached yet: all-NaN columns are meant
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = np.nanmean(table, 0), np.nanmin(table, 0), np.nanmax(table, 0)
            style = _style(settings, arm, lr)
            axis.plot(steps, mean, label=group_label(arm, lr, manifest), **style)
            if len(series) > 1:
                axis.fill_between(steps, low, high, color=style["color"], alpha=0.12)
    for axis, (_, name) in zip(axes, SETS):
        axis.set_title(f"validation Dice, {name} (mean of 17; mean over seeds, range shaded)", fontsize=9)
        axis.set_xlabel("step")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[0].legend(fontsize=6, loc="lower right", ncol=2)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_png(figure, out / "validation_curves.png")


def plot_structure_dice(out: Path, settings: StudySettings, manifest: dict, per_structure, structures: dict,
                        title: str) -> Path:
    """Dice per structure (mean over seeds) by arm and rate, structures by size (largest left).
    ``per_structure(run ids, set, structure)`` -> list of Dice over seeds; ``structures``: {set: names}."""
    plt = pyplot()
    shares = manifest["structure_share"]
    figure, axes = plt.subplots(2, 1, figsize=(13, 9))
    for axis, (set_name, name) in zip(axes, SETS):
        names = structures[set_name]
        x = np.arange(len(names))
        for (arm, lr), runs in groups(settings).items():
            values = [mean_sd(per_structure([r for r, _ in runs], set_name, s))[0] for s in names]
            if all(np.isnan(values)):
                continue
            axis.plot(x, values, marker="o", markersize=3, label=group_label(arm, lr, manifest),
                      **_style(settings, arm, lr))
        axis.set_xticks(x)
        axis.set_xticklabels([f"{s}\n{100 * shares.get(s, 0):.2g} %" for s in names], rotation=60, ha="right",
                             fontsize=7)
        axis.set_ylim(0, 1)
        axis.set_ylabel("Dice")
        axis.set_title(f"{name}: structures by voxel share, largest left (mean over seeds)", fontsize=9)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=3, loc="lower left")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_png(figure, out / "structure_dice.png")


def plot_lr_sensitivity(out: Path, settings: StudySettings, manifest: dict, run_means, title: str) -> Path:
    """Mean Dice of each arm at each learning rate (mean over seeds, range as error bars): how much each loss
    depends on the learning rate (Sudre et al. 2017). ``run_means(run ids, set)`` -> list of means over seeds."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    rates = sorted(settings.learning_rates)
    for axis, (set_name, name) in zip(axes, SETS):
        for arm in settings.arms:
            runs = groups(settings)
            points = [run_means([r for r, _ in runs.get((arm, lr), [])], set_name) for lr in rates]
            means = [mean_sd(p)[0] for p in points]
            if all(np.isnan(means)):
                continue
            low = [m - min(p) if p else 0 for m, p in zip(means, points)]
            high = [max(p) - m if p else 0 for m, p in zip(means, points)]
            axis.errorbar(rates, means, yerr=[low, high], marker="o", capsize=3, color=_style(settings, arm,
                          rates[0])["color"], label=group_label(arm, rates[0], manifest).rsplit(" lr", 1)[0])
        axis.set_xscale("log")
        axis.set_xlabel("learning rate")
        axis.set_title(f"{name}: mean Dice of 17 (best weights; range over seeds)", fontsize=9)
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("Dice")
    axes[0].legend(fontsize=7, loc="lower left")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_png(figure, out / "lr_sensitivity.png")
