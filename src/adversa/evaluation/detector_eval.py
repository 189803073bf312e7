"""Evaluating a detector of adversarial inputs, naively and adaptively.

Naive: the plain attacks' adversarial examples (from the battery, which ignored the detector)
are scored; the report gives the ROC AUC and TPR at 5% FPR against clean inputs, and robust
accuracy counts a point as broken only if its adversarial example is misclassified AND scores
below the threshold (a flagged input is a correct rejection).

Adaptive (Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected",
arXiv:1705.07263): the classifier and its calibrated detector become one model, `Guarded`,
with a rejection output, and `DetectorAwarePGD` attacks that composite through `run_attack`
(validation, cost, projection and the final check come from the harness). It maximises
-(hinge(z_y - max_{j != y} z_j + kappa) + weight * hinge((s - t) / sigma + margin)) where s is
the detector's score, t its threshold and sigma the spread of its clean scores: the point must
be misclassified and pushed below the threshold. Restarts are batched, one per (weight, kappa)
pair in `restarts`: no single pair is best for every detector (a large kappa helps against
feature squeezing, a small one against MagNet). The loop is the template
`attacks.gradient.ascend`. A point counts as a success only if the final check finds it
misclassified AND unflagged. Run it inside `bpda(...)` for non-differentiable parts and on an
`EOT` model for randomised ones, as `evaluate_defense` does.

Cost: `steps * restarts` forward and backward passes of the classifier and of the detector per
attacked point, plus one final check; the classifier's passes are counted in `cost`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from adversa.attacks.adaptive import bpda
from adversa.attacks.base import AttackBase
from adversa.attacks.gradient import Ascent, ascend
from adversa.errors import BadInput, require
from adversa.input_defenses.detectors import DetectionMetrics, Detector, detection_metrics
from adversa.model import Cost, Model


class _GuardedModule(nn.Module):
    """The composite as a plain module: classifier logits and the rejection logit."""

    def __init__(self, classifier: nn.Module, detector: Detector) -> None:
        super().__init__()
        self.classifier = classifier
        self.detector = detector

    def forward(self, x: Tensor) -> Tensor:
        return with_rejection(self.classifier(x), self.detector.score(x), self.detector)


def with_rejection(logits: Tensor, score: Tensor, detector: Detector) -> Tensor:
    """(B, K + 1): the K logits and a rejection logit max_j z_j + (s - t) / sigma, nudged up
    to the next float above max_j z_j where s > t. The argmax is therefore the rejection
    exactly where the detector flags the input, and a class (the classifier's) elsewhere."""
    top = logits.amax(1)
    reject = top + ((score - detector.threshold) / detector.scale).to(logits.dtype)
    flagged = score > detector.threshold
    above = torch.nextafter(top, torch.full_like(top, float("inf")))
    reject = torch.where(flagged, torch.maximum(reject, above), reject)
    return torch.cat([logits, reject[:, None]], 1)


class Guarded(Model):
    """A classifier behind a calibrated detector, as one model with K + 1 outputs: the
    classifier's logits and a rejection logit (`with_rejection`) whose argmax means "flagged".
    `rejects` tells the harness that predicting the last output is never an attack's success.

    The classifier's own `Model` (an `EOT` view, say) does the forward passes and counts them
    in its meter, which the composite shares: a scope opened on either, or on a query view of
    the composite, sees them. `parts(x)` gives the logits and scores separately, for losses
    that need both. `frozen()` and `eval_mode()` cover classifier and detector.
    """

    rejects = True

    def __init__(self, classifier: Model, detector: Detector) -> None:
        if not isinstance(classifier, Model) or not isinstance(detector, Detector):
            raise BadInput("Guarded needs an adversa Model and a Detector")
        if detector.threshold is None:
            raise BadInput(f"detector {detector.name!r} must be calibrated before it is attacked")
        classes = None if classifier.num_classes is None else classifier.num_classes + 1
        super().__init__(
            _GuardedModule(classifier.module, detector),
            num_classes=classes,
            bounds=classifier.bounds,
            name=f"{classifier.name}+{detector.name}",
            meter=classifier.meter,
        )
        self.classifier = classifier
        self.detector = detector

    def parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The classifier's logits (B, K), counted, and the detector's scores (B,)."""
        return self.classifier(x), self.detector.score(x)

    def __call__(self, x: Tensor) -> Tensor:
        logits, score = self.parts(x)
        return with_rejection(logits, score, self.detector)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectorAwarePGD(AttackBase):
    """PGD on a `Guarded` classifier and detector together (see the module docstring).
    Not in the registry: it needs a `Guarded` model, e.g.
    `DetectorAwarePGD(threat=threat)(Guarded(model, detector), x, y)`."""

    name: ClassVar[str] = "detector-aware-pgd"

    steps: int = 100  # gradient steps per restart
    step_size: float | None = None  # None: 2.5 * eps / steps
    # (detector-term weight, logit margin kappa) of each restart
    restarts: tuple[tuple[float, float], ...] = ((1.0, 0.5), (10.0, 0.5), (1.0, 5.0))
    margin: float = 0.1  # how far below the threshold to aim, in clean-score std units

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(
            bool(self.restarts) and all(len(r) == 2 and min(r) >= 0 for r in self.restarts),
            f"restarts must be non-empty (weight, kappa) pairs >= 0, got {self.restarts}",
        )
        require(
            not self.threat.targeted,
            "the detector-aware attack is untargeted: threat.targeted must be False",
        )

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        if not isinstance(model, Guarded):
            raise BadInput(
                f"{self.name} attacks a classifier and its detector together: pass "
                f"Guarded(model, detector), got {type(model).__name__}"
            )
        threshold, n = model.detector.threshold, x.shape[0]
        settings = torch.tensor(self.restarts, device=x.device, dtype=x.dtype)

        def objective(x_rows: Tensor, row: Tensor) -> tuple[Tensor, Tensor]:
            logits, score = model.parts(x_rows)
            labels = y[row % n]
            weight, kappa = settings[row // n].unbind(1)
            loss = self._loss(logits, labels, score, model.detector, weight, kappa)
            fooled = (logits.argmax(1) != labels) & (score <= threshold)
            return loss, fooled

        plan = Ascent(
            steps=self.steps,
            step_size=self.step_size or 2.5 * self.threat.eps / self.steps,
            restarts=len(self.restarts),
        )
        return ascend(objective, self.threat, x, plan, gen=gen)

    def _loss(
        self,
        logits: Tensor,
        y: Tensor,
        score: Tensor,
        detector: Detector,
        weight: Tensor,
        kappa: Tensor,
    ) -> Tensor:
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        classify = (z_y - other + kappa.to(logits.dtype)).clamp_min(0)
        detect = ((score - detector.threshold) / detector.scale + self.margin).clamp_min(0)
        return -(classify + weight.to(classify.dtype) * detect.to(classify.dtype))


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class DetectionEvaluation:
    """A detector's naive and adaptive numbers at one eps, over the evaluation's n points."""

    spec: str
    eps: float
    threshold: float
    fpr_target: float  # the false-positive rate the threshold was chosen at (clean validation)
    clean_flagged: float  # share of the clean evaluation points the detector flags
    metrics: DetectionMetrics | None  # against the naive adversarial examples (None: none)
    tpr_at_threshold: float | None  # share of naive adversarial examples flagged
    naive_robust_accuracy: float  # fooled by the plain attacks AND unflagged counts as broken
    adaptive_robust_accuracy: float  # worst case over naive and detector-aware attacks
    cost: Cost  # the detector-aware attack's classifier passes and seconds
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["metrics"] = self.metrics.to_dict() if self.metrics is not None else None
        out["cost"] = self.cost.to_dict()
        return out


def evaluate_detection(
    model: Model,
    detector: Detector,
    spec: str,
    naive,  # EvalResult of the plain attacks on `model` (battery), same points
    attack: DetectorAwarePGD,
    *,
    batch_size: int = 256,
) -> DetectionEvaluation:
    """Naive and adaptive evaluation of a calibrated `detector` in front of `model`.

    `model` is what the adaptive attack differentiates (wrap it in EOT and open `bpda` on it
    beforehand when the classifier side needs it); the detector's own non-differentiable
    parts get BPDA here."""
    if detector.threshold is None:
        raise BadInput("the detector must be calibrated before it is evaluated")
    guarded = Guarded(model, detector)
    x, y = naive.x, naive.y
    threshold = detector.threshold
    clean_scores = detector.scores(x, batch_size)
    correct = naive.clean_correct
    broken = naive.broken_by >= 0
    adv_scores = detector.scores(naive.x_adv[broken], batch_size)
    flagged = torch.zeros_like(broken)
    flagged[broken] = adv_scores > threshold
    metrics = tpr = None
    if bool(broken.any()) and bool(correct.any()):
        metrics = detection_metrics(clean_scores[correct], adv_scores, fpr=0.05)
        tpr = float((adv_scores > threshold).float().mean())
    robust = correct & ~(broken & ~flagged)
    naive_ra = float(robust.float().mean())
    todo = torch.nonzero(robust).squeeze(1)
    cost = Cost()
    hooks = contextlib.ExitStack()
    with hooks:
        if any(getattr(m, "non_differentiable", False) for m in detector.modules()):
            hooks.enter_context(bpda(detector))
        for i in range(0, todo.shape[0], batch_size):
            idx = todo[i : i + batch_size]
            result = attack(guarded, x[idx], y[idx])
            robust[idx[result.success]] = False
            cost = cost + result.cost
    adaptive_ra = float(robust.float().mean())
    return DetectionEvaluation(
        spec=spec,
        eps=naive.eps,
        threshold=threshold,
        fpr_target=float(detector.fpr or 0.0),
        clean_flagged=float((clean_scores > threshold).float().mean()),
        metrics=metrics,
        tpr_at_threshold=tpr,
        naive_robust_accuracy=naive_ra,
        adaptive_robust_accuracy=adaptive_ra,
        cost=cost,
        explanation=_explain(spec, metrics, naive_ra, adaptive_ra, naive.clean_accuracy),
    )


def _explain(
    spec: str, metrics: DetectionMetrics | None, naive: float, adaptive: float, clean: float
) -> str:
    seen = (
        f"Against the plain attacks' adversarial examples the detector reaches ROC AUC "
        f"{metrics.auc:.3f} and {metrics.tpr_at_fpr:.1%} TPR at 5% FPR. "
        if metrics is not None
        else "The plain attacks produced no adversarial example to detect. "
    )
    return (
        seen + f"Counting a flagged input as a correct rejection, the plain attacks leave "
        f"{naive:.1%} robust accuracy (clean accuracy {clean:.1%}); an attack that also "
        f"pushes the detector score ({spec}) below its threshold (Carlini & Wagner 2017) "
        f"leaves {adaptive:.1%}. The plain attacks never tried to evade the detector, so "
        "their number says how well it detects attacks that ignore it, not how robust the "
        "defended system is; report the adaptive number."
    )
