"""Per-sample (B,) losses that an attacker maximises.

Untargeted losses rise as the true class loses; targeted ones (`*_targeted`, labels are the
targets) rise as the target class wins.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from adversa.errors import UnknownName

LossFn = Callable[[Tensor, Tensor], Tensor]


def _true_and_best_other(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return z_y, others.amax(1)


def ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def ce_targeted(logits: Tensor, target: Tensor) -> Tensor:
    return -F.cross_entropy(logits, target, reduction="none")


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini & Wagner's margin: best other logit minus the true one (> 0 once fooled)."""
    z_y, z_other = _true_and_best_other(logits, y)
    return z_other - z_y


def margin_targeted(logits: Tensor, target: Tensor) -> Tensor:
    z_t, z_other = _true_and_best_other(logits, target)
    return z_t - z_other


def dlr(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, eq. 6); invariant to logit scale."""
    top = logits.sort(1, descending=True).values
    z_y, z_other = _true_and_best_other(logits, y)
    return (z_other - z_y) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: Tensor, target: Tensor, y: Tensor | None = None) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7): -(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2).

    Needs at least 4 classes. Without the true labels `y` (the registry's (logits, target)
    form), z_y is the largest logit other than the target's, which is the true class's logit
    as long as the true class leads the others.
    """
    top = logits.topk(4, dim=1).values
    z_t, z_other = _true_and_best_other(logits, target)
    z_y = z_other if y is None else logits.gather(1, y[:, None]).squeeze(1)
    return (z_t - z_y) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


LOSSES: dict[tuple[str, bool], LossFn] = {
    ("ce", False): ce,
    ("ce", True): ce_targeted,
    ("margin", False): margin,
    ("margin", True): margin_targeted,
    ("dlr", False): dlr,
    ("dlr", True): dlr_targeted,
}


def get_loss(name: str, targeted: bool) -> LossFn:
    try:
        return LOSSES[(name, targeted)]
    except KeyError:
        known = sorted({n for n, t in LOSSES if t == targeted})
        raise UnknownName("targeted loss" if targeted else "loss", name, known) from None


def is_adversarial(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-sample bool: the prediction hits the target (targeted) or misses the label."""
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


__all__ = ["LOSSES", "ce", "dlr", "dlr_targeted", "get_loss", "is_adversarial", "margin"]
