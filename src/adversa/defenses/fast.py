"""Fast adversarial training (Wong, Rice & Kolter 2020, "Fast is better than free:
Revisiting adversarial training", arXiv:2001.03994): one FGSM step from a uniform random start
in the Linf ball, with step 1.25 eps, then one optimizer step on the result. The random start
and the moderate step are what keep single-step training from catastrophic overfitting.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from adversa.defenses.adversarial import BallDefense, ce_objective
from adversa.defenses.base import DEFENSES, BatchMetrics, StepContext
from adversa.defenses.objectives import check_finite, inner_max, train_on_adversarial


@DEFENSES.register("fast-at", aliases=("fgsm-rs",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class FastAT(BallDefense):
    """Fast adversarial training: one FGSM step from a random start (FGSM-RS).

    Wong, Rice & Kolter 2020, "Fast is better than free: Revisiting adversarial training",
    arXiv:2001.03994. x' = project(u + alpha * sign(grad_u CE(f(u), y))), u uniform in the
    Linf ball (clipped to the box), alpha = 1.25 eps; then one step on CE(f(x'), y). A larger
    alpha leads to catastrophic overfitting (the paper, section 5). Clean metrics come from
    one extra forward pass.

    Cost per batch: two forward and backward passes, plus one forward pass.
    """

    name: ClassVar[str] = "fast-at"
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    alpha: float | None = None  # FGSM step; None: 1.25 * eps (eps after the ramp)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha is not None:
            check_finite("alpha", self.alpha, positive=True)

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        threat = self.threat_at(ctx)
        alpha = self.alpha if self.alpha is not None else 1.25 * threat.eps
        x_adv = inner_max(
            module,
            threat,
            x,
            ce_objective(y),
            start=ctx.draw(x, lambda batch: threat.random_start(batch, ctx.gen)),
            steps=1,
            step_size=alpha,
        )
        return train_on_adversarial(module, optimizer, x, x_adv, y)
