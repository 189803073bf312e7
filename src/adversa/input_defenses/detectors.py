"""Detectors of adversarial inputs: a score per input (higher = more suspicious), a threshold
chosen on clean validation data at a stated false-positive rate, and detection metrics.

Every detector is an `nn.Module` (its `forward` is `score`), so that it moves with `.to()`,
its non-differentiable parts are found by `adversa.attacks.adaptive.bpda`, and an adaptive
attack can differentiate through it (Carlini & Wagner 2017, "Adversarial Examples Are Not
Easily Detected", arXiv:1705.07263: attack the classifier and the detector together).

Protocol: `fit(x, y)` on clean training data (a no-op for detectors without statistics),
`calibrate(x_val, fpr)` sets `threshold` so that at most `fpr` of the clean validation inputs
score above it, `detect(x)` flags the inputs scoring above it. `detection_metrics` gives the
ROC AUC and the TPR at a fixed FPR from clean and adversarial scores (scikit-learn, outside
hot paths).

Here: `MagNetDetector` (reconstruction error, Meng & Chen 2017, arXiv:1705.09064) and
`SqueezeDetector` (Xu, Evans & Qi 2018, arXiv:1704.01155). Feature-space detectors
(Mahalanobis, LID) live in `adversa.input_defenses.feature_detectors`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from adversa.errors import BadInput, ShapeError
from adversa.input_defenses.transforms import BitDepth, MedianSmoothing


class Detector(nn.Module):
    """Base class. Subclasses implement `score` and, if they have statistics, `fit`."""

    name: ClassVar[str] = "detector"

    def __init__(self) -> None:
        super().__init__()
        self.threshold: float | None = None  # set by `calibrate`
        self.fpr: float | None = None  # the false-positive rate the threshold was chosen at
        self.scale: float = 1.0  # std of the clean calibration scores (for adaptive losses)

    def fit(self, x: Tensor, y: Tensor | None = None, *, batch_size: int = 256) -> Detector:
        """Learn clean statistics from (x, y); returns self."""
        return self

    def score(self, x: Tensor) -> Tensor:
        """Per-input scores (B,), higher = more likely adversarial; differentiable in x
        wherever the detector is."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.score(x)

    @torch.no_grad()
    def scores(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """`score` over `x` in batches, without gradients."""
        if x.shape[0] == 0:
            return torch.empty(0, device=x.device, dtype=x.dtype)
        return torch.cat([self.score(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])

    def calibrate(self, x_val: Tensor, fpr: float = 0.05, *, batch_size: int = 256) -> float:
        """Choose the threshold on clean validation inputs: the smallest score such that at
        most `fpr` of them score strictly above it. Returns it."""
        if not isinstance(fpr, int | float) or not 0 < fpr < 1:
            raise BadInput(f"fpr must be a number in (0, 1), got {fpr!r}")
        if x_val.shape[0] < 2:
            raise BadInput(f"calibrate needs at least 2 clean inputs, got {x_val.shape[0]}")
        s = self.scores(x_val, batch_size).double().sort().values
        k = max(1, math.ceil((1 - fpr) * s.numel()))
        self.threshold = float(s[k - 1])
        self.fpr = float(fpr)
        self.scale = max(float(s.std()), 1e-12)
        return self.threshold

    def detect(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Bool (B,): the inputs scoring above the calibrated threshold."""
        if self.threshold is None:
            raise BadInput(f"detector {self.name!r} is not calibrated: call calibrate() first")
        return self.scores(x, batch_size) > self.threshold


def module_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of the module's first floating-point parameter (`default` if none)."""
    param = next((p for p in module.parameters() if p.is_floating_point()), None)
    return param.dtype if param is not None else default


def _l1_prob_distance(a: Tensor, b: Tensor) -> Tensor:
    return (a.softmax(1) - b.softmax(1)).abs().sum(1)


class MagNetDetector(Detector):
    """MagNet's reconstruction-error detector: mean |x - AE(x)|^p over the input's values,
    with AE the reformer's autoencoder (p = 1 for MagNet's MNIST "Detector I", 2 for "II").
    Differentiable. Cost: one autoencoder pass per input."""

    name = "magnet"

    def __init__(self, autoencoder: nn.Module, p: int = 1) -> None:
        super().__init__()
        if p not in (1, 2):
            raise BadInput(f"p must be 1 or 2, got {p!r}")
        self.autoencoder = autoencoder
        self.p = p

    def score(self, x: Tensor) -> Tensor:
        inner = x.to(module_dtype(self.autoencoder, x.dtype))
        error = (inner - self.autoencoder(inner)).abs()
        return (error if self.p == 1 else error**2).flatten(1).mean(1).to(x.dtype)


class SqueezeDetector(Detector):
    """Feature squeezing's detector: the largest L1 distance between the classifier's softmax
    on x and on a squeezed x, over the squeezers (Xu et al. 2018; their MNIST setting is a
    1-bit depth reduction and a 2x2 median filter). `bits` or `median` = 0 drops that
    squeezer. The bit-depth squeezer is non-differentiable: adaptive attacks go through it with
    BPDA. Cost: 1 + (number of squeezers) classifier passes per input.
    """

    name = "squeeze"

    def __init__(
        self,
        classifier: nn.Module,
        bits: int = 1,
        median: int = 2,
        bounds: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        squeezers: list[nn.Module] = []
        if bits:
            squeezers.append(BitDepth(bits, bounds))
        if median:
            squeezers.append(MedianSmoothing(median))
        if not squeezers:
            raise BadInput("SqueezeDetector needs at least one squeezer (bits or median > 0)")
        self.classifier = classifier
        self.squeezers = nn.ModuleList(squeezers)

    def score(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        inner = x.to(module_dtype(self.classifier, x.dtype))
        batch = torch.cat([inner, *(squeeze(inner) for squeeze in self.squeezers)])
        logits = self.classifier(batch).view(1 + len(self.squeezers), n, -1)
        distances = [_l1_prob_distance(logits[0], other) for other in logits[1:]]
        return torch.stack(distances).amax(0).to(x.dtype)


@dataclasses.dataclass(frozen=True, slots=True)
class DetectionMetrics:
    """How well scores separate clean inputs (negatives) from adversarial ones (positives)."""

    auc: float  # ROC AUC
    tpr_at_fpr: float  # the ROC's largest true-positive rate at false-positive rate <= `fpr`
    fpr: float  # the false-positive rate of `tpr_at_fpr` (usually 0.05)
    n_clean: int
    n_adversarial: int
    roc: tuple[tuple[float, float], ...]  # (fpr, tpr) points, thinned to at most 101

    def to_dict(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["roc"] = [list(point) for point in self.roc]
        return out


def detection_metrics(clean: Tensor, adversarial: Tensor, fpr: float = 0.05) -> DetectionMetrics:
    """ROC AUC and TPR at `fpr` of scores `clean` (negatives) against `adversarial`."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if clean.dim() != 1 or adversarial.dim() != 1:
        raise ShapeError("detection_metrics needs two 1-D score tensors")
    if clean.numel() == 0 or adversarial.numel() == 0:
        raise BadInput(
            f"detection_metrics needs clean and adversarial scores, got {clean.numel()} clean "
            f"and {adversarial.numel()} adversarial"
        )
    scores = torch.cat([clean, adversarial]).detach().double().cpu().numpy()
    labels = [0] * clean.numel() + [1] * adversarial.numel()
    fprs, tprs, _ = roc_curve(labels, scores)
    auc = float(roc_auc_score(labels, scores))
    tpr_at = float(max(t for f, t in zip(fprs, tprs, strict=True) if f <= fpr + 1e-12))
    keep = sorted({round(i * (len(fprs) - 1) / 100) for i in range(101)})
    roc = tuple((float(fprs[i]), float(tprs[i])) for i in keep)
    return DetectionMetrics(auc, tpr_at, fpr, int(clean.numel()), int(adversarial.numel()), roc)
