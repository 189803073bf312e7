"""Label flipping: the attacker changes labels only.

Modes:
- "random": `rate` * N random samples get a uniformly drawn wrong label.
- "targeted": `rate` of the samples of `source_class` are relabelled `target_class`
  (the class-pair attack).
- "loss": the loss-maximising choice (in the spirit of Xiao et al. 2012, "Adversarial Label
  Flips Attack on Support Vector Machines", and Biggio et al. 2011): fit a linear softmax
  surrogate on the clean data, then for every sample take the wrong label of highest surrogate
  loss and flip the `rate` * N samples where that loss is largest.

Cost: "random"/"targeted" are index draws; "loss" adds `surrogate_steps` full-batch gradient
steps of a linear model on flattened inputs.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from adversa.data.dataset import Dataset
from adversa.errors import BadInput
from adversa.poisoning.base import POISONS, PoisonedSet, check_rate, check_target
from adversa.rng import make_generator

MODES: tuple[str, ...] = ("random", "targeted", "loss")


def _surrogate_log_probs(dataset: Dataset, steps: int, seed: int) -> torch.Tensor:
    """Log-probabilities (N, K) of a linear softmax model fitted to the clean data."""
    x = dataset.x.flatten(1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    gen = make_generator(seed)
    weight = (torch.randn(x.shape[1], dataset.num_classes, generator=gen) * 0.01).requires_grad_()
    bias = torch.zeros(dataset.num_classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, dataset.y) + 1e-3 * weight.square().sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return F.log_softmax(x @ weight + bias, 1)


@POISONS.register("label-flip", aliases=("flip",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelFlip:
    """Flip labels: `mode` "random", "targeted" (`source_class` -> `target_class`) or "loss"."""

    name = "label-flip"
    rate: float = 0.3
    mode: str = "random"
    source_class: int | None = None
    target_class: int | None = None
    surrogate_steps: int = 100

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if self.mode not in MODES:
            raise BadInput(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "targeted" and (self.source_class is None or self.target_class is None):
            raise BadInput("mode 'targeted' needs source_class and target_class")
        if self.mode == "targeted" and self.source_class == self.target_class:
            raise BadInput(f"source_class and target_class are both {self.source_class}")
        if self.mode != "targeted" and (self.source_class, self.target_class) != (None, None):
            raise BadInput(
                f"source_class and target_class apply to mode 'targeted' only; mode "
                f"{self.mode!r} would ignore them"
            )
        if self.surrogate_steps < 1:
            raise BadInput(f"surrogate_steps must be >= 1, got {self.surrogate_steps}")

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet:
        if dataset.num_classes < 2:
            raise BadInput(f"label flipping needs >= 2 classes, {dataset.name!r} has 1")
        gen = make_generator(seed)
        y = dataset.y.clone()
        n, k_classes = len(dataset), dataset.num_classes
        if self.mode == "targeted":
            assert self.source_class is not None and self.target_class is not None
            check_target(self.source_class, dataset, "source_class")
            if not 0 <= self.target_class < k_classes:
                raise BadInput(
                    f"target_class must be in 0..{k_classes - 1}, got {self.target_class}"
                )
            pool = torch.nonzero(dataset.y == self.source_class).flatten()
            k = max(1, round(self.rate * pool.numel()))
            idx = pool[torch.randperm(pool.numel(), generator=gen)[:k]]
            y[idx] = self.target_class
        elif self.mode == "random":
            k = max(1, round(self.rate * n))
            idx = torch.randperm(n, generator=gen)[:k]
            shift = torch.randint(1, k_classes, (k,), generator=gen)
            y[idx] = (y[idx] + shift) % k_classes
        else:
            log_p = _surrogate_log_probs(dataset, self.surrogate_steps, seed)
            log_p = log_p.scatter(1, dataset.y[:, None], float("inf"))  # exclude the true label
            worst_logp, worst_label = log_p.min(1)
            k = max(1, round(self.rate * n))
            idx = torch.argsort(worst_logp)[:k]  # lowest log-prob = highest loss
            y[idx] = worst_label[idx]
        idx = idx.sort().values
        meta = {"attack": self.name, **dataclasses.asdict(self), "seed": seed}
        target = self.target_class if self.mode == "targeted" else None
        return PoisonedSet(dataset.x.clone(), y, idx, None, target, meta)
