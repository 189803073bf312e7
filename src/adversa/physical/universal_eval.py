"""A universal perturbation on held-out points: the fooling rate (prediction changed from the
clean prediction, the definition of Moosavi-Dezfooli et al. 2017, arXiv:1610.08401), the
accuracy drop, both per true class, the labels fooled points go to, and the control: a random
perturbation of the same norm (`random_perturbation`), so the gain over noise is visible.

With `transforms`, every image is shown under a fresh random transformation; the clean, the
perturbed and the control image of one point share the same draw (three generators seeded
alike), so the comparison isolates the perturbation. Cost: three forward passes per point.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from adversa.checks import as_tensor, check_in_bounds
from adversa.errors import BadInput, ShapeError
from adversa.model import Model, as_model
from adversa.physical.universal import TransformFn, random_perturbation
from adversa.rng import make_generator
from adversa.threat import ThreatModel


@dataclasses.dataclass(frozen=True, slots=True)
class UniversalEvaluation:
    """Per held-out point (N,): the true label `y`, the clean prediction, the prediction with
    the perturbation and with the random control; `summary()` is the report's part."""

    y: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    control_pred: Tensor
    num_classes: int

    @property
    def fooled(self) -> Tensor:
        return self.adv_pred != self.clean_pred

    @property
    def fooling_rate(self) -> float:
        return float(self.fooled.double().mean())

    @property
    def control_fooling_rate(self) -> float:
        return float((self.control_pred != self.clean_pred).double().mean())

    def summary(self) -> dict[str, Any]:
        """fooling_rate, accuracies, per_class, dominant labels and the random baseline."""
        clean_acc = float((self.clean_pred == self.y).double().mean())
        adv_acc = float((self.adv_pred == self.y).double().mean())
        control_acc = float((self.control_pred == self.y).double().mean())
        k = self.num_classes
        count = torch.bincount(self.y, minlength=k)

        def by_class(flags: Tensor) -> list[float | None]:
            hits = torch.bincount(self.y, weights=flags.double(), minlength=k)
            return [None if n == 0 else float(h / n) for h, n in zip(hits, count, strict=True)]

        columns = {
            "fooling_rate": by_class(self.fooled),
            "clean_accuracy": by_class(self.clean_pred == self.y),
            "perturbed_accuracy": by_class(self.adv_pred == self.y),
            "baseline_fooling_rate": by_class(self.control_pred != self.clean_pred),
        }
        per_class = [
            {"class": c, "n": int(count[c]), **{name: col[c] for name, col in columns.items()}}
            for c in range(k)
        ]
        landing = torch.bincount(self.adv_pred[self.fooled], minlength=k)
        dominant = int(landing.argmax())
        n_fooled = int(self.fooled.sum())
        return {
            "fooling_rate": self.fooling_rate,
            "clean_accuracy": clean_acc,
            "perturbed_accuracy": adv_acc,
            "accuracy_drop": clean_acc - adv_acc,
            "per_class": per_class,
            "dominant_label": dominant if n_fooled else None,
            "dominant_label_share": float(landing[dominant] / n_fooled) if n_fooled else 0.0,
            "baseline": {
                "kind": "random perturbation of the same norm",
                "fooling_rate": self.control_fooling_rate,
                "perturbed_accuracy": control_acc,
                "accuracy_drop": clean_acc - control_acc,
            },
            "gain_over_baseline": self.fooling_rate - self.control_fooling_rate,
            "n": int(self.y.shape[0]),
        }


def evaluate_universal(
    model: Model | torch.nn.Module,
    perturbation: Tensor,
    x: Tensor,
    y: Tensor,
    *,
    threat: ThreatModel,
    seed: int = 0,
    transforms: TransformFn | None = None,
    batch_size: int = 256,
) -> UniversalEvaluation:
    """`perturbation` (the shape of one input) on the points `x` (N, ...) with labels `y`,
    beside a random perturbation of `threat`'s norm and eps drawn with `seed`."""
    model = as_model(model, threat.bounds)
    x = as_tensor(x, "x").to(model.device)
    y = as_tensor(y, "y").to(model.device).long()
    v = as_tensor(perturbation, "perturbation").to(model.device, x.dtype)
    if x.dim() < 2 or x.shape[0] == 0 or y.shape != x.shape[:1]:
        raise ShapeError(
            f"x must be (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if tuple(v.shape) != tuple(x.shape[1:]):
        raise ShapeError(
            f"the perturbation has shape {tuple(v.shape)}, the inputs {tuple(x.shape[1:])}"
        )
    check_in_bounds(x, threat.bounds)
    if batch_size < 1:
        raise BadInput(f"batch_size must be >= 1, got {batch_size}")
    num_classes = model.resolve_num_classes(x[:1])
    control = random_perturbation(threat, v, make_generator(seed, model.device))
    gens = [make_generator(seed + 1, model.device) for _ in range(3)]
    preds: list[list[Tensor]] = [[], [], []]
    with model.frozen(), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            for out, gen, delta in zip(preds, gens, (None, v, control), strict=True):
                shown = xb if delta is None else threat.clip(xb + delta)
                if transforms is not None:
                    shown = transforms(shown, gen, threat.bounds)
                out.append(model(shown).argmax(1))
    clean, adv, ctrl = (torch.cat(p) for p in preds)
    return UniversalEvaluation(y, clean, adv, ctrl, max(num_classes, int(y.max()) + 1))
