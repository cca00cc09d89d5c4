"""Training curves as a PNG: loss (moving average) and validation Dice against step."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..imageio.atomic import atomic_path


def read_log(log_path: str | Path) -> list[dict]:
    records = []
    for line in Path(log_path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill mid-write: skip it
            continue
    return records


def pyplot():
    """matplotlib.pyplot drawing off-screen (matplotlib is the optional 'plots' extra: ImportError without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG, atomically, and close it."""
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=90, format="png")
    finally:
        pyplot().close(figure)
    return Path(path)


def plot_curves(log_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Write the loss and validation-Dice curves of a training log. Needs matplotlib (the 'plots' extra)."""
    plt = pyplot()
    records = read_log(log_path)
    steps = np.array([r["step"] for r in records])
    losses = np.array([r["loss"] for r in records])
    window = max(1, min(200, len(losses) // 20))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid") if len(losses) else losses
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, losses, color="0.8", linewidth=0.5, label="loss")
    left.plot(steps[window - 1:], smooth, color="C0", label=f"moving average ({window})")
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    left.legend()
    validations = [r for r in records if "validation" in r]
    if validations:
        v_steps = [r["step"] for r in validations]
        right.plot(v_steps, [r["validation"].get("synthetic_mean", np.nan) for r in validations], "o-",
                   label="held-out synthetic (mean of 17)")
        cases = sorted({case for r in validations for case in r["validation"].get("real", {})})
        for case in cases:
            right.plot(v_steps, [r["validation"].get("real", {}).get(case, {}).get("mean", np.nan) for r in validations],
                       "s--", label=f"real {case} (mean of 17)")
        right.set_ylim(0, 1)
        right.set_xlabel("step")
        right.set_ylabel("Dice")
        right.axhline(0.8, color="0.6", linewidth=0.8, linestyle=":")
        right.legend(loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    return save_png(figure, png_path)
