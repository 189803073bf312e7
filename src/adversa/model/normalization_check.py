"""Warnings for the most common silent mistake with colour models: normalisation.

A network trained on `(x - mean) / std` that is given pixels in [0, 1] still returns logits,
just poor ones, and every robustness number computed on it is meaningless. Two checks, both
cheap (at most three forward passes over `PROBE` points):

- no normalisation declared, colour images: clean accuracy as given against the accuracy
  with each usual normalisation put in front (ImageNet's, CIFAR-10's); a gain of `GAIN` or
  more means the model expects normalised input;
- normalisation declared while the data's per-channel statistics look normalised already
  (mean within 0.25 of 0, spread within [0.6, 1.5], negative values): normalised twice.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adversa.model.wrapped import Model
from adversa.nets.normalize import NORMALIZATIONS, Normalize

PROBE = 256  # points the accuracy check uses
GAIN = 0.2  # accuracy gain that makes a missing normalisation likely


def normalization_warnings(model: Model, x: Tensor, y: Tensor) -> list[str]:
    """The warnings for this model on these points (see the module docs); [] when fine."""
    if x.dim() != 4 or x.shape[1] != 3 or len(x) == 0:
        return []
    declared = getattr(model, "normalization", None)
    if declared is not None:
        return _normalised_twice(x)
    if tuple(model.bounds) != (0.0, 1.0) or type(model) is not Model:
        return []
    x, y = x[:PROBE].to(model.device), y[:PROBE].to(model.device)
    with torch.no_grad():
        plain = float((model(x).argmax(1) == y).float().mean())
        gains = {}
        for name, (mean, std) in NORMALIZATIONS.items():
            normal = Normalize(mean, std).to(x.device)
            gains[name] = float((model(normal(x)).argmax(1) == y).float().mean())
    best = max(gains, key=gains.__getitem__)
    if gains[best] - plain < GAIN:
        return []
    return [
        f"clean accuracy is {plain:.1%} on the [0, 1] inputs but {gains[best]:.1%} with {best} "
        f"normalisation in front: the model probably expects normalised inputs; pass "
        f"--normalize {best} (library: Model(..., mean=, std=)) and the numbers change"
    ]


def _normalised_twice(x: Tensor) -> list[str]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).float()
    mean, spread = flat.mean(1), flat.std(1)
    if bool((flat.min() < 0) & (mean.abs() < 0.25).all() & ((spread > 0.6) & (spread < 1.5)).all()):
        return [
            "the data look normalised already (per-channel mean "
            f"{', '.join(f'{m:.2f}' for m in mean.tolist())}, std "
            f"{', '.join(f'{s:.2f}' for s in spread.tolist())}) and the model normalises them "
            "again: give pixel data (e.g. in [0, 1]) with --normalize, or drop --normalize"
        ]
    return []
