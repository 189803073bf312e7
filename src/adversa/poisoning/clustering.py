"""Activation clustering (Chen et al. 2018, "Detecting Backdoor Attacks on Deep Neural Networks
by Activation Clustering", arXiv:1811.03728), registered as "activation-clustering".

The paper: per class, take the last hidden layer's activations of the training samples,
reduce them to 10 dimensions (ICA), split them by 2-means, and call the class poisoned when
one cluster is small (relative size) or the split fits well (silhouette score); the poisons
are that cluster. Here:

1. Features: the input of the model's last `nn.Linear` (`penultimate_features`).
2. Whitening (our addition): each class is centred and whitened by the pooled within-class
   covariance of the *other* classes, as in SPECTRE (Hayase et al. 2021, arXiv:2104.11315).
   On the small CNNs `adversa train` produces, the raw top directions are the natural
   variation of a class (slant, stroke width): raw PCA + 2-means split every MNIST class
   about 45/55 and missed the poisons (AUC 0.72-0.74). After whitening the trigger's
   direction, which no clean class varies along, dominates.
3. Reduction: PCA to `dims` (10) components (not ICA: PCA is deterministic and cheaper, and
   after whitening it found the poisons in every run where ICA found them in 1 of 4).
4. 2-means, initialised by a 1-D 2-means along the first component, then Lloyd steps.
5. Decision: the split's *separation*, the gap between the two centroids over the pooled
   within-cluster standard deviation along the line joining them (a one-dimensional Fisher
   ratio). A class is poisoned when its separation is at least `min_separation_ratio` times
   the median over classes (a clean class's 2-means split of a unimodal cloud gives about
   2.65, the Gaussian value; MNIST classes measured 3.2-4.8, poisoned classes 8.9-14). The
   silhouette score (the paper's measure) and the relative size are reported per class, but
   decide nothing: after short training digit 1's natural two styles reached the poisoned
   class's silhouette. With `rate` (the expected poison share) poisons are assumed present
   and the best-separated class is flagged even below the ratio.
6. Which cluster: the one whose centroid lies farther from the other classes' mean (a
   trigger adds features no clean class has); the paper's "smaller cluster" is ambiguous
   when poisons make up half their class (10% BadNets on MNIST).

Score: the projection on the line joining the centroids, centred at their midpoint and
divided by the within-cluster std, oriented towards the flagged cluster's side; the scores of
classes judged clean are shifted below the lowest score of any poisoned class.

Cost: one forward pass over the data; per class a d x d Cholesky factorisation, a triangular
solve, an SVD of an (n_c, d) matrix, at most `kmeans_iters` 2-means steps and an
(n_c, n_c) distance matrix for the silhouette score (in row blocks).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adversa.errors import BadInput
from adversa.poisoning.base import check_rate
from adversa.poisoning.detect import (
    POISON_DETECTORS,
    Detection,
    _split_1d,
    penultimate_features,
    whiten_classes,
)

GAUSSIAN_SEPARATION = 2.65  # 2-means on one Gaussian: centroids +-0.80 sd, within sd 0.60


@POISON_DETECTORS.register("activation-clustering", aliases=("ac", "clustering"))
@dataclasses.dataclass(frozen=True, kw_only=True)
class ActivationClustering:
    """Activation clustering (Chen et al. 2018) on whitened features: per class, PCA to `dims`,
    2-means; a class whose split is `min_separation_ratio` times better separated than the
    median class is poisoned, and its cluster farther from the other classes is flagged.
    `rate` (optional, the expected poison share): assume poisons are present."""

    name = "activation-clustering"
    dims: int = 10
    min_separation_ratio: float = 2.0
    rate: float | None = None
    shrinkage: float = 0.01  # ridge added to the whitening covariance, times its mean variance
    kmeans_iters: int = 50

    def __post_init__(self) -> None:
        if self.dims < 1:
            raise BadInput(f"dims must be >= 1, got {self.dims}")
        if not self.min_separation_ratio > 1.0:
            raise BadInput(f"min_separation_ratio must be > 1, got {self.min_separation_ratio}")
        if self.rate is not None:
            check_rate(self.rate)
        if not self.shrinkage > 0:
            raise BadInput(f"shrinkage must be > 0, got {self.shrinkage}")
        if self.kmeans_iters < 1:
            raise BadInput(f"kmeans_iters must be >= 1, got {self.kmeans_iters}")

    def __call__(self, model: object, x: Tensor, y: Tensor) -> Detection:
        feats = penultimate_features(model, x).double()
        members, whitened = whiten_classes(feats, y, self.shrinkage)
        scores = torch.zeros(len(y), dtype=feats.dtype)
        far_cluster = torch.zeros(len(y), dtype=torch.bool)
        classes: list[dict[str, Any]] = []
        for c, (white, chol) in whitened.items():
            _, _, vh = torch.linalg.svd(white, full_matrices=False)
            z = white @ vh[: self.dims].T
            assign, centres = two_means(z, self.kmeans_iters)
            others = feats[y != c].mean(0) - feats[members[c]].mean(0)
            towards = torch.linalg.solve_triangular(chol, others[:, None], upper=False)[:, 0]
            far = int((centres - towards @ vh[: self.dims].T).norm(dim=1).argmax())
            axis = centres[far] - centres[1 - far]
            gap = axis.norm().clamp_min(1e-12)
            proj = z @ (axis / gap) - (centres.sum(0) / 2) @ (axis / gap)
            spread = (proj - torch.where(assign == far, gap / 2, -gap / 2)).std().clamp_min(1e-12)
            scores[members[c]] = proj / spread
            far_cluster[members[c]] = assign == far
            classes.append(
                {
                    "class": int(c),
                    "n": int(members[c].numel()),
                    "cluster_share": float((assign == far).double().mean()),
                    "separation": float(gap / spread),
                    "silhouette": float(silhouette(z, assign).mean()),
                }
            )
        return self._decide(scores, far_cluster, members, classes)

    def _decide(
        self,
        scores: Tensor,
        far_cluster: Tensor,
        members: dict[int, Tensor],
        classes: list[dict[str, Any]],
    ) -> Detection:
        """Flag the far cluster of each class separated `min_separation_ratio` times better
        than the reference (the median class with >= 3 classes, else the Gaussian value)."""
        separation = torch.tensor([entry["separation"] for entry in classes])
        reference = float(separation.median()) if len(classes) >= 3 else GAUSSIAN_SEPARATION
        poisoned = separation >= self.min_separation_ratio * reference
        if self.rate is not None and not bool(poisoned.any()):
            poisoned[separation.argmax()] = True
        inside = torch.zeros_like(far_cluster)
        for entry, is_poisoned in zip(classes, poisoned.tolist(), strict=True):
            entry["separation_ratio"] = entry["separation"] / reference
            entry["poisoned"] = bool(is_poisoned)
            if is_poisoned:
                inside[members[entry["class"]]] = True
        flagged = inside & far_cluster
        if bool(inside.any()) and not bool(inside.all()):
            floor = scores[inside].min()
            scores[~inside] = scores[~inside] - scores[~inside].max() + floor - 1.0
        return Detection(self.name, scores.float(), flagged, classes=tuple(classes))


def two_means(z: Tensor, iters: int = 50) -> tuple[Tensor, Tensor]:
    """2-means on the rows of `z`, started from a 1-D 2-means along its first column: the
    assignment (n,) in {0, 1} and the centroids (2, k)."""
    lo, hi, _ = _split_1d(z[:, 0])
    assign = ((z[:, 0] - hi).abs() < (z[:, 0] - lo).abs()).long()
    centres = z.new_zeros(2, z.shape[1])
    for _ in range(iters):
        onehot = F.one_hot(assign, 2).to(z.dtype)
        centres = (onehot.T @ z) / onehot.sum(0).clamp_min(1)[:, None]
        new = torch.cdist(z, centres).argmin(1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign, centres


def silhouette(z: Tensor, assign: Tensor, block: int = 1024) -> Tensor:
    """Per-row silhouette of a 2-cluster assignment (Rousseeuw 1987): (b - a) / max(a, b),
    a the mean distance to the own cluster's other members, b to the other cluster's; 0 for
    a singleton. Distances in row blocks of `block`."""
    onehot = F.one_hot(assign, 2).to(z.dtype)
    counts = onehot.sum(0)
    sums = torch.cat([torch.cdist(z[i : i + block], z) @ onehot for i in range(0, len(z), block)])
    own = sums.gather(1, assign[:, None])[:, 0] / (counts[assign] - 1).clamp_min(1)
    other = sums.gather(1, (1 - assign)[:, None])[:, 0] / counts[1 - assign].clamp_min(1)
    value = (other - own) / torch.maximum(own, other).clamp_min(1e-12)
    return torch.where(counts[assign] > 1, value, torch.zeros_like(value))
