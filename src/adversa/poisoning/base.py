"""The poisoning protocol: an attack takes a training `Dataset` and a seed and returns a
`PoisonedSet` (the poisoned arrays, which indices were changed, and the trigger, if any).

Test-time helpers live here too: `apply_trigger` stamps a trigger on test inputs and
`attack_success_rate` measures a backdoor (share of triggered test inputs from classes other
than the target that the model classifies as the target). Detection metrics
(`detection_metrics`: precision, recall and ROC AUC against the known poisoned indices) are
shared by every detector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from adversa.data.dataset import Dataset
from adversa.errors import BadInput, ShapeError
from adversa.threat import ThreatModel, ThreatRegistry, threat_options

__all__ = [
    "POISONS",
    "PoisonAttack",
    "PoisonedSet",
    "Trigger",
    "apply_trigger",
    "attack_success_rate",
    "check_rate",
    "check_target",
    "detection_metrics",
    "predict_labels",
    "roc_auc",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Trigger:
    """A trigger as a pattern and a mask of one sample's shape: `x * (1 - mask) + pattern *
    mask`. BadNets is a binary mask on a patch; a blended trigger is a constant mask `alpha`."""

    pattern: Tensor  # (C, H, W) (or the sample's shape), values in the data bounds
    mask: Tensor  # same shape (or broadcastable), values in [0, 1]

    def __post_init__(self) -> None:
        try:
            torch.broadcast_shapes(self.pattern.shape, self.mask.shape)
        except RuntimeError:
            raise ShapeError(
                f"trigger mask {tuple(self.mask.shape)} does not broadcast to the pattern "
                f"{tuple(self.pattern.shape)}"
            ) from None


@dataclasses.dataclass(frozen=True, eq=False)
class PoisonedSet:
    """The output of a poisoning attack: the full poisoned training arrays (same order and
    size as the input), the indices that were changed, the trigger (None for attacks without
    one) and the target class (None for untargeted label flipping)."""

    x: Tensor
    y: Tensor
    poisoned_idx: Tensor  # int64, sorted
    trigger: Trigger | None
    target_class: int | None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def mask(self) -> Tensor:
        """Bool (N,): True at the poisoned samples."""
        out = torch.zeros(self.y.shape[0], dtype=torch.bool)
        out[self.poisoned_idx] = True
        return out

    def to_dataset(self, like: Dataset) -> Dataset:
        """The poisoned data as a `Dataset` with `like`'s metadata."""
        meta = {**like.meta, "poisoned": self.meta}
        return dataclasses.replace(like, x=self.x, y=self.y, meta=meta)


class PoisonAttack(Protocol):
    """A frozen config dataclass; `__call__(dataset, seed)` poisons a copy of the data."""

    name: str

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet: ...


POISONS: ThreatRegistry[Callable[..., PoisonAttack]] = ThreatRegistry("poisoning attack")
"""Poison configs; those that perturb inputs hold `threat: ThreatModel`, whose eps and norm
`POISONS.get` also takes flat (`POISONS.get("clean-label", eps=2.0, norm="linf")`)."""


def in_data_box(threat: ThreatModel, dataset: Dataset) -> ThreatModel:
    """`threat`'s ball inside the data's declared box: a poison perturbs the data in its own
    range, so the box always comes from `dataset.bounds`."""
    bounds = (float(dataset.bounds[0]), float(dataset.bounds[1]))
    return threat if threat.bounds == bounds else dataclasses.replace(threat, bounds=bounds)


def settings(attack: Any) -> dict[str, Any]:
    """A poison config's fields as plain values for a manifest: modules by class name, tensors
    (e.g. a target instance) left out, a threat as its eps and norm (the box is the data's)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(attack):
        value = getattr(attack, field.name)
        if isinstance(value, Tensor):
            continue
        if isinstance(value, ThreatModel):
            out.update({k: v for k, v in threat_options(value).items() if k != "bounds"})
            continue
        out[field.name] = type(value).__name__ if isinstance(value, torch.nn.Module) else value
    return out


def check_rate(rate: float) -> None:
    """`rate` must lie in the open interval (0, 1)."""
    if not 0.0 < float(rate) < 1.0:
        raise BadInput(f"rate must be in (0, 1), got {rate}")


def check_target(target_class: int, dataset: Dataset, arg: str = "target_class") -> None:
    """`target_class` must be a label of the data."""
    if not 0 <= int(target_class) < dataset.num_classes:
        raise BadInput(
            f"{arg} must be a class of {dataset.name!r} (0..{dataset.num_classes - 1}), "
            f"got {target_class}"
        )
    if not bool((dataset.y == int(target_class)).any()):
        raise BadInput(f"{arg} {target_class} does not occur in {dataset.name!r}")


def apply_trigger(x: Tensor, trigger: Trigger) -> Tensor:
    """Stamp `trigger` on every sample of `x` (N, ...); same dtype and device as `x`."""
    if tuple(x.shape[1:]) != tuple(torch.broadcast_shapes(trigger.pattern.shape, x.shape[1:])):
        raise ShapeError(
            f"trigger of shape {tuple(trigger.pattern.shape)} does not fit inputs of shape "
            f"{tuple(x.shape[1:])}"
        )
    mask = trigger.mask.to(device=x.device, dtype=x.dtype)
    pattern = trigger.pattern.to(device=x.device, dtype=x.dtype)
    return x * (1 - mask) + pattern * mask


@torch.no_grad()
def predict_labels(model: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 512) -> Tensor:
    """Argmax labels of `model` on `x`, in batches, with torch.nn.Module models in eval mode."""
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "module", None)
    was_training = module.training if isinstance(module, torch.nn.Module) else None
    if isinstance(module, torch.nn.Module):
        module.eval()
    try:
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )
    finally:
        if was_training:
            module.train()  # type: ignore[union-attr]


def attack_success_rate(
    model: Callable[[Tensor], Tensor],
    x_test: Tensor,
    y_test: Tensor,
    trigger: Trigger,
    target: int,
    batch_size: int = 512,
) -> float:
    """ASR: the share of triggered test inputs whose true class is not `target` that the
    model classifies as `target`. Cost: one forward pass over the non-target test inputs."""
    keep = y_test != int(target)
    if not bool(keep.any()):
        raise BadInput(f"no test inputs outside the target class {target}")
    pred = predict_labels(model, apply_trigger(x_test[keep], trigger), batch_size)
    return float((pred == int(target)).float().mean())


def roc_auc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive) against the bool
    labels `positive`, by the Mann-Whitney rank statistic with average ranks for ties."""
    scores = scores.detach().double().flatten().cpu()
    positive = positive.bool().flatten().cpu()
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.double)
    # average ranks over ties
    uniq, inverse = torch.unique(sorted_scores, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.double).index_add_(0, inverse, ranks[order])
    counts = torch.zeros(uniq.numel(), dtype=torch.double).index_add_(
        0, inverse, torch.ones_like(sorted_scores)
    )
    avg = torch.empty_like(scores)
    avg[order] = (sums / counts)[inverse]
    return float((avg[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(scores: Tensor, flagged: Tensor, truth: Tensor) -> dict[str, float]:
    """Precision and recall of the bool `flagged` and ROC AUC of `scores` against the bool
    ground truth `truth` (True = poisoned)."""
    flagged, truth = flagged.bool().cpu(), truth.bool().cpu()
    hits = int((flagged & truth).sum())
    n_flagged, n_true = int(flagged.sum()), int(truth.sum())
    return {
        "precision": hits / n_flagged if n_flagged else float("nan"),
        "recall": hits / n_true if n_true else float("nan"),
        "auc": roc_auc(scores, truth),
        "n_flagged": n_flagged,
        "n_poisoned": n_true,
    }
