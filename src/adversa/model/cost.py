"""What an attack costs: forward and backward passes (per sample), black-box queries, seconds.

`Cost` is the frozen result; `CostCounter` the tally of one open scope; `CostMeter` the set of
scopes open on one model, shared by every view derived from it (`Model.derive`), so that a
pass through any view is counted once, in the same scopes, whichever view made it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from torch import Tensor


@dataclasses.dataclass(frozen=True, slots=True)
class Cost:
    """Counts are per sample: a forward pass on a batch of 32 adds 32 to `forward`.

    `forward` counts every forward pass, black-box queries included: a query through a
    scores-only or labels-only view adds to both `forward` and `queries`, so `queries` is
    the black-box share of `forward`, not an extra cost. `backward` counts the passes in
    which autograd flows back through the model's logits.
    """

    forward: int = 0
    backward: int = 0
    queries: int = 0
    seconds: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.forward + other.forward,
            self.backward + other.backward,
            self.queries + other.queries,
            self.seconds + other.seconds,
        )

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True, eq=False)
class CostCounter:
    """Mutable tallies a `Model` adds to while a counting scope is open. Compared by identity:
    nested scopes may hold equal tallies, and each must close its own."""

    forward: int = 0
    backward: int = 0
    queries: int = 0

    def freeze(self, seconds: float = 0.0) -> Cost:
        return Cost(self.forward, self.backward, self.queries, seconds)


class CostMeter:
    """The counting scopes open on one model and on every view derived from it.

    `scope()` opens a scope and yields its `CostCounter`; `record(logits, n)` counts one
    forward pass of `n` samples in every open scope and hooks `logits` so that each backward
    pass through them counts too; `add(cost)` adds a cost measured elsewhere (the transfer
    attack's surrogate passes) to every open scope.
    """

    __slots__ = ("_scopes",)

    def __init__(self) -> None:
        self._scopes: list[CostCounter] = []

    @contextlib.contextmanager
    def scope(self) -> Iterator[CostCounter]:
        counter = CostCounter()
        self._scopes.append(counter)
        try:
            yield counter
        finally:
            self._scopes.remove(counter)

    def record(self, logits: Tensor, n: int) -> None:
        scopes = tuple(self._scopes)
        for counter in scopes:
            counter.forward += n
        if scopes and logits.requires_grad:

            def count_backward(grad: Tensor) -> None:
                for counter in scopes:
                    counter.backward += n

            logits.register_hook(count_backward)

    def add(self, cost: Cost) -> None:
        for counter in self._scopes:
            counter.forward += cost.forward
            counter.backward += cost.backward
            counter.queries += cost.queries
