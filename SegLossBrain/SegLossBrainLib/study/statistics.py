"""The numbers a loss study reports beyond plain means: convergence of a run, spread over seeds, and how sure a
ranking is (paired differences across images and seeds).

* **Converged** (the study's rule): a run counts as converged when the best held-out score among its validations
  in the last quarter of its steps (step > 3/4 of the run's steps) is within ``TOLERANCE`` (0.005 Dice) of its
  best score overall, from at least ``MIN_LATE_VALIDATIONS`` validations in that quarter. An unfinished run is
  not judged.
* **Flat**: the rule alone also passes a curve that still rises to its last step (its best is in the last
  quarter), so the report says besides whether the last quarter gained less than ``TOLERANCE`` over the best
  score before it.
* **Paired differences**: two arms (at one learning rate) are compared on the same units, a unit being one image
  scored by the run of one seed (the held-out synthetic images and the real scans are the same for every run).
  The difference is the per-unit difference of mean Dice; reported as its mean ± standard error over the units
  and as wins (units where the first arm scored higher) out of the units.
"""
from __future__ import annotations

import math

import numpy as np

TOLERANCE = 0.005
MIN_LATE_VALIDATIONS = 2


def convergence(curve, total_steps: int, tolerance: float = TOLERANCE) -> dict:
    """``curve``: [(step, held-out score)] of one run. {"converged": True | False | None (unfinished or no
    validation), "flat": True | False | None, "best": best score, "best_step", "best_last_quarter": best score
    after 3/4 of the steps, "gain_last_quarter": best score overall minus best score up to 3/4 of the steps,
    "late_validations": validations after 3/4 of the steps}."""
    points = [(int(s), float(v)) for s, v in curve if v is not None and math.isfinite(v)]
    if not points or max(s for s, _ in points) < total_steps:
        return {"converged": None, "flat": None, "best": max((v for _, v in points), default=float("nan")),
                "best_step": None, "best_last_quarter": float("nan"), "gain_last_quarter": float("nan"),
                "late_validations": 0}
    best_step, best = max(points, key=lambda p: (p[1], -p[0]))
    last = [v for s, v in points if s > 0.75 * total_steps]
    before = [v for s, v in points if s <= 0.75 * total_steps]
    best_last = max(last) if last else float("nan")
    gain = best - max(before) if before else float("nan")
    return {"converged": len(last) >= MIN_LATE_VALIDATIONS and best_last >= best - tolerance,
            "flat": gain <= tolerance if before else None, "best": best, "best_step": best_step,
            "best_last_quarter": best_last, "gain_last_quarter": gain, "late_validations": len(last)}


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of the finite values; sd is NaN for fewer than 2."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def paired_difference(first: dict, second: dict) -> dict:
    """``first``, ``second``: {unit: score}. Over the units both scored (finite): {"n", "mean" (first - second),
    "se" (sd / sqrt n, NaN for n < 2), "wins" (first higher), "losses" (second higher)}."""
    units = [u for u in first if u in second and math.isfinite(first[u]) and math.isfinite(second[u])]
    differences = np.array([first[u] - second[u] for u in units], dtype=float)
    n = len(differences)
    return {"n": n, "mean": float(differences.mean()) if n else float("nan"),
            "se": float(differences.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            "wins": int((differences > 0).sum()), "losses": int((differences < 0).sum())}


def ranking(scores: dict) -> list[dict]:
    """``scores``: {arm: {unit: score}}. Arms by mean score, best first, each with its mean ± s.e. over its units,
    the paired difference to the arm ranked next below it (``to_next``) and to the best arm (``to_best``)."""
    means = {arm: mean_sd(units.values()) for arm, units in scores.items() if units}
    order = sorted(means, key=lambda arm: -means[arm][0] if math.isfinite(means[arm][0]) else math.inf)
    rows = []
    for position, arm in enumerate(order):
        mean, sd = means[arm]
        n = sum(1 for v in scores[arm].values() if math.isfinite(v))
        rows.append({"rank": position + 1, "arm": arm, "mean": mean, "n": n,
                     "se": sd / math.sqrt(n) if n > 1 else float("nan"),
                     "to_next": paired_difference(scores[arm], scores[order[position + 1]])
                     if position + 1 < len(order) else None,
                     "to_best": paired_difference(scores[arm], scores[order[0]]) if position else None})
    return rows


def unit_scores(evaluations: dict, runs, set_name: str) -> dict:
    """{(case, seed): mean Dice} of the runs ``runs`` [(run id, seed)] of one arm and rate, on one set."""
    scores = {}
    for rid, seed in runs:
        for case, result in ((evaluations.get(rid) or {}).get(set_name) or {}).items():
            value = result.get("mean")
            scores[(case, seed)] = float("nan") if value is None else float(value)
    return scores


def format_difference(difference: dict | None) -> str:
    """``+0.012 ± 0.004 (9/12)``: mean ± s.e. (wins out of units); "–" when there is nothing to compare."""
    if not difference or not difference["n"]:
        return "–"
    se = "" if math.isnan(difference["se"]) else f" ± {difference['se']:.3f}"
    return f"{difference['mean']:+.3f}{se} ({difference['wins']}/{difference['n']})"
