"""Jacobian-based dataset augmentation (Papernot et al. 2017, "Practical Black-Box Attacks
against Machine Learning", arXiv:1602.02697, Algorithm 1).

Start from a small seed set drawn from the pool; each substitute epoch labels the new points
with the target's top-1 output, trains the substitute on every point labelled so far and
grows the set with x + lambda * sign(d F_label(x) / dx), the sign of the *substitute's*
Jacobian row of the label the target gave (so the target is never differentiated). lambda
flips sign every `tau` rounds (the paper's periodic step size) and the new points are clipped
to the model's bounds. The set doubles each round until the budget is spent; the last round is
truncated so that exactly `queries` inputs are sent. Cost: `queries` target queries, one
substitute training and one substitute backward pass over the set per round.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from adversa.errors import require
from adversa.extraction.base import ExtractionBase, query, register_extraction
from adversa.extraction.copycat import draw
from adversa.model import Model


@register_extraction("jbda")
@dataclasses.dataclass(frozen=True, kw_only=True)
class JBDA(ExtractionBase):
    """Papernot et al.'s substitute training with Jacobian-based augmentation."""

    seed_size: int = 150  # initial points drawn from the pool (the paper: 150 for MNIST)
    step: float = 0.1  # lambda, the augmentation step in input units
    tau: int = 3  # lambda changes sign every tau rounds

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.seed_size >= 1, f"seed_size must be >= 1, got {self.seed_size}")
        require(self.step > 0, f"step must be > 0, got {self.step}")
        require(self.tau >= 1, f"tau must be >= 1, got {self.tau}")

    def _extract(self, api: Model, pool: Tensor, gen: torch.Generator) -> tuple[nn.Module, dict]:
        lo, hi = api.bounds
        x_new = draw(pool, min(self.seed_size, self.queries), gen)
        xs, labels, rounds = [], [], 0
        budget = self.queries
        while True:
            xs.append(x_new)
            labels.append(query(api, x_new).argmax(1))
            budget -= x_new.shape[0]
            x, y = torch.cat(xs), torch.cat(labels)
            copy = self.fit(x, y, api.num_classes, gen)
            rounds += 1
            if budget <= 0:
                return copy, {"rounds": rounds, "transfer_set": int(x.shape[0])}
            sign = 1.0 if (rounds - 1) // self.tau % 2 == 0 else -1.0
            x_new = augment(copy, x, y, sign * self.step, (lo, hi))[:budget]


def augment(
    net: nn.Module, x: Tensor, y: Tensor, step: float, bounds: tuple[float, float]
) -> Tensor:
    """x + step * sign(d net(x)[y] / dx), clipped to `bounds`, in one batched backward pass."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).gather(1, y[:, None]).sum(), x)
    return (x + step * grad.sign()).clamp(*bounds).detach()
