"""MIFace model inversion (Fredrikson, Jha and Ristenpart 2015, "Model Inversion Attacks
that Exploit Confidence Information and Basic Countermeasures", CCS).

For each target class y, gradient descent on the input minimises the paper's cost

    c(x) = 1 - f_y(x) + tv_weight * TV(x)

where f_y is the model's softmax confidence in y (objective="log" uses -log f_y instead,
whose gradient does not vanish where f_y saturates near 0, e.g. from random starts) and
TV the (optional, not in the paper) anisotropic total-variation prior that stands in for
the paper's denoising Process step.
Each step is x <- clip(x - step_size * grad c(x)) into the model's bounds. A sample stops
(its best iterate is kept) once its cost is <= 1 - gamma or has not improved for `patience`
steps, as the paper's beta and gamma do. All classes and all initialisations ("zeros",
"mean" = the training mean image, "random" = seeded uniform) run as one batch.

Cost: at most `steps` forward and backward passes of a batch of classes x inits.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from adversa.errors import AccessError, BadInput, ShapeError
from adversa.model.cost import Cost
from adversa.model.wrapped import Access, Model
from adversa.privacy.membership import model_logits
from adversa.rng import make_generator

INITS: tuple[str, ...] = ("zeros", "mean", "random")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class InversionResult:
    """Reconstructions x[k, i] of class classes[k] from initialisation inits[i]."""

    x: Tensor  # (K, I, *input_shape), in the model's bounds
    classes: Tensor  # (K,) int64
    inits: tuple[str, ...]
    confidence: Tensor  # (K, I) attacked model's softmax confidence in the target class
    cost: Cost
    steps_run: Tensor  # (K, I) steps until each sample stopped


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic TV per sample (B,) of images (B, C, H, W); zero for other shapes."""
    if x.dim() != 4:
        return x.new_zeros(x.shape[0])
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).sum(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).sum(1)
    return dh + dw


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MIFace:
    """Configuration of MIFace; `MIFace(...)(model, input_shape)` inverts every class."""

    steps: int = 500  # the paper's alpha (it uses 5000)
    step_size: float = 0.1  # the paper's lambda
    patience: int = 100  # the paper's beta
    gamma: float = 0.99  # stop once confidence >= gamma (cost <= 1 - gamma)
    tv_weight: float = 0.0  # weight of the TV prior (0 = the paper's cost)
    objective: str = "confidence"  # "confidence": 1 - f_y (paper); "log": -log f_y
    inits: tuple[str, ...] = ("zeros", "mean", "random")
    seed: int = 0  # draws the "random" initialisation

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise BadInput(f"steps must be >= 1, got {self.steps}")
        if not (math.isfinite(self.step_size) and self.step_size > 0):
            raise BadInput(f"step_size must be > 0 and finite, got {self.step_size}")
        if self.patience < 1:
            raise BadInput(f"patience must be >= 1, got {self.patience}")
        if not 0.0 < self.gamma <= 1.0:
            raise BadInput(f"gamma must be in (0, 1], got {self.gamma}")
        if not (math.isfinite(self.tv_weight) and self.tv_weight >= 0):
            raise BadInput(f"tv_weight must be >= 0 and finite, got {self.tv_weight}")
        if self.objective not in ("confidence", "log"):
            raise BadInput(f"objective must be 'confidence' or 'log', got {self.objective!r}")
        bad = [i for i in self.inits if i not in INITS]
        if not self.inits or bad:
            raise BadInput(f"inits must be a non-empty subset of {INITS}, got {self.inits}")

    def _start(self, shape: tuple[int, ...], k: int, model: Model, mean: Tensor | None) -> Tensor:
        lo, hi = model.bounds
        gen = make_generator(self.seed)
        starts = []
        for init in self.inits:
            if init == "zeros":
                start = torch.full((k, *shape), float(lo))
            elif init == "mean":
                if mean is None:
                    raise BadInput("init 'mean' needs mean_image (the training mean)")
                start = mean.detach().float().cpu().reshape(shape).expand(k, *shape).clone()
            else:
                start = lo + (hi - lo) * torch.rand((k, *shape), generator=gen)
            starts.append(start)
        return torch.stack(starts, 1).to(model.device, model.dtype)  # (K, I, *shape)

    def __call__(
        self,
        model: Model,
        input_shape: tuple[int, ...],
        classes: Tensor | None = None,
        mean_image: Tensor | None = None,
    ) -> InversionResult:
        if getattr(model, "access", Access.GRADIENT) != Access.GRADIENT:
            raise AccessError(
                f"MIFace needs gradient access to {model.name!r}, which grants only "
                f"{Access(model.access).name.lower()}; pass the full Model"
            )
        if model.num_classes is None:
            raise BadInput("model.num_classes must be known to invert every class")
        if classes is None:
            classes = torch.arange(model.num_classes)
        classes = torch.as_tensor(classes, dtype=torch.long).flatten().cpu()
        if (
            classes.numel() == 0
            or int(classes.min()) < 0
            or int(classes.max()) >= model.num_classes
        ):
            raise BadInput(f"classes must lie in [0, {model.num_classes}), got {classes.tolist()}")
        if mean_image is not None and mean_image.numel() != torch.Size(input_shape).numel():
            raise ShapeError(f"mean_image has {mean_image.numel()} values, input {input_shape}")
        k, n_init = classes.numel(), len(self.inits)
        lo, hi = model.bounds
        x = self._start(tuple(input_shape), k, model, mean_image).flatten(0, 1)
        target = classes.to(model.device).repeat_interleave(n_init)
        best_x, best_cost = x.clone(), torch.full((x.shape[0],), float("inf"), device=x.device)
        since = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        steps_run = torch.zeros_like(since)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        shape = (-1,) + (1,) * (x.dim() - 1)
        with model.counting() as counter, model.frozen():
            for _ in range(self.steps):
                x.requires_grad_(True)
                logp = torch.log_softmax(model(x).float(), 1).gather(1, target[:, None])
                prob = logp.squeeze(1).exp()
                data = 1.0 - prob if self.objective == "confidence" else -logp.squeeze(1)
                cost = data + self.tv_weight * total_variation(x)
                (grad,) = torch.autograd.grad(cost.sum(), x)
                with torch.no_grad():
                    improved = active & (cost < best_cost)
                    best_x = torch.where(improved.view(shape), x, best_x)
                    best_cost = torch.where(improved, cost, best_cost)
                    since = torch.where(improved, 0, since + 1)
                    steps_run += active.long()
                    active &= (since < self.patience) & (1.0 - prob > 1.0 - self.gamma)
                    if not bool(active.any()):
                        break
                    step = (x - self.step_size * grad).clamp(lo, hi)
                    x = torch.where(active.view(shape), step, x).detach()
        confidence = (
            torch.softmax(model_logits(model, best_x), 1).gather(1, target[:, None]).squeeze(1)
        )
        return InversionResult(
            x=best_x.detach().reshape(k, n_init, *input_shape).cpu(),
            classes=classes,
            inits=tuple(self.inits),
            confidence=confidence.reshape(k, n_init).cpu(),
            cost=counter.freeze(),
            steps_run=steps_run.reshape(k, n_init).cpu(),
        )


def class_means(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean image (num_classes, ...) of each class of (x, y), by one index_add."""
    flat = x.reshape(x.shape[0], -1).float()
    sums = torch.zeros(num_classes, flat.shape[1]).index_add_(0, y, flat)
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).unsqueeze(1)
    return (sums / counts).reshape(num_classes, *x.shape[1:])


def inversion_measures(
    result: InversionResult,
    model: Model,
    x_train: Tensor,
    y_train: Tensor,
    independent: Model | None = None,
) -> dict[str, object]:
    """How good the reconstructions are: the attacked (and an independently trained) model's
    rate of classifying them as their target class, and their RMSE to the nearest training
    image, to the nearest training image of the target class, and to the target class mean."""
    k, n_init = result.x.shape[:2]
    rec = result.x.flatten(0, 1)
    target = result.classes.repeat_interleave(n_init)
    flat_rec = rec.reshape(rec.shape[0], -1).float()
    flat_train = x_train.reshape(x_train.shape[0], -1).float().cpu()
    d = torch.cdist(flat_rec, flat_train) / flat_rec.shape[1] ** 0.5  # RMSE
    same = y_train.cpu()[None, :] == target[:, None]
    means = class_means(x_train.cpu(), y_train.cpu(), model.num_classes).reshape(
        model.num_classes, -1
    )
    out: dict[str, object] = {
        "target_rate": float((model.predict(rec).cpu() == target).float().mean()),
        "target_confidence": float(result.confidence.mean()),
        "nearest_rmse": float(d.min(1).values.mean()),
        "nearest_same_class_rmse": float(d.masked_fill(~same, float("inf")).min(1).values.mean()),
        "nearest_is_target_class": float((y_train.cpu()[d.argmin(1)] == target).float().mean()),
        "class_mean_rmse": float(((flat_rec - means[target]) ** 2).mean(1).sqrt().mean()),
        "per_init_target_rate": {
            init: float((model.predict(result.x[:, i]).cpu() == result.classes).float().mean())
            for i, init in enumerate(result.inits)
        },
    }
    if independent is not None:
        pred = independent.predict(rec).cpu()
        out["independent_rate"] = float((pred == target).float().mean())
        out["per_init_independent_rate"] = {
            init: float((pred.reshape(k, n_init)[:, i] == result.classes).float().mean())
            for i, init in enumerate(result.inits)
        }
    return out
