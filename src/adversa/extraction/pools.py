"""Query pools that ship offline: natural inputs an extraction attacker sends to the target.

- `digits-28`: scikit-learn's 1,797 8x8 digits, upscaled to 20x20 and centred in 28x28 (the
  layout of MNIST), each drawn copy under a seeded random affine transform (rotation up to
  +-14 degrees, scale 0.85-1.15, shift up to +-2.8 pixels) and stroke gain (1-2x, clipped),
  so that a pool of any size has no repeated input. A different distribution from MNIST
  (other writers, 8x8 resolution), as Copycat's and Knockoff's non-problem-domain data.

`load_pool(spec, n, seed)` gives such a pool, or the inputs of any `--data` spec (built-in
name: its train split; a file: loaded whole; labels ignored). `load_pool_groups` gives the
pool with its coarse groups (N,) as well, which Knockoff Nets' adaptive strategy samples
among: for `digits-28` the source digit each input was drawn from, for a data set its labels
(the attacker's own labels of its pool, not the target's).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from adversa.data import load_data
from adversa.errors import BadInput
from adversa.rng import make_generator

POOLS: tuple[str, ...] = ("digits-28",)


def load_pool(spec: str, n: int, seed: int = 0) -> Tensor:
    """Inputs (N, ...) for extraction: `n` generated ones for a name in `POOLS`, else the
    inputs of the data set `spec` (all of them)."""
    return load_pool_groups(spec, n, seed)[0]


def load_pool_groups(spec: str, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`load_pool`'s inputs and their groups (N,) (integers from 0; see the module docstring)."""
    if n < 1:
        raise BadInput(f"--queries must be >= 1, got {n}")
    if spec == "digits-28":
        return digits_28_groups(n, seed)
    dataset = load_data(spec, split="train") if not _is_file(spec) else load_data(spec)
    return dataset.x, torch.unique(dataset.y, return_inverse=True)[1]


def _is_file(spec: str) -> bool:
    return "/" in spec or "." in spec


def digits_28(n: int, seed: int = 0) -> Tensor:
    """`n` randomly transformed 28x28 renderings of scikit-learn's digits, (n, 1, 28, 28) in
    [0, 1], seeded by `seed`; see the module docstring."""
    return digits_28_groups(n, seed)[0]


def digits_28_groups(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`digits_28(n, seed)` and the digit (n,) each rendering was drawn from."""
    digits = load_data("digits", split="all")
    gen = make_generator(seed)
    idx = torch.randint(0, digits.x.shape[0], (n,), generator=gen)
    x = nn.functional.interpolate(
        digits.x[idx], size=(20, 20), mode="bilinear", align_corners=False
    )
    x = nn.functional.pad(x, (4, 4, 4, 4))
    angle = (torch.rand(n, generator=gen) - 0.5) * math.radians(28)
    scale = 0.85 + 0.3 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = nn.functional.grid_sample(x, grid, align_corners=False)
    gain = 1.0 + torch.rand(n, 1, 1, 1, generator=gen)
    return (x * gain).clamp(0, 1), digits.y[idx]
