"""The zoo trains with the library's one training loop (`adversa.defenses.training.train`);
what is left here are two small helpers kept for callers of earlier versions.

`PGDAdversary` is the inner maximisation of PGD adversarial training (Madry, Makelov,
Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to Adversarial
Attacks", arXiv:1706.06083) as a stand-alone callable: the "pgd-at" defense's adversary
(`adversa.defenses.objectives.ascend` from a uniform random start, eps ramped linearly), for
code that wants adversarial points outside the trainer. `accuracy` is clean accuracy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from adversa.data import Dataset
from adversa.errors import BadInput
from adversa.model import Model
from adversa.rng import make_generator
from adversa.threat import ThreatModel

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """Where training is: optimizer step `index` (from 0) of `total`."""

    index: int
    total: int

    @property
    def fraction(self) -> float:
        return self.index / max(1, self.total)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGDAdversary:
    """PGD-AT's adversary: `steps` steps of PGD on the cross-entropy from a random start, every
    point taking every step. `eps` ramps up linearly from 0 over the first `ramp` share of the
    training steps. Cost: `steps` forward and backward passes per sample.
    """

    eps: float  # final radius of the ball
    norm: str = "linf"  # "linf", "l2" or "l1"
    steps: int = 10  # PGD steps per batch
    step_size: float | None = None  # None: 2.5 * current eps / steps
    ramp: float = 0.0  # share of training over which eps grows linearly from 0 to `eps`
    seed: int = 0  # the random start of step i uses seed * 1_000_003 + i

    def __post_init__(self) -> None:
        if self.eps < 0 or self.steps < 1 or not 0 <= self.ramp <= 1:
            raise BadInput(
                f"PGDAdversary needs eps >= 0, steps >= 1 and ramp in [0, 1], got eps="
                f"{self.eps}, steps={self.steps}, ramp={self.ramp}"
            )

    def eps_at(self, step: Step) -> float:
        if self.ramp == 0:
            return self.eps
        return self.eps * min(1.0, (step.index + 1) / (self.ramp * step.total))

    def __call__(self, model: Model, x: Tensor, y: Tensor, step: Step) -> Tensor:
        from adversa.defenses.objectives import ascend

        eps = self.eps_at(step)
        threat = ThreatModel(norm=self.norm, eps=eps, bounds=model.bounds)  # type: ignore[arg-type]
        gen = make_generator(self.seed * 1_000_003 + step.index, x.device)
        return ascend(
            model.module,
            threat,
            x,
            lambda logits: F.cross_entropy(logits, y, reduction="none"),
            start=threat.random_start(x, gen),
            steps=self.steps,
            step_size=self.step_size if self.step_size is not None else 2.5 * eps / self.steps,
        )


def accuracy(module: nn.Module, dataset: Dataset, batch_size: int = 500) -> float:
    """Clean accuracy of `module` on `dataset` (eval mode restored to what it was)."""
    model = Model(module, num_classes=dataset.num_classes, bounds=dataset.bounds)
    preds = model.predict(dataset.x, batch_size=batch_size)
    return float((preds.cpu() == dataset.y).float().mean())
