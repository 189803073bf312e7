"""Model inversion by gradient descent on the input: MIFace (Fredrikson, Jha and Ristenpart
2015, "Model Inversion Attacks that Exploit Confidence Information and Basic
Countermeasures", CCS) with the priors, normalised steps and restarts of later recipes.

For each target class y, gradient descent on the input minimises

    c(x) = L_y(x) + tv_weight * TV_beta(x)

where L_y = 1 - f_y(x) (objective="confidence", the paper's cost; f_y is the model's softmax
confidence in y) or -log f_y(x) ("log", whose gradient does not vanish where f_y is near 0,
e.g. from random starts), and TV_beta is the total-variation prior of Mahendran and Vedaldi
2015 ("Understanding Deep Image Representations by Inverting Them", CVPR): the sum over
pixels of (dh^2 + dw^2)^(beta / 2) of the image scaled to [0, 1]; beta = 1 is the classic
TV (edge-preserving), beta = 2 a smoothness prior. It stands in for the paper's denoising
Process step and applies to images (C, H, W) only.

Each step is x <- clip(x - s * d) into the model's bounds (lo, hi), with
- update="plain": d = grad c(x), s = step_size (the paper's lambda);
- update="l2": d = grad c(x) / ||grad c(x)||_2, s = step_size * (hi - lo) * sqrt(D) for D
  input values, i.e. a root-mean-square change of step_size (a share of the range) per value:
  steepest descent in L2, the normalised step with which Santurkar et al. 2019 ("Image
  Synthesis with a Single (Robust) Classifier", NeurIPS) turn a robust model's perceptually
  aligned gradients into class images. Its length does not shrink as f_y saturates.

A sample stops (its lowest-cost iterate is kept) once f_y >= gamma or its cost has not
improved for `patience` steps, as the paper's gamma and beta do. Every initialisation
("zeros", "mean" = the training mean image, "random" = seeded uniform) starts `restarts`
times: restart 0 from the initialisation itself, the others from it plus seeded Gaussian noise
of std `noise` * (hi - lo) (from fresh uniform draws for "random"); per class and
initialisation, combine="best" keeps the restart with the lowest final cost and "mean"
averages the restarts' results, which keeps what they share and cancels what each start's
noise put in (a mean of restarts, as feature-visualisation recipes average several
optimisations). All classes, initialisations and restarts run as one batch.

Cost: at most `steps` forward and backward passes of a batch of classes x inits x restarts.
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
UPDATES: tuple[str, ...] = ("plain", "l2")
DEFAULT_STEP_SIZE = {"plain": 0.1, "l2": 0.02}  # the paper's lambda; an RMS share of the range


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class InversionResult:
    """Reconstructions x[k, i] of class classes[k] from initialisation inits[i]: the best of
    `restarts` restarts, or their mean (`combine`)."""

    x: Tensor  # (K, I, *input_shape), in the model's bounds
    classes: Tensor  # (K,) int64
    inits: tuple[str, ...]
    confidence: Tensor  # (K, I) attacked model's softmax confidence in the target class
    cost: Cost
    steps_run: Tensor  # (K, I) steps until the kept restart (combine="mean": the last) stopped
    restarts: int = 1
    combine: str = "best"


def total_variation(x: Tensor, beta: float = 1.0) -> Tensor:
    """Isotropic TV_beta per sample (B,) of images (B, C, H, W), sum of (dh^2 + dw^2)^(beta/2)
    (Mahendran and Vedaldi 2015); zero for other shapes."""
    if x.dim() != 4:
        return x.new_zeros(x.shape[0])
    dh = torch.diff(x, dim=2, append=x[:, :, -1:, :])
    dw = torch.diff(x, dim=3, append=x[:, :, :, -1:])
    sq = dh.square() + dw.square()
    tv = sq if beta == 2 else (sq + 1e-12).pow(beta / 2)  # a tiny floor: finite gradient at 0
    return tv.flatten(1).sum(1)


def target_nll(logits: Tensor, target: Tensor) -> Tensor:
    """-log softmax(logits)[target] per row, as softplus(logsumexp over the other classes of
    z_j - z_target): accurate where the confidence rounds to 1 in float32, so the cost keeps
    falling (and the lowest-cost iterate keeps moving) as the logits saturate."""
    z = logits - logits.gather(1, target[:, None])
    others = z.scatter(1, target[:, None], float("-inf"))
    return torch.nn.functional.softplus(torch.logsumexp(others, 1))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MIFace:
    """Configuration of MIFace; `MIFace(...)(model, input_shape)` inverts every class."""

    steps: int = 500  # the paper's alpha (it uses 5000)
    step_size: float | None = None  # None: DEFAULT_STEP_SIZE[update]
    update: str = "plain"  # "plain": the paper's gradient step; "l2": normalised (Santurkar)
    patience: int = 100  # the paper's beta
    gamma: float = 0.99  # stop once confidence >= gamma (cost <= 1 - gamma)
    tv_weight: float = 0.0  # weight of the TV prior (0 = the paper's cost)
    tv_beta: float = 1.0  # its exponent: 1 = total variation, 2 = smoothness
    objective: str = "confidence"  # "confidence": 1 - f_y (paper); "log": -log f_y
    inits: tuple[str, ...] = ("zeros", "mean", "random")
    restarts: int = 1  # starts per initialisation, combined by `combine`
    noise: float = 0.1  # restarts after the first: Gaussian std, as a share of the range
    seed: int = 0  # draws the "random" initialisation and the restarts' noise
    combine: str = "best"  # "best": the lowest-cost restart; "mean": their average

    def __post_init__(self) -> None:
        if self.update not in UPDATES:
            raise BadInput(f"update must be one of {UPDATES}, got {self.update!r}")
        step = self.step_size
        if step is not None and not (math.isfinite(step) and step > 0):
            raise BadInput(f"step_size must be > 0 and finite, got {step}")
        for name in ("steps", "patience", "restarts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput(f"{name} must be >= 1, got {value!r}")
        if not 0.0 < self.gamma <= 1.0:
            raise BadInput(f"gamma must be in (0, 1], got {self.gamma}")
        if not (math.isfinite(self.tv_weight) and self.tv_weight >= 0):
            raise BadInput(f"tv_weight must be >= 0 and finite, got {self.tv_weight}")
        if not (math.isfinite(self.tv_beta) and self.tv_beta >= 1):
            raise BadInput(f"tv_beta must be >= 1 and finite, got {self.tv_beta}")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise BadInput(f"noise must be >= 0 and finite, got {self.noise}")
        if self.combine not in ("best", "mean"):
            raise BadInput(f"combine must be 'best' or 'mean', got {self.combine!r}")
        if self.objective not in ("confidence", "log"):
            raise BadInput(f"objective must be 'confidence' or 'log', got {self.objective!r}")
        bad = [i for i in self.inits if i not in INITS]
        if not self.inits or bad:
            raise BadInput(f"inits must be a non-empty subset of {INITS}, got {self.inits}")

    def _start(self, shape: tuple[int, ...], k: int, model: Model, mean: Tensor | None) -> Tensor:
        """Starting points (K, I, R, *shape) on the model's device."""
        lo, hi = (float(b) for b in model.bounds)
        gen = make_generator(self.seed)
        r = self.restarts
        starts = []
        for init in self.inits:
            if init == "random":
                starts.append(lo + (hi - lo) * torch.rand((k, r, *shape), generator=gen))
                continue
            if init == "zeros":
                start = torch.full((k, 1, *shape), lo)
            elif mean is None:
                raise BadInput("init 'mean' needs mean_image (the training mean)")
            else:
                start = mean.detach().float().cpu().reshape(1, 1, *shape).expand(k, 1, *shape)
            noise = self.noise * (hi - lo) * torch.randn((k, r - 1, *shape), generator=gen)
            starts.append(torch.cat([start, (start + noise).clamp(lo, hi)], 1))
        return torch.stack(starts, 1).to(model.device, model.dtype)

    def _check(self, model: Model, classes: Tensor | None) -> Tensor:
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
        return classes

    def _cost(self, model: Model, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(cost, confidence) per sample: the objective plus the TV prior."""
        lo, hi = model.bounds
        nll = target_nll(model(x).float(), target)
        prob = torch.exp(-nll.double())  # float64: below 1 until nll underflows
        cost = 1.0 - prob.float() if self.objective == "confidence" else nll
        if self.tv_weight > 0:
            cost = cost + self.tv_weight * total_variation((x - lo) / (hi - lo), self.tv_beta)
        return cost, prob

    def __call__(
        self,
        model: Model,
        input_shape: tuple[int, ...],
        classes: Tensor | None = None,
        mean_image: Tensor | None = None,
    ) -> InversionResult:
        classes = self._check(model, classes)
        if mean_image is not None and mean_image.numel() != torch.Size(input_shape).numel():
            raise ShapeError(f"mean_image has {mean_image.numel()} values, input {input_shape}")
        k, n_init, r = classes.numel(), len(self.inits), self.restarts
        lo, hi = model.bounds
        x = self._start(tuple(input_shape), k, model, mean_image).flatten(0, 2)
        target = classes.to(model.device).repeat_interleave(n_init * r)
        best_x, best_cost = x.clone(), torch.full((x.shape[0],), float("inf"), device=x.device)
        since = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        steps_run = torch.zeros_like(since)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        shape = (-1,) + (1,) * (x.dim() - 1)
        step_size = self.step_size or DEFAULT_STEP_SIZE[self.update]
        if self.update == "l2":
            step_size *= (hi - lo) * math.sqrt(x[0].numel())
        with model.counting() as counter, model.frozen():
            for _ in range(self.steps):
                x.requires_grad_(True)
                cost, prob = self._cost(model, x, target)
                (grad,) = torch.autograd.grad(cost.sum(), x)
                with torch.no_grad():
                    improved = active & (cost < best_cost)
                    best_x = torch.where(improved.view(shape), x, best_x)
                    best_cost = torch.where(improved, cost, best_cost)
                    since = torch.where(improved, 0, since + 1)
                    steps_run += active.long()
                    active &= (since < self.patience) & (prob < self.gamma)
                    if not bool(active.any()):
                        break
                    if self.update == "l2":
                        grad = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
                    step = (x - step_size * grad).clamp(lo, hi)
                    x = torch.where(active.view(shape), step, x).detach()
        rows = torch.arange(k * n_init, device=best_cost.device)
        keep = best_cost.reshape(k * n_init, r).argmin(1) + r * rows
        if self.combine == "mean":
            best_x = best_x.reshape(k * n_init, r, *best_x.shape[1:]).mean(1)
            steps_run = steps_run.reshape(k * n_init, r).amax(1)
        else:
            best_x, steps_run = best_x[keep], steps_run[keep]
        target = target[keep]
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
            restarts=r,
            combine=self.combine,
        )


def class_means(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean image (num_classes, ...) of each class of (x, y), by one index_add."""
    flat = x.reshape(x.shape[0], -1).float()
    sums = torch.zeros(num_classes, flat.shape[1]).index_add_(0, y, flat)
    counts = torch.bincount(y, minlength=num_classes).clamp_min(1).unsqueeze(1)
    return (sums / counts).reshape(num_classes, *x.shape[1:])


def _standardise(flat: Tensor) -> Tensor:
    """Each row centred and scaled to unit L2 norm (rows that are constant stay zero)."""
    centred = flat - flat.mean(1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


def nearest_class_mean(flat: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    """(class, correlation) of the class mean each row of `flat` (N, D) correlates with most,
    i.e. the nearest mean once every image and mean is centred and scaled to unit norm: a
    template match that ignores brightness and contrast."""
    corr = _standardise(flat) @ _standardise(means.reshape(means.shape[0], -1).float()).T
    best = corr.max(1)
    return best.indices, best.values


def inversion_measures(
    result: InversionResult,
    model: Model,
    x_train: Tensor,
    y_train: Tensor,
    independent: Model | None = None,
) -> dict[str, object]:
    """How recognisable the reconstructions are: the attacked (and an independently trained)
    model's rate of classifying them as their target class; the rate whose nearest class mean
    (by correlation, `nearest_class_mean`) is the target's, and their correlation with the
    target's mean; and their RMSE to the nearest training image, to the nearest training
    image of the target class, and to the target class mean."""
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
    ncm, _ = nearest_class_mean(flat_rec, means)
    own = (_standardise(flat_rec) * _standardise(means[target])).sum(1)

    def rate(hit: Tensor) -> float:
        return float(hit.float().mean())

    def per_init(hit: Tensor) -> dict[str, float]:
        return {init: rate(hit.reshape(k, n_init)[:, i]) for i, init in enumerate(result.inits)}

    attacked = model.predict(rec).cpu() == target
    out: dict[str, object] = {
        "target_rate": rate(attacked),
        "target_confidence": float(result.confidence.mean()),
        "nearest_class_mean_rate": rate(ncm == target),
        "class_mean_correlation": float(own.mean()),
        "nearest_rmse": float(d.min(1).values.mean()),
        "nearest_same_class_rmse": float(d.masked_fill(~same, float("inf")).min(1).values.mean()),
        "nearest_is_target_class": rate(y_train.cpu()[d.argmin(1)] == target),
        "class_mean_rmse": float(((flat_rec - means[target]) ** 2).mean(1).sqrt().mean()),
        "per_init_target_rate": per_init(attacked),
        "per_init_nearest_class_mean_rate": per_init(ncm == target),
    }
    if independent is not None:
        recognised = independent.predict(rec).cpu() == target
        out["independent_rate"] = rate(recognised)
        out["per_init_independent_rate"] = per_init(recognised)
    return out
