"""Standard training ("none") and the pieces every training-time defense shares: the eps ramp,
the inner maximisation of adversarial training, and the batch metrics.

The inner maximisation (`inner_max`) is the paper's PGD, not the evaluation attack behind
`get_attack("pgd")`: the evaluation harness skips points the model already misclassifies and
stops each point at the first iterate that fools the model, which is right for measuring
robust accuracy but, for training, would hand TRADES and MART an `x'` equal to `x` on exactly
the misclassified points they are designed to weight, and PGD-AT only just-crossed points
(the early-stopped variant of Zhang et al. 2020, arXiv:2002.11242). `inner_max` therefore
configures the shared template `attacks.gradient.ascend` for the last iterate of every point
(no best tracking, no early stop, no clean check, no cost scope: training is not an
evaluation). With the template come `ThreatModel.random_start` and `ThreatModel.project` (the
library's only projection) and `steepest_step`; the model runs in its `frozen()` scope (eval
mode, parameters without gradients, both restored on exit), so BatchNorm uses its running
statistics while the adversary runs, as in the TRADES and MART reference code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.attacks.gradient import Ascent, ascend
from adversa.defenses.base import DEFENSES, BatchMetrics, DefenseBase, StepContext
from adversa.errors import require
from adversa.model import Model
from adversa.threat import ThreatModel

Objective = Callable[[Tensor], Tensor]  # logits (B, K) -> per-sample loss (B,) to maximise


def check_finite(name: str, value: float, *, positive: bool = False) -> None:
    """`value` must be a finite number, >= 0 (or > 0 with `positive`)."""
    bound = "> 0" if positive else ">= 0"
    require(
        isinstance(value, int | float) and not isinstance(value, bool),
        f"{name} must be a number {bound}, got {value!r}",
    )
    require(math.isfinite(value), f"{name} must be finite and {bound}, got {value}")
    require(value > 0 if positive else value >= 0, f"{name} must be {bound}, got {value}")


def check_share(name: str, value: float) -> None:
    ok = isinstance(value, int | float) and 0 <= value <= 1
    require(ok, f"{name} must be in [0, 1], got {value}")


def ramped(eps: float, ramp: float, ctx: StepContext) -> float:
    """`eps` grown linearly from eps / (ramp * total) at the first step to `eps` once a
    `ramp` share of the run is done (`ramp = 0`: `eps` throughout)."""
    if ramp == 0:
        return eps
    return eps * min(1.0, (ctx.step + 1) / (ramp * max(1, ctx.total)))


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or DataParallel) wrapper.

    Adversaries run on the inner module: a DDP forward whose output gets no parameter gradient
    would leave DDP waiting for a reduction that never comes.
    """
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return module.module if isinstance(module, wrappers) else module


def inner_max(
    module: nn.Module,
    threat: ThreatModel,
    x: Tensor,
    objective: Objective,
    *,
    start: Tensor,
    steps: int,
    step_size: float,
) -> Tensor:
    """Maximise `objective(module(x'))` over x' in the threat model's ball around `x`, from
    `start`, with `steps` steepest-ascent steps of `step_size`, projecting after each step.

    Every point takes every step (no early stop) and the last iterate is returned, detached.
    The module runs in eval mode with frozen parameters. Cost: `steps` forward and backward
    passes per sample (none when eps = 0).
    """
    model = Model(unwrap(module), bounds=threat.bounds)
    plan = Ascent(
        steps=steps, step_size=step_size, random_start=False, early_stop=False, track_best=False
    )
    with model.frozen():
        return ascend(
            lambda x_rows, _row: (objective(model(x_rows)), None),
            threat,
            x.detach(),
            plan,
            start=start,
        )


def step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """One optimizer step on `loss`: zero_grad, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def correct(logits: Tensor, y: Tensor) -> int:
    return int((logits.detach().argmax(1) == y).sum())


def ce_value(logits: Tensor, y: Tensor) -> float:
    return float(F.cross_entropy(logits.detach(), y))


@torch.no_grad()
def clean_metrics(module: nn.Module, x: Tensor, y: Tensor) -> tuple[float, int]:
    """Cross-entropy and correct count on the clean batch, in eval mode (one forward pass),
    for defenses that do not train on the clean batch."""
    model = Model(unwrap(module))
    with model.eval_mode():
        logits = model(x)
    return ce_value(logits, y), correct(logits, y)


def train_on_adversarial(
    module: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, x_adv: Tensor, y: Tensor
) -> BatchMetrics:
    """One optimizer step on the cross-entropy of the adversarial batch only (PGD-AT,
    fast AT), with the clean batch's metrics for the log. Cost: one forward pass (clean, eval
    mode) plus one forward and one backward pass (adversarial)."""
    clean_loss, clean_correct = clean_metrics(module, x, y)
    logits = module(x_adv)
    loss = F.cross_entropy(logits, y)
    step(optimizer, loss)
    return BatchMetrics(
        loss=float(loss.detach()),
        clean_loss=clean_loss,
        clean_correct=clean_correct,
        adv_loss=float(loss.detach()),
        adv_correct=correct(logits, y),
    )


@DEFENSES.register("none", aliases=("standard",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class Standard(DefenseBase):
    """Standard training: cross-entropy on the clean batch, softmax at `temperature`.

    `temperature > 1` trains the teacher of defensive distillation (Papernot et al. 2016,
    arXiv:1511.04508), whose logits are divided by T inside the softmax during training only.
    `clean_loss` is always the cross-entropy at temperature 1, what the deployed model sees.

    Cost per batch: one forward and one backward pass.
    """

    name: ClassVar[str] = "none"

    temperature: float = 1.0  # softmax temperature during training (distillation's teacher)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("temperature", self.temperature, positive=True)

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        logits = module(x)
        loss = F.cross_entropy(logits / self.temperature, y)
        step(optimizer, loss)
        return BatchMetrics(
            loss=float(loss.detach()),
            clean_loss=ce_value(logits, y),
            clean_correct=correct(logits, y),
        )
