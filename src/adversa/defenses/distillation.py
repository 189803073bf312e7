"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami 2016, "Distillation as a
Defense to Adversarial Perturbations against Deep Neural Networks", arXiv:1511.04508).

Two stages with the same architecture: a teacher trained with its softmax at temperature T
(`Standard(temperature=T)`, i.e. defense "none" with `temperature=T`), then a student, from a
fresh initialisation, trained at the same T on the teacher's soft labels softmax(z_t / T).
The student is deployed at temperature 1: its logits are about T times larger than those of a
normally trained network, so the softmax saturates and the cross-entropy gradient underflows
to zero. That is gradient masking, not robustness: attacks on the logits (C&W's margin loss,
PGD with loss="margin") break the student about as well as an undistilled network (Carlini &
Wagner 2016, "Defensive Distillation is Not Robust to Adversarial Examples",
arXiv:1607.04311). It is here for study and for testing evaluations, not for protection.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.defenses.base import DEFENSES, BatchMetrics, DefenseBase, StepContext
from adversa.defenses.objectives import Standard, ce_value, check_finite, correct, step
from adversa.errors import BadInput, require
from adversa.model import Model


@DEFENSES.register("distillation", aliases=("defensive-distillation",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class Distillation(DefenseBase):
    """The student stage: cross-entropy at temperature T against the teacher's soft labels.

    `teacher` is the trained teacher (any module mapping the batch to logits, on the batch's
    device); it runs in eval mode without gradients. Without one, `train_batch` raises: the
    trainer first trains a teacher with `teacher_stage()` (see docs/architecture.md).

    Cost per batch: one forward pass of the teacher, one forward and one backward pass of the
    student.
    """

    name: ClassVar[str] = "distillation"
    needs_teacher: ClassVar[bool] = True

    temperature: float = 100.0  # T for the teacher's training, its soft labels and the student
    teacher: nn.Module | None = dataclasses.field(
        default=None, repr=False, compare=False
    )  # the teacher trained at `temperature`; None until the trainer's first stage gives one

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("temperature", self.temperature, positive=True)
        require(
            self.teacher is None or isinstance(self.teacher, nn.Module),
            f"teacher must be a torch.nn.Module, got {type(self.teacher).__name__}",
        )

    def teacher_stage(self) -> Standard:
        """The defense that trains the teacher: cross-entropy with the softmax at T."""
        return Standard(temperature=self.temperature)

    def stages(self) -> list[tuple[str, DefenseBase]]:
        """Without a teacher: ("teacher", `teacher_stage()`), then ("student", self)."""
        if self.teacher is None:
            return [("teacher", self.teacher_stage()), ("student", self)]
        return [("train", self)]

    def with_teacher(self, teacher: nn.Module | None) -> Distillation:
        return dataclasses.replace(self, teacher=teacher)

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        if self.teacher is None:
            raise BadInput(
                "defense 'distillation' needs a teacher: train one with defense 'none' and "
                f"temperature={self.temperature:g} (distillation.teacher_stage()), then pass "
                "it as teacher="
            )
        teacher = Model(self.teacher)
        with torch.no_grad(), teacher.eval_mode():
            soft = F.softmax(teacher(x) / self.temperature, dim=1)
        logits = module(x)
        loss = -(soft * F.log_softmax(logits / self.temperature, dim=1)).sum(1).mean()
        step(optimizer, loss)
        return BatchMetrics(
            loss=float(loss.detach()),
            clean_loss=ce_value(logits, y),
            clean_correct=correct(logits, y),
        )
