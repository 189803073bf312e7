"""What every report of adversa shares: the stylesheet, number formatting for people, the
key-value table (configuration, versions, measures), the warning box, images as PNG data URIs,
the line chart, and plain JSON values.

The HTML helpers return self-contained fragments (inline CSS and SVG, base64 PNG; no scripts,
no external assets) and escape every string they are given. Numbers are rounded for display
only (`fmt`, `pct`, `display`); `jsonable` keeps them exact for the JSON files.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

import numpy
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "CSS",
    "cards",
    "config_section",
    "display",
    "figure",
    "fmt",
    "jsonable",
    "kv_table",
    "line_chart_svg",
    "page_start",
    "pct",
    "png_data_uri",
    "run_line",
    "svg_frame",
    "warnings_block",
]

IMAGE_PX = 112  # small images are upscaled (nearest neighbour) to about this size
SERIES_COLOURS = ("#2563eb", "#16a34a", "#d97706", "#9333ea")  # line chart, series in order

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330;line-height:1.45}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 4px}h2{font-size:1.2rem;margin:28px 0 10px}
.muted{color:#667085;font-size:.9rem}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:18px 0}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:14px 18px;min-width:150px}
.card .v{font-size:1.7rem;font-weight:650}.card .k{color:#667085;font-size:.85rem}
.warn{background:#fff4e5;border:1px solid #f5b54a;border-left:6px solid #e8890c;border-radius:8px;
padding:12px 16px;margin:18px 0}.warn h2{margin:0 0 6px;color:#9a4b00}.warn li{margin:4px 0}
.ok{background:#ecfdf3;border:1px solid #8fd4a8;border-radius:8px;padding:10px 16px;margin:18px 0}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.92rem;margin-bottom:8px}
th,td{border-bottom:1px solid #e8eaee;padding:7px 10px;text-align:right}
th{background:#eef0f4;font-weight:600}th:first-child,td:first-child{text-align:left}
.kv td{text-align:left;vertical-align:top}.kv td:first-child{width:180px;color:#475467}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.ex{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:10px}
.ex figure{display:inline-block;margin:0 6px 0 0;text-align:center;font-size:.75rem;color:#667085}
.ex img{image-rendering:pixelated;display:block;border:1px solid #d0d5dd}
svg text{font-family:inherit;font-size:12px;fill:#475467}
"""


# --- numbers -------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    """A float for people, in at most 4 significant digits (`0.1`, `0.03137`, `1e-05`; the
    JSON keeps every digit); else `str(v)`."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def pct(v: float) -> str:
    """A share in [0, 1] as a percentage with one decimal: `0.9123` -> `91.2%`."""
    return f"{100 * float(v):.1f}%"


def display(v: Any) -> str:
    """A configuration value for people: floats through `fmt`, a list as `a, b, c`, a mapping
    as `k: v, k: v` (containers inside either in brackets), anything else through `str`."""
    if isinstance(v, list | tuple):
        return ", ".join(_nested(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_nested(x)}" for k, x in v.items())
    return fmt(v)


def _nested(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "[" + display(v) + "]"
    if isinstance(v, Mapping):
        return "{" + display(v) + "}"
    return fmt(v)


def jsonable(value: Any) -> Any:
    """Plain JSON values: tuples become lists, tensors and arrays lists, mapping keys strings,
    non-finite floats the strings 'inf'/'nan', anything else unknown its `str`."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor | numpy.ndarray | numpy.generic):
        return jsonable(value.tolist())
    return str(value)


# --- page parts ----------------------------------------------------------------------------


def page_start(title: str, extra_css: str = "") -> str:
    """The opening of a page up to `<main>`: doctype, charset, viewport, title, `CSS` (then
    `extra_css`)."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{CSS}{extra_css}</style></head><body><main>",
        ]
    )


def run_line(timestamp: str, seed: Any, seconds: float) -> str:
    """The muted line under a page's title: when (UTC), the seed and the wall time."""
    return (
        f'<div class="muted">{escape(timestamp)} UTC · seed {escape(str(seed))} · '
        f"{seconds:.1f} s in total</div>"
    )


def cards(items: Iterable[tuple[str, str]]) -> str:
    """Headline numbers as cards, from (caption, value) pairs."""
    body = "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>'
        for k, v in items
    )
    return f'<div class="cards">{body}</div>'


def warnings_block(warnings: Sequence[str], ok: str = "No sanity check raised a warning.") -> str:
    """The warning box listing `warnings`; without warnings the green `ok` line ("" for none)."""
    if not warnings:
        return f'<div class="ok">{escape(ok)}</div>' if ok else ""
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return f'<div class="warn"><h2>⚠ {len(warnings)} warning(s)</h2><ul>{items}</ul></div>'


def kv_table(mapping: Mapping[str, Any]) -> str:
    """A two-column key-value table, each value rounded for people by `display`."""
    rows = "".join(
        f"<tr><td>{escape(str(k))}</td><td><code>{escape(display(v))}</code></td></tr>"
        for k, v in mapping.items()
    )
    return f'<table class="kv">{rows}</table>'


def config_section(config: Mapping[str, Any], versions: Mapping[str, Any]) -> str:
    """The closing sections of every report: the configuration and the versions, as tables."""
    return "<h2>Configuration</h2>" + kv_table(config) + "<h2>Versions</h2>" + kv_table(versions)


# --- images --------------------------------------------------------------------------------


def png_data_uri(image: Tensor) -> str:
    """`data:image/png;base64,...` of an image tensor in [0, 1] (clamped), shaped (C, H, W),
    (H, W) or (D,) (shown as the largest square), small images upscaled to about `IMAGE_PX`."""
    if image.dim() == 1:
        side = int(image.numel() ** 0.5)
        image = image[: side * side].reshape(side, side)
    if image.dim() == 3:
        image = image.permute(1, 2, 0) if image.shape[0] in (1, 3) else image[0]
        if image.dim() == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pil = Image.fromarray(array, mode="RGB" if array.ndim == 3 else "L")
    factor = max(1, IMAGE_PX // max(pil.size))
    pil = pil.resize((pil.width * factor, pil.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure(image: Tensor, label: str) -> str:
    """An image (in [0, 1], see `png_data_uri`) with its caption, for a gallery card."""
    return (
        f'<figure><img alt="{escape(label)}" src="{png_data_uri(image)}">{escape(label)}</figure>'
    )


# --- charts --------------------------------------------------------------------------------


def svg_frame(width: int, height: int, label: str, body: str) -> str:
    """An inline SVG of the given size on a white background, `label` its accessible name."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f'<rect width="{width}" height="{height}" fill="#fff"/>{body}</svg>'
    )


def line_chart_svg(
    points: Sequence[tuple[float, float]],
    x_label: str,
    *,
    x_name: str = "eps",
    label: str = "robust accuracy versus eps",
    width: int = 560,
    height: int = 300,
    name: str = "",
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]] = (),
) -> str:
    """A share in [0, 1] (y, gridded at quarters) against x >= 0 as an inline SVG line chart,
    one dot per point (its tooltip `x_name=x: y`) and an x tick at each point. `series` adds
    further (name, points) lines, dashed in other colours, with a legend naming `name` (the
    first line's) and theirs."""
    left, right, top, bottom = 56, 16, 14, 40
    every = [*points, *(p for _, more in series for p in more)]
    max_x = max(x for x, _ in every) or 1.0

    def sx(x: float) -> float:
        return left + (width - left - right) * x / max_x

    def sy(y: float) -> float:
        return top + (height - top - bottom) * (1 - y)

    grid = []
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = sy(tick)
        grid.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
            f'stroke="#e3e6ea"/><text x="{left - 8}" y="{y + 4:.1f}" '
            f'text-anchor="end">{tick:.0%}</text>'
        )
    for x in sorted({x for x, _ in every}):
        grid.append(
            f'<text x="{sx(x):.1f}" y="{height - bottom + 18}" text-anchor="middle">'
            f"{escape(fmt(x))}</text>"
        )
    lines, legend = [], []
    for k, (title, pts) in enumerate([(name, points), *series]):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        dash = ' stroke-dasharray="6 4"' if k else ""
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        prefix = f"{title}, " if title else ""
        dots = "".join(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{3 if k else 4}" fill="{colour}">'
            f"<title>{escape(prefix + x_name)}={escape(fmt(x))}: {pct(y)}</title></circle>"
            for x, y in pts
        )
        lines.append(
            f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            + dots
        )
        if series:  # below the chart, one row per line, so it never covers the data
            y = height + 18 * k + 8
            legend.append(
                f'<line x1="{left}" y1="{y - 4}" x2="{left + 24}" '
                f'y2="{y - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
                f'<text x="{left + 30}" y="{y}">{escape(title)}</text>'
            )
    body = (
        f"{''.join(grid)}"
        f'<line x1="{left}" y1="{sy(0):.1f}" x2="{width - right}" y2="{sy(0):.1f}" '
        f'stroke="#98a2b3"/>{"".join(lines)}{"".join(legend)}'
        f'<text x="{(left + width - right) / 2:.0f}" '
        f'y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>'
    )
    legend_rows = 18 * (len(series) + 1) if series else 0
    return svg_frame(width, height + legend_rows, label, body)
