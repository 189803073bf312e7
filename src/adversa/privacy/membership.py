"""Membership inference by a global threshold on the loss or the confidence (Yeom et al.
2018, "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting",
arXiv:1709.01604), the result type every membership attack returns, and the per-example
statistic LiRA and the shadow attack build on.

Yeom et al.'s attack says "member" when the target's loss on (x, y) is below the average
training loss; as a score it is simply -loss (or the true-class confidence), and sweeping
its threshold gives the global-threshold ROC curve every other attack is compared against.

Cost: one forward pass per candidate (score access suffices; no gradients).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor

from adversa.errors import BadInput, ShapeError
from adversa.model.cost import Cost
from adversa.model.wrapped import Model
from adversa.privacy.metrics import DEFAULT_FPRS, MembershipMetrics, membership_metrics

NO_COST = Cost()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MembershipResult:
    """Per-candidate membership scores (higher = more likely a training member)."""

    name: str  # attack name, e.g. "loss-threshold", "lira-online"
    scores: Tensor  # (N,) float
    predicted: Tensor | None = None  # (N,) bool, the attack's own decision when it has one
    cost: Cost = NO_COST  # passes through the attacked model

    def metrics(self, members: Tensor, fprs: tuple[float, ...] = DEFAULT_FPRS) -> MembershipMetrics:
        """ROC AUC, balanced accuracy and TPR at `fprs` against true membership `members`."""
        return membership_metrics(self.scores, members, fprs)


def check_candidates(x: Tensor, y: Tensor) -> None:
    if y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ShapeError(
            f"x must be (N, ...) and y (N,), got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise BadInput("x holds no candidates")


@torch.no_grad()
def model_logits(model: Model, x: Tensor, batch_size: int = 512) -> Tensor:
    """Logits (N, C) of `model` on `x`, in eval mode and batches, without gradients."""
    with model.eval_mode():
        out = [
            model(x[i : i + batch_size].to(model.device)) for i in range(0, x.shape[0], batch_size)
        ]
    return torch.cat(out).float()


def true_class_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the true class, shape logits.shape[:-1]; `logits` is (..., N, C)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    index = y.to(logits.device).expand(logp.shape[:-1]).unsqueeze(-1)
    return -logp.gather(-1, index).squeeze(-1)


def logit_confidence(logits: Tensor, y: Tensor) -> Tensor:
    """The logit-scaled confidence log(p_y / (1 - p_y)) of Carlini et al. 2022, computed
    stably as z_y - logsumexp(z_other); shape logits.shape[:-1]. Roughly Gaussian across
    training runs, which is what LiRA's per-example fits assume."""
    z = logits.float()
    index = y.to(z.device).expand(z.shape[:-1]).unsqueeze(-1)
    z_y = z.gather(-1, index).squeeze(-1)
    others = z.scatter(-1, index, float("-inf"))
    return z_y - torch.logsumexp(others, dim=-1)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdAttack:
    """Yeom et al. 2018: member iff loss <= `threshold` (or confidence >= it).

    With `threshold=None` only scores are returned (the ROC sweeps every threshold); Yeom et
    al. set it to the average training loss, which `fit_threshold` computes."""

    statistic: Literal["loss", "confidence"] = "loss"
    threshold: float | None = None
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.statistic not in ("loss", "confidence"):
            raise BadInput(f"statistic must be 'loss' or 'confidence', got {self.statistic!r}")
        if self.batch_size < 1:
            raise BadInput(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def name(self) -> str:
        return f"{self.statistic}-threshold"

    def __call__(self, model: Model, x: Tensor, y: Tensor) -> MembershipResult:
        check_candidates(x, y)
        with model.counting() as counter:
            logits = model_logits(model, x, self.batch_size)
        y = y.to(logits.device)
        # loss = softplus(-phi) and p_y = sigmoid(phi) are both monotone in phi = log(p_y /
        # (1 - p_y)); ranking by phi (computed from logits) avoids the float ties of a loss
        # that rounds to 0 on confidently fitted training points.
        scores = logit_confidence(logits.double(), y)
        if self.threshold is None:
            predicted = None
        elif self.statistic == "loss":
            predicted = torch.nn.functional.softplus(-scores) <= self.threshold
        else:
            predicted = torch.sigmoid(scores) >= self.threshold
        return MembershipResult(
            name=self.name, scores=scores.cpu(), predicted=predicted, cost=counter.freeze()
        )


def fit_threshold(model: Model, x_train: Tensor, y_train: Tensor) -> float:
    """Yeom et al.'s threshold: the model's average loss on (a sample of) its training set."""
    check_candidates(x_train, y_train)
    logits = model_logits(model, x_train)
    return float(true_class_loss(logits, y_train.to(logits.device)).mean())
