"""The validation curve of a running fine-tune as a small SVG plot: mean validation Dice against the step, one
circle per validation the fine-tune reported (step 0 is the base model), joined by a line, with the axes' ranges
written at their ends. Plain Python (no plotting library): the page shows the string as it is.
"""
from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 360, 150
LEFT, RIGHT, TOP, BOTTOM = 42, 10, 10, 28  # margins for the axes' labels
LINE, POINT = "#64b5f6", "#bbdefb"


def plot_points(points: list[dict]) -> list[tuple[float, float, dict]]:
    """(x, y, point) in SVG pixels for the points with a mean Dice; y grows downwards, higher Dice is higher."""
    known = [p for p in points if p.get("mean") is not None]
    if not known:
        return []
    steps = [p["step"] for p in known]
    means = [p["mean"] for p in known]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    low, high = min(means), max(means)
    pad = max((high - low) * 0.1, 0.01)
    low, high = max(0.0, low - pad), min(1.0, high + pad)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    return [(LEFT + (p["step"] - s0) / (s1 - s0) * plot_w, TOP + (high - p["mean"]) / (high - low) * plot_h, p)
            for p in known]


def validation_curve_svg(points: list[dict]) -> str:
    """The plot, or "" when no validation has a mean Dice yet."""
    placed = plot_points(points)
    if not placed:
        return ""
    means = [p["mean"] for _, _, p in placed]
    steps = [p["step"] for _, _, p in placed]
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    # the axes' ends as placed: the y range is padded, so label the highest and lowest points themselves
    top_y, low_y = min(y for _, y, _ in placed), max(y for _, y, _ in placed)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-size="10" fill="#ccc" role="img" '
             f'aria-label="validation Dice by step">',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#888"/>',
             f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#888"/>',
             f'<text x="{LEFT - 4}" y="{top_y + 3:.1f}" text-anchor="end">{max(means):.3f}</text>',
             f'<text x="{LEFT - 4}" y="{low_y + 3:.1f}" text-anchor="end">{min(means):.3f}</text>'
             if low_y - top_y > 10 else "",
             f'<text x="{LEFT}" y="{bottom + 12}" text-anchor="middle">{min(steps)}</text>',
             f'<text x="{right}" y="{bottom + 12}" text-anchor="end">{max(steps)}</text>',
             f'<text x="{(LEFT + right) / 2}" y="{HEIGHT - 3}" text-anchor="middle">step (validation Dice, mean)'
             '</text>']
    if len(placed) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in placed)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{LINE}" stroke-width="2"/>')
    for x, y, p in placed:
        step, mean = p["step"], p["mean"]
        title = escape(f"step {step}: Dice {mean:.3f}")
        parts.append(f'<circle class="validation-point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{POINT}" '
                     f'data-step="{step}" data-dice="{mean:.4f}"><title>{title}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)
