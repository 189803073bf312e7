"""The per-sample binary search over the trade-off constant c that C&W (`cw`) and EAD (`ead`)
share: both minimise distance + c * f(x') and tune c per sample."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from adversa.errors import require
from adversa.losses import is_adversarial
from adversa.model import Model

NO_UPPER = 1e10  # "no successful constant yet"


def check_search_options(
    steps: int, binary_search_steps: int, initial_const: float, lr: float, confidence: float
) -> None:
    """BadInput on the options every constant search needs."""
    require(steps >= 1, f"steps must be >= 1, got {steps}")
    require(
        binary_search_steps >= 1, f"binary_search_steps must be >= 1, got {binary_search_steps}"
    )
    require(initial_const > 0, f"initial_const must be > 0, got {initial_const}")
    require(lr > 0, f"lr must be > 0, got {lr}")
    require(confidence >= 0, f"confidence must be >= 0, got {confidence}")


def on_unbroken(
    model: Model,
    x: Tensor,
    y: Tensor,
    targeted: bool,
    search: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """`x` with `search(x_i, y_i)` applied to the points the model does not yet get wrong (one
    forward pass decides); the others are returned unchanged."""
    with torch.no_grad():
        todo = ~is_adversarial(model(x), y, targeted)
    x_out = x.clone()
    idx = torch.nonzero(todo).squeeze(1)
    if idx.numel() > 0:
        x_out[idx] = search(x[idx], y[idx])
    return x_out


def next_const(
    const: Tensor, lower: Tensor, upper: Tensor, fooled: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of the search, per sample: fooled in this round -> c may shrink (bisect down);
    not fooled -> c must grow (bisect up, or x10 while no c has fooled yet).
    Returns (const, lower, upper)."""
    upper = torch.where(fooled, torch.minimum(upper, const), upper)
    lower = torch.where(fooled, lower, torch.maximum(lower, const))
    const = torch.where(upper < NO_UPPER, (lower + upper) / 2, const * 10)
    return const, lower, upper
