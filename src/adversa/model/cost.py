"""What an attack costs: forward and backward passes (per sample), black-box queries, seconds."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Cost:
    """Counts are per sample: a forward pass on a batch of 32 adds 32 to `forward`.

    `forward` counts every forward pass, black-box queries included: a query through a
    `ScoresOnly` or `LabelsOnly` view adds to both `forward` and `queries`, so `queries` is
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
