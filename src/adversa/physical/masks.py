"""Masks for physical perturbations: where a printed object sits in the image.

`MASKS` maps a name to a function `(H, W) -> bool (H, W)`; `resolve_mask(spec, shape, flag)`
turns what a user gave (`--mask eyeglasses|stickers|square|frame|FILE.png`) into the mask of
a `MaskedThreat` for images of `shape`, and `mask_summary` is what a report records of it.

- "eyeglasses": the frame of a pair of glasses over the eye line, two rims, the bridge and
  the temples (Sharif, Bhagavatula, Bauer & Reiter 2016, "Accessorize to a Crime", CCS). The
  defaults are placed for the aligned 25x25 crops of scikit-image's `lfw_subset` (eyes at
  about a third of the height); `thickness` (pixels) sets the area.
- "stickers": four rectangles inside the central sign region, two above and two below the
  middle, like the black-and-white stickers of Eykholt et al. 2018 ("Robust Physical-World
  Attacks on Deep Learning Visual Classification", arXiv:1707.08945).
- "square": a central square of 10% of the image area; "frame": a border 5% of the side wide.

Every mask scales with (H, W) and is deterministic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adversa.errors import BadInput, ShapeError, UnknownName, require
from adversa.physical.mask_files import read_mask
from adversa.physical.masked import MaskedThreat
from adversa.registry import Registry
from adversa.render import png_data_uri

MASKS: Registry[Tensor] = Registry("mask")  # name -> function (H, W, **options) -> bool (H, W)


def _box(h: int, w: int, top: float, bottom: float, left: float, right: float) -> Tensor:
    """The rows [top, bottom) and columns [left, right) given as fractions of the side,
    rounded to pixels, at least one pixel each way."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    r0, c0 = min(round(top * h), h - 1), min(round(left * w), w - 1)
    r1, c1 = max(round(bottom * h), r0 + 1), max(round(right * w), c0 + 1)
    mask[r0:r1, c0:c1] = True
    return mask


@MASKS.register("eyeglasses", aliases=("glasses",))
def eyeglasses(
    h: int,
    w: int,
    *,
    eye_line: float = 0.34,
    center: float = 0.46,
    thickness: int | None = None,
) -> Tensor:
    """An eyeglass frame: two rectangular rims around the eyes (each 0.3 W wide, 0.28 H
    high, centred at `eye_line` of the height and `center` -/+ 0.19 W), the bridge between
    them and the temples to the image's sides along the rims' top. `thickness` is the rim
    width in pixels (default: 6% of the height, at least 1)."""
    t = max(1, round(0.06 * h)) if thickness is None else int(thickness)
    if t < 1:
        raise BadInput(f"eyeglasses thickness must be >= 1 pixel, got {thickness}")
    top, bottom = eye_line - 0.14, eye_line + 0.14
    mask = torch.zeros(h, w, dtype=torch.bool)
    for mid in (center - 0.19, center + 0.19):
        rim = _box(h, w, top, bottom, mid - 0.15, mid + 0.15)
        rows, cols = rim.any(1).nonzero().squeeze(1), rim.any(0).nonzero().squeeze(1)
        inner = torch.zeros_like(rim)
        r0, r1 = int(rows[0]) + t, int(rows[-1]) + 1 - t
        c0, c1 = int(cols[0]) + t, int(cols[-1]) + 1 - t
        if r1 > r0 and c1 > c0:
            inner[r0:r1, c0:c1] = True
        mask |= rim & ~inner
    r_top = round(top * h)
    band = slice(r_top, min(h, r_top + t))
    left_rim = _box(h, w, top, bottom, center - 0.34, center - 0.04).any(0).nonzero()
    right_rim = _box(h, w, top, bottom, center + 0.04, center + 0.34).any(0).nonzero()
    mask[band, int(left_rim[-1]) : int(right_rim[0]) + 1] = True  # the bridge
    mask[band, : int(left_rim[0])] = True  # the temples
    mask[band, int(right_rim[-1]) + 1 :] = True
    return mask


@MASKS.register("stickers")
def stickers(h: int, w: int) -> Tensor:
    """Four stickers (each 0.1 H high, 0.2 W wide, 8% of the area in all) inside the central
    sign region: two above the middle, two below it."""
    mask = torch.zeros(h, w, dtype=torch.bool)
    for top in (0.25, 0.65):
        for left in (0.25, 0.55):
            mask |= _box(h, w, top, top + 0.1, left, left + 0.2)
    return mask


@MASKS.register("square")
def square(h: int, w: int, *, area: float = 0.1) -> Tensor:
    """A central square covering `area` of the image (rounded to pixels)."""
    require(0 < area <= 1, f"square area must be in (0, 1], got {area}")
    side = math.sqrt(area)
    return _box(h, w, 0.5 - side / 2, 0.5 + side / 2, 0.5 - side / 2, 0.5 + side / 2)


@MASKS.register("frame")
def frame(h: int, w: int, *, width: float = 0.05) -> Tensor:
    """A border `width` of the side wide (at least one pixel) around the image."""
    require(0 < width < 0.5, f"frame width must be in (0, 0.5), got {width}")
    rows, cols = max(1, round(width * h)), max(1, round(width * w))
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[rows : h - rows, cols : w - cols] = False
    return mask


def image_shape(sample_shape: tuple[int, ...], flag: str = "--mask") -> tuple[int, int]:
    """(H, W) of images shaped (C, H, W); `BadInput` naming `flag` for other data."""
    if len(sample_shape) != 3:
        raise ShapeError(
            f"{flag} needs image data shaped (N, C, H, W), got points shaped {tuple(sample_shape)}"
        )
    return int(sample_shape[1]), int(sample_shape[2])


def resolve_mask(spec: str | Tensor, sample_shape: tuple[int, ...], flag: str = "--mask") -> Tensor:
    """The bool mask (H, W) (or the given tensor's own shape) for one point of
    `sample_shape` (C, H, W): a `MASKS` name, a PNG file (white = inside, resized to H x W),
    or a 0/1 tensor that must broadcast against the data. An unknown name, an unreadable
    file, a tensor that does not fit and an empty mask raise `BadInput` naming `flag`."""
    h, w = image_shape(tuple(sample_shape), flag)
    if isinstance(spec, Tensor):
        threat = MaskedThreat(norm="linf", eps=0.0, mask=spec)
        if not threat.fits((1, *sample_shape)):
            raise ShapeError(
                f"{flag}: a mask of shape {tuple(spec.shape)} does not fit data shaped "
                f"{tuple(sample_shape)}; expected (H, W) = ({h}, {w}) or (1|C, H, W)"
            )
        mask = threat.mask
    elif not isinstance(spec, str):
        raise BadInput(f"{flag} must be a mask name or a PNG file, got {spec!r}")
    elif spec.strip().lower() in MASKS:
        mask = MASKS.factory(spec)(h, w)
    elif spec.lower().endswith(".png") or Path(spec).is_file():
        mask = read_mask(spec, (h, w), flag) > 0
    else:
        error = UnknownName("mask", spec, MASKS.list())
        raise BadInput(f"{flag}: {error}, or a PNG file (white = inside)") from None
    if not bool(mask.any()):
        raise BadInput(f"{flag}: the mask {_name(spec)} is empty; expected some pixels inside")
    return mask


def masked_threat(
    norm: str,
    eps: float,
    bounds: tuple[float, float],
    spec: str | Tensor,
    sample_shape: tuple[int, ...],
    flag: str = "--mask",
) -> MaskedThreat:
    """The `MaskedThreat` for `spec` (see `resolve_mask`) on points of `sample_shape`."""
    mask = resolve_mask(spec, tuple(sample_shape), flag)
    return MaskedThreat(norm=norm, eps=eps, bounds=bounds, mask=mask)


def _name(spec: str | Tensor) -> str:
    return repr(spec) if isinstance(spec, str) else f"tensor of shape {tuple(spec.shape)}"


def mask_summary(threat: MaskedThreat, spec: str | Tensor) -> dict[str, Any]:
    """What a report records of the mask: the option given, the shape, the pixels inside
    and their share of the image area, and the mask as a PNG data URI."""
    mask = threat.mask
    spatial = mask.reshape(-1, *mask.shape[-2:]).any(0) if mask.dim() >= 2 else mask
    return {
        "spec": spec if isinstance(spec, str) else "tensor",
        "shape": list(mask.shape),
        "pixels": int(spatial.sum()),
        "area_share": float(spatial.float().mean()),
        "png": png_data_uri(spatial.float()),
    }
