"""The contract between the training loop and the training-time defenses.

A defense decides what one optimizer step on a batch does; the trainer owns everything else
(data order, epochs, learning-rate schedule, checkpoints, resume, metrics, distribution).
Each defense is a frozen, keyword-only config dataclass that subclasses `DefenseBase` and is
registered by name in `DEFENSES`. It implements `train_batch`, which takes the module in train
mode, the optimizer and a batch, performs its optimizer step(s) and returns the batch's
metrics. Everything else has a default here, so the trainer asks every defense the same
questions and never probes one with `getattr`:

- `stages()`: the run's stages, `[("train", self)]`; distillation first trains a teacher.
- `with_teacher(teacher)`: the stage after a teacher stage (the default ignores it).
- `new_state()`: the mutable state carried from batch to batch (free-AT's perturbation) as a
  `DefenseState`, kept outside the frozen config; the trainer makes one per stage, hands it
  to every batch in `StepContext.state` and saves `state_dict()` in each checkpoint.
- `steps_per_batch`: optimizer steps per `train_batch` call.
- `ball()`: the threat model the defense trains against, at its full radius (None without).

A defense with an eps-ball holds it as `threat: ThreatModel`. `DEFENSES` (a `ThreatRegistry`)
also takes the threat's eps, norm and bounds flat, `DEFENSES.get("pgd-at", eps=0.3, steps=7)`,
and cards record them flat (`defense_options`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from adversa.checks import check_config_types
from adversa.errors import require
from adversa.threat import ThreatModel, ThreatRegistry, threat_options


class DefenseState:
    """Mutable state a defense carries from batch to batch: none by default. A subclass
    holds its tensors and round-trips them through `state_dict` / `load_state_dict` (plain,
    CPU values), which is what a checkpoint stores and a resumed run restores."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` gave (nothing to restore by default)."""


NO_STATE = DefenseState()  # what a batch gets when the caller keeps no state


@dataclasses.dataclass(frozen=True, slots=True)
class StepContext:
    """Where training is, for schedules and seeds.

    `step` counts optimizer-step slots from 0 over the whole run, `total` is their number,
    `epoch` the current epoch (from 0), `seed` the run's seed, and `gen` a generator seeded
    for this batch (same batch, same seed -> same draws, also after a resume). `state` is the
    defense's carried state (`defense.new_state()`, the same object for every batch of a
    stage); a defense with state refuses the stateless default.

    Data-parallel training hands each process a contiguous shard of a global batch: `offset`
    is the shard's first row in it, `rows` the global batch's size (None: the batch is whole)
    and `gather` joins every process's shard of a per-sample tensor, in order. `gen` is the
    same on every process, so a defense draws through `draw` and gets the rows a single
    process drawing for the whole batch would give its shard: K processes train as one.
    """

    step: int
    total: int
    epoch: int
    seed: int
    gen: torch.Generator
    state: DefenseState = NO_STATE
    offset: int = 0
    rows: int | None = None
    gather: Callable[[Tensor], Tensor] | None = None

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total)

    def draw(self, x: Tensor, sample: Callable[[Tensor], Tensor]) -> Tensor:
        """`sample(batch)` for the global batch `x` is a shard of, at `x`'s rows.

        `sample` must treat rows independently (each output row from its input row and the
        generator's draws, whose number depends on the shape only), as `random_start` and
        added noise do: it runs on the global shape with `x` at its rows and zeros elsewhere,
        so every process draws the whole batch's numbers (a few extra random numbers, no
        extra passes) and keeps its own.
        """
        if self.rows is None or self.rows == len(x):
            return sample(x)
        require(
            self.offset >= 0 and self.offset + len(x) <= self.rows,
            f"a shard of {len(x)} rows from row {self.offset} does not fit a batch of "
            f"{self.rows} (StepContext offset and rows)",
        )
        whole = x.new_zeros((self.rows, *x.shape[1:]))
        whole[self.offset : self.offset + len(x)] = x
        return sample(whole)[self.offset : self.offset + len(x)]

    def gathered(self, t: Tensor) -> Tensor:
        """The global batch's rows of a per-sample tensor whose shard this process holds
        (`t` itself on one process)."""
        return t if self.gather is None else self.gather(t)


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


class DefenseBase:
    """The base of every training-time defense config (see the module notes). Subclasses are
    frozen dataclasses; their `__post_init__` calls this one first, which checks each field
    against its annotation (`steps=True` is refused by name)."""

    name: ClassVar[str] = "defense"
    needs_teacher: ClassVar[bool] = False  # distillation: trained on a teacher's soft labels

    def __post_init__(self) -> None:
        check_config_types(self, f"defense {self.name!r}")

    @property
    def steps_per_batch(self) -> int:
        """Optimizer steps per `train_batch` call."""
        return 1

    def ball(self) -> ThreatModel | None:
        """The threat model trained against (full radius), None for a defense without one."""
        return None

    def stages(self) -> list[tuple[str, DefenseBase]]:
        """The run's stages as (name, defense): one "train" stage by default."""
        return [("train", self)]

    def with_teacher(self, teacher: nn.Module | None) -> DefenseBase:
        """This defense for the stage after a "teacher" stage; the default needs no teacher."""
        return self

    def new_state(self) -> DefenseState:
        """Fresh carried state for a stage (none by default)."""
        return NO_STATE

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        raise NotImplementedError(f"defense {self.name!r} does not implement train_batch")


def defense_options(defense: DefenseBase) -> dict[str, Any]:
    """A defense config's options, flat: its init fields that take part in equality, with a
    `threat` written as eps, norm and bounds (a distillation teacher is state, not an
    option). What cards and checkpoints record and `DEFENSES.get(name, **options)` reads."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(defense):  # type: ignore[arg-type]
        if not (field.init and field.compare):
            continue
        value = getattr(defense, field.name)
        if isinstance(value, ThreatModel):
            out.update(threat_options(value))
        else:
            out[field.name] = value
    return out


DEFENSES: ThreatRegistry[DefenseBase] = ThreatRegistry("defense")
