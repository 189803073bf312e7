"""Masks drawn by users: a PNG (or any image Pillow reads) whose white pixels are inside.

mask = read_mask("glasses.png", (28, 28), flag="--mask")   # (28, 28) float 0/1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from adversa.errors import BadInput

THRESHOLD = 0.5  # grey levels above half of white count as inside, after resizing


def read_mask(path: str | Path, shape: tuple[int, int], flag: str = "--mask") -> Tensor:
    """The image at `path` as a float 0/1 tensor of `shape` (H, W): converted to grey (a
    transparent pixel counts as black), resized with bilinear filtering, then thresholded at
    half of white. Raises `BadInput` naming `flag` and the path when the file is missing or
    not an image, or when no pixel is inside after resizing."""
    height, width = (int(s) for s in shape)
    if height < 1 or width < 1:
        raise BadInput(f"{flag}: the mask size must be positive, got {height}x{width}")
    try:
        with Image.open(Path(path)) as image:
            image.load()
            grey = _grey(image)
    except FileNotFoundError:
        raise BadInput(f"{flag}: mask file {str(path)!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise BadInput(
            f"{flag}: cannot read {str(path)!r} as an image (expected a PNG, white = inside): "
            f"{type(err).__name__}"
        ) from None
    resized = grey.resize((width, height), Image.Resampling.BILINEAR)
    values = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0)
    mask = (values > THRESHOLD).to(torch.float32)
    if not mask.any():
        raise BadInput(
            f"{flag}: mask {str(path)!r} is empty at {height}x{width} (no pixel brighter than "
            "half of white; expected white = inside)"
        )
    return mask


def _grey(image: Image.Image) -> Image.Image:
    """One grey channel; transparency composited over black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    return image.convert("L")
