"""Training-time defenses. Importing this package registers the empirical defenses in
`DEFENSES`; `adversa.train` adds the certified-training ones from `adversa.certify.training`.

A defense is a frozen config subclassing `DefenseBase` whose `train_batch(module, optimizer,
x, y, ctx)` performs one batch's optimizer step(s) and returns `BatchMetrics`; the trainer owns
everything else (see `adversa.defenses.base`).
"""

from adversa.defenses import (  # noqa: F401  (registration)
    adversarial,
    distillation,
    fast,
    free,
    objectives,
    regularization,
)
from adversa.defenses.base import (
    DEFENSES,
    BatchMetrics,
    DefenseBase,
    DefenseState,
    StepContext,
    defense_options,
)


def list_defenses(pattern: str = "*") -> list[str]:
    return DEFENSES.list(pattern)


__all__ = [
    "DEFENSES",
    "BatchMetrics",
    "DefenseBase",
    "DefenseState",
    "StepContext",
    "defense_options",
    "list_defenses",
]
