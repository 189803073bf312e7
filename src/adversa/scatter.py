"""A labelled scatter plot of two shares in [0, 1] as an inline SVG, with labels that stay
readable when points crowd.

Labels are placed greedily, one point at a time, most crowded point first (a point-feature
label placement in the spirit of Imhof, 1975, "Positioning names on maps", and the greedy
candidate-position method of Christensen, Marks & Shieber, 1995, ACM TOG 14(3)): each label
takes the first free slot among eight positions around its point (right, left, then above and
below); failing those, the free slot nearest to its point on a grid over the plot, joined to
the point by a leader line. A slot is free when the label's box lies inside the plot and
overlaps no other label, no point and the legend. Label boxes come from a width estimate per
character, and each label is drawn with that exact width (`textLength`), so the boxes the
layout computes are the boxes the browser draws. Deterministic: same input, same picture.
Cost: at most (8 + grid slots) x (labels + points) box tests per label.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from html import escape

from adversa.render import svg_frame

FONT_PX = 12.0  # the stylesheet's `svg text` size
LABEL_HEIGHT = 15.0  # ascender to descender at FONT_PX, plus a pixel of air
MAX_LABEL_CHARS = 28  # longer labels are shortened with an ellipsis (the tooltip keeps them)
GAP = 7.0  # between a point's centre and its adjacent label
GRID = 8.0  # step of the fallback slots
MARKER = 6.0  # half-side of the box a point's marker occupies
MARGINS = (56, 24, 16, 44)  # left, right, top, bottom: room for the ticks and axis titles
# Width of a character in ems: narrow, wide and upper-case glyphs; the rest is average.
_NARROW, _WIDE = set("iljtfr.,:;'|!()[]/ 1"), set("mwMW@%")


@dataclasses.dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned rectangle in SVG pixels (y grows downwards)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )

    def within(self, other: Box) -> bool:
        return (
            other.x0 <= self.x0
            and self.x1 <= other.x1
            and other.y0 <= self.y0
            and self.y1 <= other.y1
        )

    def distance(self, x: float, y: float) -> float:
        dx = max(self.x0 - x, 0.0, x - self.x1)
        dy = max(self.y0 - y, 0.0, y - self.y1)
        return (dx * dx + dy * dy) ** 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    """One point: its two shares, the label drawn beside it, its colour and its tooltip."""

    x: float
    y: float
    label: str
    colour: str
    tip: str


def text_width(text: str, size: float = FONT_PX) -> float:
    """The estimated width in pixels of `text` at `size` px in a sans-serif font."""
    ems = sum(
        0.32 if c in _NARROW else 0.9 if c in _WIDE else 0.7 if c.isupper() else 0.58 for c in text
    )
    return ems * size


def short(label: str) -> str:
    """`label`, cut to MAX_LABEL_CHARS characters with an ellipsis when longer."""
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def place_labels(
    anchors: Sequence[tuple[float, float]],
    sizes: Sequence[tuple[float, float]],
    area: Box,
    obstacles: Sequence[Box] = (),
) -> list[Box]:
    """A box of size `sizes[i]` for the label of the point at `anchors[i]`, all inside `area`,
    overlapping neither each other, nor any point's marker, nor `obstacles` whenever a free slot
    exists (else the label sits right of its point, overlapping)."""
    markers = [Box(x - MARKER, y - MARKER, x + MARKER, y + MARKER) for x, y in anchors]
    taken: list[Box] = [*obstacles, *markers]
    crowd = [sum(abs(x - u) < 80 and abs(y - v) < 40 for u, v in anchors) for x, y in anchors]
    order = sorted(range(len(anchors)), key=lambda i: (-crowd[i], anchors[i][1], anchors[i][0], i))
    placed: dict[int, Box] = {}
    for i in order:
        (x, y), (w, h) = anchors[i], sizes[i]
        free = (
            box
            for box in itertools.chain(_adjacent(x, y, w, h), _grid(x, y, w, h, area))
            if box.within(area) and not any(box.overlaps(t) for t in taken)
        )
        box = next(free, None) or Box(x + GAP, y - h / 2, x + GAP + w, y + h / 2)
        placed[i] = box
        taken.append(box)
    return [placed[i] for i in range(len(anchors))]


def _adjacent(x: float, y: float, w: float, h: float) -> list[Box]:
    """Right, left, above-right, below-right, above-left, below-left, above, below."""
    g, d = GAP, GAP * 0.6
    return [
        Box(x + g, y - h / 2, x + g + w, y + h / 2),
        Box(x - g - w, y - h / 2, x - g, y + h / 2),
        Box(x + d, y - d - h, x + d + w, y - d),
        Box(x + d, y + d, x + d + w, y + d + h),
        Box(x - d - w, y - d - h, x - d, y - d),
        Box(x - d - w, y + d, x - d, y + d + h),
        Box(x - w / 2, y - g - h, x + w / 2, y - g),
        Box(x - w / 2, y + g, x + w / 2, y + g + h),
    ]


def _grid(x: float, y: float, w: float, h: float, area: Box) -> Iterator[Box]:
    """Every slot of the fallback grid inside `area`, nearest to (x, y) first (built only
    when the slots beside the point are all taken)."""
    cols = int((area.x1 - area.x0 - w) // GRID) + 1
    rows = int((area.y1 - area.y0 - h) // GRID) + 1
    boxes = [
        Box(area.x0 + c * GRID, area.y0 + r * GRID, area.x0 + c * GRID + w, area.y0 + r * GRID + h)
        for r in range(max(rows, 0))
        for c in range(max(cols, 0))
    ]
    yield from sorted(boxes, key=lambda b: (b.distance(x, y), b.y0, b.x0))


def plot_area(width: int, height: int) -> Box:
    """The plot's inner area in an SVG of `width` x `height`: inside the axes' margins."""
    left, right, top, bottom = MARGINS
    return Box(left, top, width - right, height - bottom)


def scatter_svg(
    points: Sequence[Point],
    *,
    x_label: str,
    y_label: str,
    legend: Sequence[tuple[str, str]] = (),
    diagonal: bool = True,
    width: int = 560,
    height: int = 420,
) -> str:
    """`points` (x and y shares in [0, 1]) as an inline SVG with gridlines at quarters, the
    dashed diagonal y = x when `diagonal`, a (name, colour) `legend` in the top-left corner and
    one non-overlapping label per point (see the module docstring)."""
    area = plot_area(width, height)

    def sx(a: float) -> float:
        return area.x0 + (area.x1 - area.x0) * a

    def sy(a: float) -> float:
        return area.y0 + (area.y1 - area.y0) * (1 - a)

    parts = [_axes(area, sx, sy, height, x_label, y_label, diagonal)]
    legend_box, legend_svg = _legend(legend, area)
    anchors = [(sx(p.x), sy(p.y)) for p in points]
    texts = [short(p.label) for p in points]
    sizes = [(text_width(t) + 2, LABEL_HEIGHT) for t in texts]
    boxes = place_labels(anchors, sizes, area, [legend_box] if legend else [])
    for p, (x, y), text, box in zip(points, anchors, texts, boxes, strict=True):
        if box.distance(x, y) > GAP:  # not beside its point: a leader line to the nearest edge
            ex, ey = min(max(x, box.x0), box.x1), min(max(y, box.y0), box.y1)
            parts.append(
                f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" '
                f'stroke="{p.colour}" stroke-width="1.2"/>'
            )
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{p.colour}">'
            f"<title>{escape(p.tip)}</title></circle>"
            f'<text x="{box.x0 + 1:.1f}" y="{box.y1 - 4:.1f}" '
            f'textLength="{box.x1 - box.x0 - 2:.1f}" '
            f'lengthAdjust="spacingAndGlyphs" style="fill:{p.colour}" data-box="{_box_attr(box)}">'
            f"<title>{escape(p.label)}</title>{escape(text)}</text>"
        )
    parts.append(legend_svg)
    return svg_frame(width, height, f"{y_label} versus {x_label}", "".join(parts))


def _box_attr(box: Box) -> str:
    return f"{box.x0:.1f} {box.y0:.1f} {box.x1:.1f} {box.y1:.1f}"


def _axes(
    area: Box,
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    height: int,
    x_label: str,
    y_label: str,
    diagonal: bool,
) -> str:
    parts = []
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{area.x0}" y1="{sy(tick):.1f}" x2="{area.x1}" y2="{sy(tick):.1f}" '
            f'stroke="#e3e6ea"/><text x="{area.x0 - 8}" y="{sy(tick) + 4:.1f}" '
            f'text-anchor="end">{tick:.0%}</text>'
            f'<text x="{sx(tick):.1f}" y="{area.y1 + 18}" text-anchor="middle">{tick:.0%}</text>'
        )
    if diagonal:
        parts.append(
            f'<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" '
            'stroke="#98a2b3" stroke-dasharray="4 4"/>'
        )
    mid_y = (area.y0 + area.y1) / 2
    parts.append(
        f'<text x="{(area.x0 + area.x1) / 2:.0f}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="14" y="{mid_y:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {mid_y:.0f})">{escape(y_label)}</text>'
    )
    return "".join(parts)


def _legend(legend: Sequence[tuple[str, str]], area: Box) -> tuple[Box, str]:
    """The legend's box (an obstacle for labels) and its SVG: a dot and a name per line."""
    x, y = area.x0 + 14, area.y0 + 8
    names = [short(name) for name, _ in legend]
    parts = [
        f'<circle cx="{x}" cy="{y + 16 * k}" r="4" fill="{colour}"/>'
        f'<text x="{x + 10}" y="{y + 16 * k + 4}" textLength="{text_width(name):.1f}" '
        f'lengthAdjust="spacingAndGlyphs">{escape(name)}</text>'
        for k, (name, (_, colour)) in enumerate(zip(names, legend, strict=True))
    ]
    wide = max((text_width(n) for n in names), default=0.0)
    box = Box(area.x0, area.y0, x + 14 + wide, y + 16 * max(len(legend) - 1, 0) + 10)
    return box, "".join(parts)
