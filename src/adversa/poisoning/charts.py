"""Inline SVG charts of the poisoning reports: a histogram of detector scores per group
(poisoned against clean, triggered against clean) and the ROC curve of a score. Both are
self-contained fragments built on `adversa.render.svg_frame`; every string is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import torch
from torch import Tensor

from adversa.render import SERIES_COLOURS, fmt, svg_frame

__all__ = ["histogram_svg", "roc_points", "roc_svg"]


def histogram_svg(
    groups: Sequence[tuple[str, Sequence[float]]],
    x_label: str,
    *,
    bins: int = 30,
    width: int = 560,
    height: int = 260,
) -> str:
    """Overlaid histograms, one per (name, values) group, on shared bins; each group's bars
    are its share of its own members, so a few poisons stay visible beside many clean
    samples."""
    groups = [(name, torch.as_tensor(values, dtype=torch.float64)) for name, values in groups]
    groups = [(name, v[torch.isfinite(v)]) for name, v in groups if v.numel()]
    if not groups:
        return ""
    every = torch.cat([v for _, v in groups])
    lo, hi = float(every.min()), float(every.max())
    hi = hi if hi > lo else lo + 1.0
    shares = [torch.histc(v, bins, lo, hi) / max(v.numel(), 1) for _, v in groups]
    top = max(float(s.max()) for s in shares) or 1.0
    left, right, top_px, bottom = 48, 16, 14, 40
    plot_w, plot_h = width - left - right, height - top_px - bottom
    bar_w = plot_w / bins
    parts = []
    for k, ((name, values), share) in enumerate(zip(groups, shares, strict=True)):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        for b, value in enumerate(share.tolist()):
            if value <= 0:
                continue
            h = plot_h * value / top
            parts.append(
                f'<rect x="{left + b * bar_w:.1f}" y="{top_px + plot_h - h:.1f}" '
                f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" fill="{colour}" '
                f'fill-opacity="0.55"><title>{escape(name)}: {100 * value:.1f}%</title></rect>'
            )
        y = top_px + 12 + 18 * k
        parts.append(
            f'<rect x="{width - right - 170}" y="{y - 10}" width="12" height="12" '
            f'fill="{colour}" fill-opacity="0.55"/><text x="{width - right - 152}" y="{y}">'
            f"{escape(name)} ({values.numel():,})</text>"
        )
    axis_y = top_px + plot_h
    parts.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#98a2b3"/>'
    )
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        parts.append(
            f'<text x="{left + plot_w * frac:.1f}" y="{axis_y + 16}" text-anchor="{anchor}">'
            f"{escape(fmt(round(lo + (hi - lo) * frac, 2)))}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{top_px + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top_px + plot_h / 2:.0f})">share of group</text>'
    )
    return svg_frame(width, height, f"histogram of {x_label}", "".join(parts))


def roc_points(
    scores: Tensor, positive: Tensor, max_points: int = 300
) -> list[tuple[float, float]]:
    """(false-positive rate, true-positive rate) as the threshold falls past each distinct
    score (ties move together), from (0, 0) to (1, 1), thinned to about `max_points`."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    positive = torch.as_tensor(positive).bool().flatten()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return []
    order = torch.argsort(scores, descending=True)
    tp = torch.cumsum(positive[order].double(), 0)
    fp = torch.cumsum((~positive[order]).double(), 0)
    ordered = scores[order]
    last = torch.ones_like(ordered, dtype=torch.bool)
    last[:-1] = ordered[1:] != ordered[:-1]  # the last member of each run of tied scores
    fpr, tpr = (fp[last] / n_neg), (tp[last] / n_pos)
    step = max(1, len(fpr) // max_points)
    keep = torch.zeros(len(fpr), dtype=torch.bool)
    keep[::step] = True
    keep[-1] = True
    return [(0.0, 0.0), *zip(fpr[keep].tolist(), tpr[keep].tolist(), strict=True)]


def roc_svg(points: Sequence[tuple[float, float]], auc: float, *, size: int = 300) -> str:
    """The ROC curve of `roc_points` with the chance diagonal, captioned with its AUC."""
    if not points:
        return ""
    pad = 44
    side = size - pad - 12
    height = side + 52

    def sx(x: float) -> float:
        return pad + side * x

    def sy(y: float) -> float:
        return 12 + side * (1 - y)

    grid = []
    for tick in (0.0, 0.5, 1.0):
        grid.append(
            f'<text x="{sx(tick):.1f}" y="{12 + side + 16}" text-anchor="middle">{tick:g}</text>'
            f'<text x="{pad - 6}" y="{sy(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>'
        )
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    body = (
        f'<rect x="{pad}" y="12" width="{side}" height="{side}" fill="none" stroke="#e3e6ea"/>'
        f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" stroke="#98a2b3" '
        f'stroke-dasharray="4 4"/><polyline points="{line}" fill="none" '
        f'stroke="{SERIES_COLOURS[0]}" stroke-width="2"/>{"".join(grid)}'
        f'<text x="{sx(0.5):.0f}" y="{12 + side + 34}" text-anchor="middle">'
        f"false-positive rate (AUC {auc:.3f})</text>"
        f'<text x="12" y="{sy(0.5):.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {sy(0.5):.0f})">true-positive rate</text>'
    )
    return svg_frame(size, height, f"ROC curve, AUC {auc:.3f}", body)
