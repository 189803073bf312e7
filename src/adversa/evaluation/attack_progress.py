"""Progress of one attack's turn in the battery's cascade, counted in points.

The battery attacks the points still robust in batches. Reporting only when a batch ends
would leave the count at 0 until the end whenever the points fit in one batch (n below the
batch size), so within a batch the points are counted by the model passes the attack has made
so far against the passes it is expected to make: its step or query budget (`steps`,
`queries` or `max_queries` from `attack.config()`, times `n_target_classes` and
`binary_search_steps` where it has them, plus the start and the harness's verification), then,
from the second batch on, the most any earlier batch of this attack made. The share shown is
the share of the budget up to 80%, then creeps towards the whole batch without reaching it
(an early-stopping attack ends before its budget; FAB and HopSkipJump make more than one pass
per step); the exact count is reported when the batch ends. Every 16 passes the count is
reported even when unchanged, so that a log shows long batches moving. Passes are seen
through a forward hook on the model's module (a TorchScript module takes no hooks: its
batches are counted whole). Nothing here changes what the attack computes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

ProgressFn = Callable[[str, int, int], None]  # (description, completed, total)
KNEE = 0.8  # the share of the budget up to which the shown share follows it exactly
EVERY = 16  # passes between two reports with an unchanged count
_BUDGET_KEYS = ("steps", "queries", "max_queries")
_FACTOR_KEYS = ("n_target_classes", "binary_search_steps")


def pass_budget(config: dict[str, Any]) -> int | None:
    """The model passes an attack with hyper-parameters `config` is expected to make on one
    batch, or None when its config states no budget (single-step or wrapped attacks)."""
    base = next((config[k] for k in _BUDGET_KEYS if _count(config.get(k))), None)
    if base is None:
        return None
    for key in _FACTOR_KEYS:
        if _count(config.get(key)):
            base *= config[key]
    return base + 2


def batch_share(passes: int, budget: int) -> float:
    """The share of a batch shown after `passes` of an expected `budget`: equal to
    passes / budget up to KNEE, then rising towards 1 (never reaching it) with the same
    slope at the knee."""
    ratio = passes / budget
    if ratio <= KNEE:
        return ratio
    return 1.0 - (1.0 - KNEE) * math.exp(-(ratio - KNEE) / (1.0 - KNEE))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class AttackProgress:
    """Calls `progress(label, points, total)` while one attack runs over `total` points in
    batches: once at the start (0), as passes accrue within each batch, and at each batch's
    end. With `progress=None` it does nothing."""

    def __init__(
        self, progress: ProgressFn | None, label: str, total: int, config: dict[str, Any]
    ) -> None:
        self.progress, self.label, self.total = progress, label, total
        self.budget = pass_budget(config)
        self.done = 0
        if progress is not None and total > 0:
            progress(label, 0, total)

    @contextlib.contextmanager
    def batch(self, module: nn.Module, size: int) -> Iterator[None]:
        """Count the passes of `module` while the block attacks a batch of `size` points."""
        progress = self.progress
        if progress is None:
            yield
            return
        passes, shown = 0, self.done

        def on_pass(*_: object) -> None:
            nonlocal passes, shown
            passes += 1
            part = min(int(size * batch_share(passes, self.budget)), size - 1) if self.budget else 0
            if self.done + part > shown or passes % EVERY == 0:
                shown = max(shown, self.done + part)
                progress(self.label, shown, self.total)

        try:
            handle = module.register_forward_hook(on_pass)
        except RuntimeError:  # a ScriptModule: no hooks
            handle = None
        try:
            yield
        finally:
            if handle is not None:
                handle.remove()
        self.budget = max(self.budget or 0, passes) or None
        self.done += size
        progress(self.label, self.done, self.total)
