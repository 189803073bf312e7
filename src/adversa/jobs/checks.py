"""What every job checks before it spends time on a model: the model takes the data's
inputs, and the data's labels are classes of the model. Messages name the data as the
caller does (e.g. "--data digits")."""

from __future__ import annotations

from torch import Tensor

from adversa.checks import check_labels
from adversa.model import Model, check_model_accepts


def check_fits(model: Model, x: Tensor, y: Tensor, what: str, labels: str | None = None) -> int:
    """The number of classes `model` scores, after one forward pass on the first point of `x`
    (named `what`) and a check of `y` (named `labels`, default `what`) against them."""
    logits = check_model_accepts(model, x, data=what)
    check_labels(y, logits.shape[1], labels or what)
    return int(logits.shape[1])
