"""Projected gradient descent (Madry, Makelov, Schmidt, Tsipras & Vladu, 2018,
"Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083).

Linf, L2 and L1 balls; random start; batched restarts; per-sample best kept; samples leave
the batch once fooled (`early_stop=False` keeps every sample for every step, for equal-work
comparisons: the points returned are the same up to rounding, the cost is higher). The loop
is the shared template `attacks.gradient.ascend`. The L1 step is the sparse steepest-ascent
step of Tramer & Boneh (2019, "Adversarial Training and Robustness for Multiple
Perturbations", arXiv:1904.13000).

Cost per attacked sample: `steps * restarts` forward and backward passes at most (exactly,
with `early_stop=False`), plus the clean check (unless `clean_check=False`) and the harness's
verification, plus with
several restarts one forward pass to pick among their last iterates. With one restart a
sample no step fooled returns its last iterate (the harness's verification is its check).

Example::

    threat = ThreatModel(norm="linf", eps=0.3)
    result = get_attack("pgd", threat, steps=40)(model, x, y)   # x: (B, 1, 28, 28) in [0, 1]
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.attacks.gradient import Ascent, gradient_ascent
from adversa.errors import require
from adversa.losses import get_loss
from adversa.model import Model


@register_attack("pgd", aliases=("bim",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class PGD(AttackBase):
    steps: int = 40  # gradient steps per restart
    step_size: float | None = None  # None: 2.5 * eps / steps (Madry et al.)
    restarts: int = 1  # independent random starts, run as one batch
    random_start: bool = True  # start uniformly inside the ball
    loss: str = "ce"  # "ce" or "margin" (C&W's logit margin); "dlr" untargeted
    l1_sparsity: float = 0.99  # L1 only: share of coordinates left out of each step
    early_stop: bool = True  # a sample leaves the batch once fooled (False: every step)
    # False: the caller vouches that the model classifies every point correctly (evaluate's
    # cascade attacks only those), so the clean forward pass is skipped; a point that is
    # wrong anyway is attacked like the others instead of being returned unchanged
    clean_check: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}")
        require(
            self.step_size is None or self.step_size > 0,
            f"step_size must be > 0, got {self.step_size}",
        )
        require(0 <= self.l1_sparsity < 1, f"l1_sparsity must be in [0, 1), got {self.l1_sparsity}")
        get_loss(self.loss, self.threat.targeted)

    @property
    def resolved_step_size(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.threat.eps / self.steps

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        return gradient_ascent(
            model,
            self.threat,
            x,
            y,
            loss_fn=get_loss(self.loss, self.threat.targeted),
            plan=Ascent(
                steps=self.steps,
                step_size=self.resolved_step_size,
                restarts=self.restarts,
                random_start=self.random_start,
                early_stop=self.early_stop,
                l1_sparsity=self.l1_sparsity,
                # One restart: the harness's verification evaluates the last iterate.
                final_eval=self.restarts > 1,
            ),
            gen=gen,
            clean_check=self.clean_check,
        )
