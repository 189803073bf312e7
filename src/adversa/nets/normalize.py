"""Per-channel normalisation as the first layer of a model, so attacks work in pixel space.

A network trained on normalised inputs expects `(x - mean) / std`; putting that inside the
model lets every attack, projection and report stay in the data's bounds ([0, 1] for images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from adversa.errors import BadInput

# The usual statistics (ImageNet: torchvision's documented values; CIFAR-10: its training set).
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class Normalize(nn.Module):
    """`(x - mean) / std` per channel (dimension 1); mean and std are buffers, not parameters."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise BadInput(
                f"normalisation needs one mean and one std per channel, got {len(mean)} means "
                f"and {len(std)} stds"
            )
        if any(s <= 0 for s in std):
            raise BadInput(f"normalisation std must be > 0, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def normalization_for(name: str | None, channels: int) -> Normalize | None:
    """The `Normalize` layer for a named statistic (`imagenet`, `cifar10`) at this channel
    count, or None for `name=None` or non-colour inputs (the statistics are for RGB)."""
    if name is None or channels != 3:
        return None
    if name not in NORMALIZATIONS:
        raise BadInput(f"unknown normalisation {name!r}; expected one of {sorted(NORMALIZATIONS)}")
    mean, std = NORMALIZATIONS[name]
    return Normalize(mean, std)


def parse_normalization(text: str, flag: str = "--normalize") -> tuple[list[float], list[float]]:
    """`imagenet`, `cifar10` or `MEANS/STDS` (comma-separated, one value or one per channel,
    e.g. `0.5/0.25` or `0.485,0.456,0.406/0.229,0.224,0.225`) as (mean, std) lists."""
    name = text.strip().lower()
    if name in NORMALIZATIONS:
        mean, std = NORMALIZATIONS[name]
        return list(mean), list(std)
    expected = f"{', '.join(sorted(NORMALIZATIONS))} or MEANS/STDS (e.g. 0.5/0.25)"
    parts = name.split("/")
    if len(parts) != 2:
        raise BadInput(f"{flag} {text!r}: expected {expected}")
    try:
        mean, std = ([float(v) for v in part.split(",")] for part in parts)
    except ValueError:
        raise BadInput(f"{flag} {text!r}: expected {expected}") from None
    if any(s <= 0 or not math.isfinite(s) for s in std) or not all(map(math.isfinite, mean)):
        raise BadInput(f"{flag} {text!r}: every std must be finite and > 0, every mean finite")
    return mean, std
