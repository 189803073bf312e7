"""The contract between the training loop and the training-time defenses.

A defense decides what one optimizer step on a batch does; the trainer owns everything else
(data order, epochs, learning-rate schedule, checkpoints, resume, metrics, distribution).
Each defense is a frozen, keyword-only config dataclass registered by name in `DEFENSES`, with
one method, `train_batch`, that takes the module in train mode, the optimizer and a batch, and
performs its optimizer step(s), returning the batch's metrics.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from adversa.registry import Registry


@dataclasses.dataclass(frozen=True, slots=True)
class StepContext:
    """Where training is, for schedules and seeds.

    `step` counts optimizer-step slots from 0 over the whole run, `total` is their number,
    `epoch` the current epoch (from 0), `seed` the run's seed, and `gen` a generator seeded
    for this batch (same batch, same seed -> same draws, also after a resume).
    """

    step: int
    total: int
    epoch: int
    seed: int
    gen: torch.Generator

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total)


@dataclasses.dataclass(frozen=True, slots=True)
class BatchMetrics:
    """Per-batch numbers the trainer averages into the epoch's `metrics.jsonl` line.

    `loss` is the objective that was minimised; `clean_loss`/`clean_correct` are on the clean
    batch and `adv_loss`/`adv_correct` on the batch the defense trained against (None for
    defenses without adversarial examples). Correct counts are numbers of samples.
    """

    loss: float
    clean_loss: float
    clean_correct: int
    adv_loss: float | None = None
    adv_correct: int | None = None


class Defense(Protocol):
    name: ClassVar[str]

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics: ...


DEFENSES: Registry[Defense] = Registry("defense")
