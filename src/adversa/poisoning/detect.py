"""Detectors of poisoned training data. Each maps (model, x, y) to a per-sample suspicion
score (higher = more suspicious) and a bool `flagged` mask, as a `Detection`.

- "spectral": spectral signatures (Tran et al. 2018, "Spectral Signatures in Backdoor
  Attacks", arXiv:1811.00636). Per class, centre the penultimate-layer features and project
  them on the top singular vectors. The paper scores by the top vector alone; on the small
  networks here that direction is often natural class variation, so we use the top `k`
  (default 10) and score the distance to the class's coordinate-wise median there, divided by
  the class's median distance (comparable across classes). The top `flag_factor * rate * N`
  scores are flagged (the paper flags 1.5 eps per class).
- "activation-clustering" (Chen et al. 2018, "Detecting Backdoor Attacks on Deep Neural
  Networks by Activation Clustering", arXiv:1811.03728). Per class, project the features on
  their top `dims` principal components, split them by 2-means and flag the smaller cluster
  when it holds less than `max_cluster_share` of the class. Score: how much closer a sample
  is to the smaller centroid than to the larger, pushed below every score of an accepted
  class when its class was judged clean.
- "loss": the per-sample cross-entropy under the model; high-loss samples are flagged. It
  catches flipped labels, not backdoors (a trained model fits its triggers).

Cost: one forward pass over the data, then per class an SVD of an (n_c, d) matrix (and for
clustering `kmeans_iters` 2-means steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.errors import BadInput
from adversa.poisoning.base import check_rate, detection_metrics
from adversa.registry import Registry

DETECTORS: Registry[Callable[..., object]] = Registry("poison detector")


@dataclasses.dataclass(frozen=True, eq=False)
class Detection:
    """Per-sample `scores` (N,), bool `flagged` (N,), and the detector's name."""

    name: str
    scores: Tensor
    flagged: Tensor

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


@torch.no_grad()
def penultimate_features(model: object, x: Tensor, batch_size: int = 512) -> Tensor:
    """The input of the model's last `nn.Linear` (the penultimate representation), (N, d)."""
    module = _module(model)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise BadInput("the model has no nn.Linear layer to read features before")
    captured: list[Tensor] = []
    handle = linears[-1].register_forward_hook(lambda _m, inp, _o: captured.append(inp[0]))
    was_training = module.training
    module.eval()
    try:
        for i in range(0, len(x), batch_size):
            module(x[i : i + batch_size])
    finally:
        handle.remove()
        module.train(was_training)
    return torch.cat(captured).flatten(1).float()


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


@DETECTORS.register("spectral", aliases=("spectral-signatures",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class SpectralSignatures:
    """Spectral signatures (Tran et al. 2018); `rate` is the expected poison share."""

    name = "spectral"
    rate: float = 0.05
    flag_factor: float = 1.5
    k: int = 10

    def __post_init__(self) -> None:
        check_rate(self.rate)
        if self.k < 1:
            raise BadInput(f"k must be >= 1, got {self.k}")

    def __call__(self, model: object, x: Tensor, y: Tensor) -> Detection:
        feats = penultimate_features(model, x)
        scores = torch.zeros(len(y))
        for c in y.unique().tolist():
            idx = torch.nonzero(y == c).flatten()
            if idx.numel() < 2:
                continue
            centred = feats[idx] - feats[idx].mean(0)
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            z = centred @ vh[: self.k].T
            dist = (z - z.median(0).values).norm(dim=1)
            scores[idx] = dist / (dist.median() + 1e-12)
        k = min(len(y), round(self.flag_factor * self.rate * len(y)))
        flagged = torch.zeros(len(y), dtype=torch.bool)
        flagged[torch.topk(scores, k).indices] = True
        return Detection(self.name, scores, flagged)


def _two_means(z: Tensor, iters: int) -> tuple[Tensor, Tensor]:
    """2-means on rows of z, initialised at the extremes of the first coordinate."""
    centres = torch.stack([z[z[:, 0].argmin()], z[z[:, 0].argmax()]])
    for _ in range(iters):
        assign = torch.cdist(z, centres).argmin(1)
        for j in range(2):
            if bool((assign == j).any()):
                centres[j] = z[assign == j].mean(0)
    return torch.cdist(z, centres), torch.cdist(z, centres).argmin(1)


@DETECTORS.register("activation-clustering", aliases=("ac", "clustering"))
@dataclasses.dataclass(frozen=True, kw_only=True)
class ActivationClustering:
    """Activation clustering (Chen et al. 2018): per class, 2-means on the top `dims` PCA
    components of the features; the smaller cluster is poison if below `max_cluster_share`."""

    name = "activation-clustering"
    dims: int = 10
    max_cluster_share: float = 0.35
    kmeans_iters: int = 30

    def __post_init__(self) -> None:
        if self.dims < 1:
            raise BadInput(f"dims must be >= 1, got {self.dims}")
        if not 0.0 < self.max_cluster_share < 0.5:
            raise BadInput(f"max_cluster_share must be in (0, 0.5), got {self.max_cluster_share}")

    def __call__(self, model: object, x: Tensor, y: Tensor) -> Detection:
        feats = penultimate_features(model, x)
        scores = torch.full((len(y),), -3.0)
        flagged = torch.zeros(len(y), dtype=torch.bool)
        for c in y.unique().tolist():
            idx = torch.nonzero(y == c).flatten()
            if idx.numel() < 4:
                continue
            centred = feats[idx] - feats[idx].mean(0)
            _, _, vh = torch.linalg.svd(centred, full_matrices=False)
            z = centred @ vh[: self.dims].T
            dist, assign = _two_means(z, self.kmeans_iters)
            small = int((assign == 1).sum() < (assign == 0).sum())
            share = float((assign == small).float().mean())
            d_small, d_big = dist[:, small], dist[:, 1 - small]
            margin = (d_big - d_small) / (d_big + d_small + 1e-12)  # in [-1, 1]
            if share < self.max_cluster_share:
                scores[idx] = margin
                flagged[idx[assign == small]] = True
            else:
                scores[idx] = margin - 2.0  # clean class: below every accepted score
        return Detection(self.name, scores, flagged)


@DETECTORS.register("loss", aliases=("loss-filter",))
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
    """`DETECTORS.get(name, **options)`, for symmetry with `get_attack`."""
    return DETECTORS.get(name, **options)  # type: ignore[return-value]
