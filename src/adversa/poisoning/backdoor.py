"""Dirty-label backdoors: stamp a trigger on a random share of the training samples from
other classes and relabel them as the target class.

- BadNets (Gu et al. 2017, "BadNets: Identifying Vulnerabilities in the Machine Learning
  Model Supply Chain", arXiv:1708.06733): a small checkerboard patch in a corner.
- Blended (Chen et al. 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using Data
  Poisoning", arXiv:1712.05526): a fixed seeded noise pattern blended over the whole image,
  `(1 - alpha) x + alpha pattern`.

Cost: one masked blend over the poisoned samples; no model is needed.
"""

from __future__ import annotations

import dataclasses

import torch

from adversa.data.dataset import Dataset
from adversa.errors import BadInput
from adversa.poisoning.base import (
    POISONS,
    PoisonedSet,
    Trigger,
    apply_trigger,
    check_rate,
    check_target,
)
from adversa.rng import make_generator

CORNERS: tuple[str, ...] = ("bottom-right", "bottom-left", "top-right", "top-left")


def badnets_trigger(
    shape: tuple[int, ...],
    patch_size: int = 3,
    corner: str = "bottom-right",
    margin: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Trigger:
    """A `patch_size` x `patch_size` checkerboard (hi/lo) `margin` pixels from `corner`."""
    if len(shape) != 3:
        raise BadInput(f"a patch trigger needs (C, H, W) images, got sample shape {shape}")
    if corner not in CORNERS:
        raise BadInput(f"corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    if patch_size < 1:
        raise BadInput(f"patch_size must be >= 1, got {patch_size}")
    _c, h, w = shape
    if patch_size + margin > min(h, w):
        raise BadInput(
            f"patch_size {patch_size} (+ margin {margin}) is larger than the {h}x{w} image"
        )
    lo, hi = bounds
    ii = torch.arange(patch_size)
    checker = ((ii[:, None] + ii[None, :]) % 2 == 0).float() * (hi - lo) + lo
    top = margin if corner.startswith("top") else h - margin - patch_size
    left = margin if corner.endswith("left") else w - margin - patch_size
    pattern = torch.zeros(shape)
    mask = torch.zeros(shape)
    pattern[:, top : top + patch_size, left : left + patch_size] = checker
    mask[:, top : top + patch_size, left : left + patch_size] = 1.0
    return Trigger(pattern=pattern, mask=mask)


def blend_trigger(
    shape: tuple[int, ...], alpha: float, seed: int, bounds: tuple[float, float] = (0.0, 1.0)
) -> Trigger:
    """Uniform noise in `bounds` from `seed`, blended with weight `alpha` everywhere."""
    if not 0.0 < alpha <= 1.0:
        raise BadInput(f"alpha must be in (0, 1], got {alpha}")
    lo, hi = bounds
    pattern = torch.rand(shape, generator=make_generator(seed)) * (hi - lo) + lo
    return Trigger(pattern=pattern, mask=torch.full((1,) * len(shape), float(alpha)))


def choose_victims(dataset: Dataset, rate: float, target_class: int, seed: int) -> torch.Tensor:
    """round(rate * N) random indices among the samples not of `target_class` (sorted)."""
    candidates = torch.nonzero(dataset.y != target_class).flatten()
    k = round(rate * len(dataset))
    if k < 1:
        raise BadInput(f"rate {rate} poisons no sample of {len(dataset)}")
    if k > candidates.numel():
        raise BadInput(
            f"rate {rate} asks for {k} poisons, only {candidates.numel()} samples are not of "
            f"class {target_class}"
        )
    pick = torch.randperm(candidates.numel(), generator=make_generator(seed))[:k]
    return candidates[pick].sort().values


def _poison(dataset: Dataset, trigger: Trigger, idx: torch.Tensor, target: int) -> tuple:
    x, y = dataset.x.clone(), dataset.y.clone()
    x[idx] = apply_trigger(x[idx], trigger).clamp(*dataset.bounds)
    y[idx] = target
    return x, y


def _stamp(attack: BadNets | Blend, dataset: Dataset, seed: int) -> PoisonedSet:
    """A trigger backdoor: `attack.rate` of the non-target samples (seeded) get its trigger
    and the target label."""
    check_target(attack.target_class, dataset)
    trigger = attack.trigger(dataset)
    idx = choose_victims(dataset, attack.rate, attack.target_class, seed)
    x, y = _poison(dataset, trigger, idx, attack.target_class)
    meta = {"attack": attack.name, **dataclasses.asdict(attack), "seed": seed}
    return PoisonedSet(x, y, idx, trigger, attack.target_class, meta)


@POISONS.register("badnets", aliases=("patch",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class BadNets:
    """BadNets patch backdoor (Gu et al. 2017). Poisons `rate` * N samples of other classes."""

    name = "badnets"
    rate: float = 0.05
    target_class: int = 0
    patch_size: int = 3
    corner: str = "bottom-right"
    margin: int = 1

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if self.corner not in CORNERS:
            raise BadInput(f"corner must be one of {', '.join(CORNERS)}, got {self.corner!r}")

    def trigger(self, dataset: Dataset) -> Trigger:
        return badnets_trigger(
            dataset.input_shape, self.patch_size, self.corner, self.margin, dataset.bounds
        )

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet:
        return _stamp(self, dataset, seed)


@POISONS.register("blend", aliases=("blended",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class Blend:
    """Blended-noise backdoor (Chen et al. 2017). The noise pattern is drawn from
    `pattern_seed`, so the same trigger can be re-created at test time."""

    name = "blend"
    rate: float = 0.05
    target_class: int = 0
    alpha: float = 0.2
    pattern_seed: int = 0

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if not 0.0 < self.alpha <= 1.0:
            raise BadInput(f"alpha must be in (0, 1], got {self.alpha}")

    def trigger(self, dataset: Dataset) -> Trigger:
        return blend_trigger(dataset.input_shape, self.alpha, self.pattern_seed, dataset.bounds)

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet:
        return _stamp(self, dataset, seed)
