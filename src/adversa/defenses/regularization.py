"""Input-gradient regularisation (Ross & Doshi-Velez 2018, "Improving the Adversarial
Robustness and Interpretability of Deep Neural Networks by Regularizing their Input
Gradients", arXiv:1711.09404).

loss = mean CE(f(x), y) + lam * mean ||d CE(f(x), y) / dx||_2^2, the per-sample gradient of
the per-sample cross-entropy, by double backpropagation (`create_graph=True`). A small input
gradient flattens the loss around each training point, which helps against small
perturbations; it is not adversarial training and gives way at larger eps.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.defenses.base import DEFENSES, BatchMetrics, DefenseBase, StepContext
from adversa.defenses.objectives import check_finite, correct, step


@DEFENSES.register("igr", aliases=("input-gradient",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class InputGradientRegularization(DefenseBase):
    """CE plus `lam` times the squared L2 norm of the input gradient of the CE.

    Cost per batch: one forward pass, one backward pass that builds a graph, and one backward
    pass through both (about three times standard training).
    """

    name: ClassVar[str] = "igr"

    lam: float = 0.3  # weight of the squared input-gradient norm (tuned on [0, 1] digits)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("lam", self.lam)

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        x_in = x.detach().requires_grad_(True)
        logits = module(x_in)
        each = F.cross_entropy(logits, y, reduction="none")
        (grad,) = torch.autograd.grad(each.sum(), x_in, create_graph=True)
        clean_loss = each.mean()
        loss = clean_loss + self.lam * grad.flatten(1).pow(2).sum(1).mean()
        step(optimizer, loss)
        return BatchMetrics(
            loss=float(loss.detach()),
            clean_loss=float(clean_loss.detach()),
            clean_correct=correct(logits, y),
        )
