"""Free adversarial training (Shafahi, Najibi, Ghiasi, Xu, Dickerson, Studer, Davis, Taylor &
Goldstein 2019, "Adversarial Training for Free!", arXiv:1904.12843).

Each minibatch is replayed `replays` (m) times. Every replay is one forward and one backward
pass whose gradients serve twice: the parameter gradient for an optimizer step, the input
gradient for the perturbation, delta <- project(delta + step_size * sign(grad_x)). As in the
paper, delta carries over from one minibatch to the next (its first rows, when a batch is
smaller); it lives in a `FreeState` (`new_state()`), outside the frozen config: the caller
makes one per run, passes it to every batch as `StepContext.state`, and a checkpoint stores
its `state_dict()`. Under data-parallel training every process keeps the whole batch's delta
(the shards' deltas gathered after each batch, one all-gather of the batch's size) and
starts from its shard's rows of it, so K processes carry what one process carries, also
when the last batch of an epoch is smaller and splits differently.

A call makes m optimizer steps: `steps_per_batch` says so, and a trainer matching the budget of
E epochs of standard training runs ceil(E / m) epochs (the paper's "epochs / m").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.defenses.adversarial import BallDefense
from adversa.defenses.base import DEFENSES, BatchMetrics, DefenseState, StepContext
from adversa.defenses.objectives import check_finite, clean_metrics, correct
from adversa.errors import BadInput, require


class FreeState(DefenseState):
    """The perturbation carried between minibatches (None before the first one)."""

    def __init__(self) -> None:
        self.delta: Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"delta": None if self.delta is None else self.delta.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.delta = state.get("delta")

    def take(self, x: Tensor, offset: int = 0) -> Tensor:
        """The carried delta for a batch shaped like `x` whose first row is row `offset` of
        the global batch: those rows of it, zero where it has none."""
        out = torch.zeros_like(x)
        carried = self.delta
        if carried is None or carried.shape[1:] != x.shape[1:]:
            return out
        rows = carried[offset : offset + len(x)].to(device=x.device, dtype=x.dtype)
        out[: len(rows)] = rows
        return out

    def keep(self, delta: Tensor) -> None:
        """Store `delta` over the first rows of the carried perturbation."""
        delta = delta.detach()
        old = self.delta
        if old is None or old.shape[1:] != delta.shape[1:] or len(old) <= len(delta):
            self.delta = delta.clone()
        else:
            self.delta = torch.cat([delta, old[len(delta) :].to(delta)])


@DEFENSES.register("free-at", aliases=("free",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class FreeAT(BallDefense):
    """Free adversarial training: m replays per minibatch, one backward pass each.

    Linf only (the sign step). `loss` is the mean cross-entropy over the replays; `adv_loss` and
    `adv_correct` are those of the last replay; clean metrics come from one extra forward pass.

    Cost per batch: `replays` forward and backward passes (and optimizer steps), plus one
    forward pass.
    """

    name: ClassVar[str] = "free-at"
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    replays: int = 8  # m: replays of each minibatch, each with its own optimizer step
    step_size: float | None = None  # sign-step on delta per replay; None: eps (the paper)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.replays, int) and self.replays >= 1,
            f"replays must be >= 1, got {self.replays}",
        )
        if self.step_size is not None:
            check_finite("step_size", self.step_size, positive=True)

    @property
    def steps_per_batch(self) -> int:
        """Optimizer steps per `train_batch` call."""
        return self.replays

    def new_state(self) -> FreeState:
        return FreeState()

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        carried = ctx.state
        if not isinstance(carried, FreeState):
            raise BadInput(
                "defense 'free-at' carries its perturbation between batches: pass "
                "StepContext(..., state=defense.new_state()), the same state for every batch"
            )
        threat = self.threat_at(ctx)
        size = self.step_size if self.step_size is not None else threat.eps
        clean_loss, clean_correct = clean_metrics(module, x, y)
        x = x.detach()
        delta = carried.take(x, ctx.offset)
        total = torch.zeros((), device=x.device)
        for _ in range(self.replays):
            x_in = threat.project(x + delta, x).requires_grad_(True)
            logits = module(x_in)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            grad = x_in.grad  # x_in is a leaf: the same backward pass filled its gradient
            delta = threat.project(x_in.detach() + size * grad.sign(), x) - x
        carried.keep(ctx.gathered(delta))
        return BatchMetrics(
            loss=float(total) / self.replays,
            clean_loss=clean_loss,
            clean_correct=clean_correct,
            adv_loss=float(loss.detach()),
            adv_correct=correct(logits, y),
        )
