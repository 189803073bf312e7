"""Detectors of poisoned training data. Each maps (model, x, y) to a per-sample suspicion
score (higher = more suspicious) and a bool `flagged` mask, as a `Detection`.

- "spectral": spectral signatures (Tran et al. 2018, "Spectral Signatures in Backdoor
  Attacks", arXiv:1811.00636) with whitening in the spirit of SPECTRE (Hayase et al. 2021,
  "SPECTRE: Defending Against Backdoor Attacks Using Robust Statistics", arXiv:2104.11315).
  Per class, centre the penultimate-layer features and whiten them with the pooled
  within-class covariance of the *other* classes (an estimate of clean within-class spread
  that the class's own poisons cannot inflate; shrunk by 1% of its mean variance). The top
  singular direction of the whitened class is its spectral signature. Along it a 1-D
  2-means splits the class; the class whose split is best separated (gap between the two
  centroids over the within-group std) is flagged. Score: the projection, centred at the
  midpoint of the centroids and divided by the within-group std, oriented so that the group
  farther from the other classes' mean is positive (a trigger adds features no clean class
  has; on MNIST this orientation was right in 16 of 16 runs where the sign of the third
  moment, the minority side, failed once the poisons reached half their class). Tran et al.
  score the squared projection; with poisons a third of their class the class mean sits
  between the groups and the square ranks clean tails as high as poisons, so the sign is
  kept. The top `flag_factor * rate * N` scores of the flagged class are flagged (the paper
  removes 1.5 times the expected number of poisons); every other class's scores are shifted
  below the flagged class's. `method="tran"` keeps the previous unwhitened variant (top `k`
  directions, distance to the class median, every class scored alike).
- "activation-clustering": Chen et al. 2018, in `adversa.poisoning.clustering` (registered
  here when the package is imported).
- "loss": the per-sample cross-entropy under the model; high-loss samples are flagged. It
  catches flipped labels, not backdoors (a trained model fits its triggers).

Cost: one forward pass over the data, then per class an SVD of an (n_c, d) matrix (and for
"spectral" a d x d Cholesky factorisation and a triangular solve).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.errors import BadInput
from adversa.poisoning.base import check_rate, detection_metrics
from adversa.registry import Registry

POISON_DETECTORS: Registry[Callable[..., object]] = Registry("poison detector")


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """Per-sample `scores` (N,), bool `flagged` (N,), the detector's name, and what the
    detector decided per class, if it decides per class (plain values, for reports)."""

    name: str
    scores: Tensor
    flagged: Tensor
    classes: tuple[dict[str, Any], ...] = ()

    @property
    def flagged_idx(self) -> Tensor:
        return torch.nonzero(self.flagged).flatten()

    def metrics(self, poisoned_idx: Tensor) -> dict[str, float]:
        truth = torch.zeros_like(self.flagged)
        truth[poisoned_idx] = True
        return detection_metrics(self.scores, self.flagged, truth)


def _module(model: object) -> nn.Module:
    module = model if isinstance(model, nn.Module) else getattr(model, "module", None)
    if not isinstance(module, nn.Module):
        raise BadInput(f"need a torch.nn.Module (or adversa Model), got {type(model).__name__}")
    return module


def last_linear(model: object) -> nn.Linear:
    """The model's last `nn.Linear` (its classification head)."""
    linears = [m for m in _module(model).modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BadInput("the model has no nn.Linear layer to read features before")
    return linears[-1]


def penultimate(model: object, x: Tensor) -> Tensor:
    """The input of the model's last `nn.Linear` for the batch `x`, (B, d), differentiable
    with respect to `x` (the caller decides on eval mode and no_grad)."""
    module = _module(model)
    captured: list[Tensor] = []
    handle = last_linear(module).register_forward_hook(lambda _m, inp, _o: captured.append(inp[0]))
    try:
        module(x)
    finally:
        handle.remove()
    return captured[0].flatten(1)


@torch.no_grad()
def penultimate_features(model: object, x: Tensor, batch_size: int = 512) -> Tensor:
    """The input of the model's last `nn.Linear` (the penultimate representation), (N, d)."""
    module = _module(model)
    last_linear(module)  # fail before any work when there is none
    was_training = module.training
    module.eval()
    try:
        parts = [penultimate(module, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        module.train(was_training)
    return torch.cat(parts).float()


@torch.no_grad()
def per_sample_loss(model: object, x: Tensor, y: Tensor, batch_size: int = 512) -> Tensor:
    module = _module(model)
    was_training = module.training
    module.eval()
    try:
        return torch.cat(
            [
                F.cross_entropy(
                    module(x[i : i + batch_size]), y[i : i + batch_size], reduction="none"
                )
                for i in range(0, len(x), batch_size)
            ]
        )
    finally:
        module.train(was_training)


@POISON_DETECTORS.register("spectral", aliases=("spectral-signatures",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class SpectralSignatures:
    """Spectral signatures (Tran et al. 2018), whitened (Hayase et al. 2021); `rate` is the
    expected poison share of the whole set."""

    name = "spectral"
    rate: float = 0.05
    flag_factor: float = 1.5
    method: str = "whitened"  # "whitened" (flag one class) or "tran" (every class alike)
    k: int = 10  # directions of the "tran" method
    shrinkage: float = 0.01  # ridge added to the whitening covariance, times its mean variance

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if self.k < 1:
            raise BadInput(f"k must be >= 1, got {self.k}")
        if self.method not in ("whitened", "tran"):
            raise BadInput(f"method must be 'whitened' or 'tran', got {self.method!r}")
        if not self.flag_factor > 0:
            raise BadInput(f"flag_factor must be > 0, got {self.flag_factor}")
        if not self.shrinkage > 0:
            raise BadInput(f"shrinkage must be > 0, got {self.shrinkage}")

    def __call__(self, model: object, x: Tensor, y: Tensor) -> Detection:
        feats = penultimate_features(model, x).double()
        n_flag = min(len(y), round(self.flag_factor * self.rate * len(y)))
        if self.method == "tran":
            return self._tran(feats, y, n_flag)
        members, whitened = whiten_classes(feats, y, self.shrinkage)
        scores = torch.zeros(len(y), dtype=feats.dtype)
        separation: dict[int, float] = {}
        for c, (white, chol) in whitened.items():
            _, _, vh = torch.linalg.svd(white, full_matrices=False)
            proj = white @ vh[0]
            others = feats[y != c].mean(0) - feats[members[c]].mean(0)
            towards_others = float(
                torch.linalg.solve_triangular(chol, others[:, None], upper=False)[:, 0] @ vh[0]
            )
            lo, hi, spread = _split_1d(proj)
            separation[c] = float((hi - lo) / spread)
            hi_is_far = abs(float(hi) - towards_others) > abs(float(lo) - towards_others)
            sign = 1.0 if hi_is_far else -1.0
            scores[members[c]] = sign * (proj - (lo + hi) / 2) / spread
        flagged_class = max(separation, key=separation.__getitem__)
        inside = members[flagged_class]
        floor = scores[inside].min()
        outside = torch.ones(len(y), dtype=torch.bool)
        outside[inside] = False
        scores[outside] = scores[outside] - scores[outside].max() + floor - 1.0
        flagged = torch.zeros(len(y), dtype=torch.bool)
        top = torch.topk(scores[inside], min(n_flag, inside.numel())).indices
        flagged[inside[top]] = True
        return Detection(self.name, scores.float(), flagged)

    def _tran(self, feats: Tensor, y: Tensor, n_flag: int) -> Detection:
        scores = torch.zeros(len(y), dtype=feats.dtype)
        for c in y.unique().tolist():
            idx = torch.nonzero(y == c).flatten()
            if idx.numel() < 2:
                continue
            z = _top_components(feats[idx], self.k)
            dist = (z - z.median(0).values).norm(dim=1)
            scores[idx] = dist / (dist.median() + 1e-12)
        flagged = torch.zeros(len(y), dtype=torch.bool)
        flagged[torch.topk(scores, n_flag).indices] = True
        return Detection(self.name, scores.float(), flagged)


def _split_1d(values: Tensor, iters: int = 30) -> tuple[Tensor, Tensor, Tensor]:
    """1-D 2-means from the quartiles: (low centroid, high centroid, within-group std)."""
    lo, hi = values.quantile(0.25), values.quantile(0.75)
    for _ in range(iters):
        low = (values - lo).abs() <= (values - hi).abs()
        if bool(low.all()) or not bool(low.any()):
            break
        lo, hi = values[low].mean(), values[~low].mean()
    low = (values - lo).abs() <= (values - hi).abs()
    within = torch.where(low, values - lo, values - hi)
    return lo, hi, within.std().clamp_min(1e-12)


def _top_components(feats: Tensor, k: int) -> Tensor:
    """The rows of `feats`, centred, projected on their top `k` principal directions."""
    centred = feats - feats.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:k].T


def whiten_classes(
    feats: Tensor, y: Tensor, shrinkage: float = 0.01
) -> tuple[dict[int, Tensor], dict[int, tuple[Tensor, Tensor]]]:
    """Per class c with >= 2 samples: its indices, and its centred features whitened by the
    pooled within-class covariance of the *other* classes (shrunk by `shrinkage` times its
    mean variance), with that covariance's Cholesky factor: ({c: idx}, {c: (white, chol)}).
    A class's own poisons cannot inflate the spread it is measured against."""
    classes = [c for c in y.unique().tolist() if int((y == c).sum()) >= 2]
    if len(classes) < 2:
        raise BadInput("whitening by the other classes needs >= 2 classes with >= 2 samples")
    members = {c: torch.nonzero(y == c).flatten() for c in classes}
    centred = {c: feats[i] - feats[i].mean(0) for c, i in members.items()}
    scatter = {c: z.T @ z for c, z in centred.items()}
    total = sum(scatter.values())
    eye = torch.eye(feats.shape[1], dtype=feats.dtype)
    whitened: dict[int, tuple[Tensor, Tensor]] = {}
    for c in classes:
        rest = len(y) - members[c].numel()
        cov = (total - scatter[c]) / max(rest - 1, 1)
        cov = cov + shrinkage * cov.diagonal().mean().clamp_min(1e-12) * eye
        chol = torch.linalg.cholesky(cov)
        white = torch.linalg.solve_triangular(chol, centred[c].T, upper=False).T
        whitened[c] = (white, chol)
    return members, whitened


@POISON_DETECTORS.register("loss", aliases=("loss-filter",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class LossFilter:
    """Flag the `rate` share of samples with the highest loss under the model."""

    name = "loss"
    rate: float = 0.05

    def __post_init__(self) -> None:
        check_rate(self.rate)

    def __call__(self, model: object, x: Tensor, y: Tensor) -> Detection:
        scores = per_sample_loss(model, x, y)
        k = max(1, round(self.rate * len(y)))
        flagged = torch.zeros(len(y), dtype=torch.bool)
        flagged[torch.topk(scores, k).indices] = True
        return Detection(self.name, scores, flagged)


def get_detector(name: str, **options: object) -> Callable[..., Detection]:
    """`POISON_DETECTORS.get(name, **options)`, for symmetry with `get_attack`."""
    return POISON_DETECTORS.get(name, **options)  # type: ignore[return-value]
