"""Fast gradient sign method (Goodfellow, Shlens & Szegedy, 2015, "Explaining and Harnessing
Adversarial Examples", arXiv:1412.6572): one step of size eps along the sign of the loss
gradient. Under L2 and L1 it takes the normalised-gradient (fast gradient method) step.

Cost per sample: one forward and one backward pass, plus the clean and final checks.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.attacks.gradient import Ascent, gradient_ascent
from adversa.losses import get_loss
from adversa.model import Model


@register_attack("fgsm", aliases=("fgm",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class FGSM(AttackBase):
    loss: str = "ce"  # "ce" or "margin"
    clean_check: bool = True  # False: the caller vouches every point is classified correctly

    def __post_init__(self) -> None:
        super().__post_init__()
        get_loss(self.loss, self.threat.targeted)

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        return gradient_ascent(
            model,
            self.threat,
            x,
            y,
            loss_fn=get_loss(self.loss, self.threat.targeted),
            plan=Ascent(
                steps=1,
                step_size=self.threat.eps,
                random_start=False,
                l1_sparsity=0.0,
                final_eval=False,  # the harness's verification is the step's evaluation
            ),
            gen=gen,
            clean_check=self.clean_check,
        )
