"""Evaluating a detector of adversarial inputs, naively and adaptively.

Naive: the plain attacks' adversarial examples (from the battery, which ignored the detector)
are scored; the report gives the ROC AUC and TPR at 5% FPR against clean inputs, and robust
accuracy counts a point as broken only if its adversarial example is misclassified AND scores
below the threshold (a flagged input is a correct rejection).

Adaptive (Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected",
arXiv:1705.07263): `DetectorAwarePGD` attacks the classifier and the detector together,
maximising -(hinge(z_y - max_{j != y} z_j + kappa) + weight * hinge((s - t) / sigma + margin))
where s is the detector's score, t its threshold and sigma the spread of its clean scores:
the point must be misclassified and pushed below the threshold. Restarts are batched, one per
(weight, kappa) pair in `restarts`: no single pair is best for every detector (a large kappa
helps against feature squeezing, a small one against MagNet). A point counts as a success
only if the final check finds it misclassified AND unflagged. Run it inside `bpda(...)` for
non-differentiable parts and on an `EOT` model for randomised ones, as `evaluate_defense`
does.

Cost: `steps * restarts` forward and backward passes of the classifier and of the detector per
attacked point, plus one final check; the classifier's passes are counted in `cost`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from adversa.attacks.adaptive import bpda
from adversa.attacks.gradient import BestTracker, steepest_step
from adversa.defenses.detectors import DetectionMetrics, Detector, detection_metrics
from adversa.errors import BadInput
from adversa.model import Cost, Model
from adversa.model.wrapped import frozen
from adversa.rng import make_generator
from adversa.threat import ThreatModel


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectorAwarePGD:
    """PGD on the classifier and the detector together (see the module docstring)."""

    threat: ThreatModel  # the ball and box
    steps: int = 100  # gradient steps per restart
    step_size: float | None = None  # None: 2.5 * eps / steps
    # (detector-term weight, logit margin kappa) of each restart
    restarts: tuple[tuple[float, float], ...] = ((1.0, 0.5), (10.0, 0.5), (1.0, 5.0))
    margin: float = 0.1  # how far below the threshold to aim, in clean-score std units
    seed: int = 0  # random starts

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise BadInput(f"steps must be >= 1, got {self.steps}")
        if not self.restarts or any(len(r) != 2 or min(r) < 0 for r in self.restarts):
            raise BadInput(
                f"restarts must be non-empty (weight, kappa) pairs >= 0, got {self.restarts}"
            )

    def __call__(
        self, model: Model, detector: Detector, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, Cost]:
        """(x_adv, success, cost): success = misclassified and below the threshold."""
        if detector.threshold is None:
            raise BadInput("the detector must be calibrated before it is attacked")
        start = time.perf_counter()
        gen = make_generator(self.seed, model.device)
        threshold, scale = detector.threshold, detector.scale
        step_size = self.step_size or 2.5 * self.threat.eps / self.steps
        n, r = x.shape[0], len(self.restarts)
        with model.frozen(), model.counting() as counter, frozen(detector):
            best = BestTracker(x, torch.zeros(n, dtype=torch.bool, device=x.device))
            owner = torch.arange(n, device=x.device).repeat(r)
            settings = torch.tensor(self.restarts, device=x.device, dtype=x.dtype)
            weight, kappa = settings.repeat_interleave(n, dim=0).unbind(1)
            x_rows, y_rows = x[owner], y[owner]
            x_adv = self.threat.random_start(x_rows, gen)
            for step in range(self.steps + 1):
                x_adv.requires_grad_(step < self.steps)
                logits, score = model(x_adv), detector.score(x_adv)
                loss = self._loss(logits, y_rows, score, threshold, scale, weight, kappa)
                fooled = (logits.argmax(1) != y_rows) & (score <= threshold)
                keep = best.update(owner, x_adv.detach(), loss.detach(), fooled.detach())
                if step == self.steps or not bool(keep.any()):
                    break
                (grad,) = torch.autograd.grad(loss.sum(), x_adv)
                x_adv = self.threat.project(
                    x_adv.detach()
                    + steepest_step(
                        grad,
                        self.threat.norm,
                        step_size,
                        x_adv=x_adv.detach(),
                        bounds=self.threat.bounds,
                        l1_sparsity=0.99,
                    ),
                    x_rows,
                )
                owner, x_rows, y_rows, x_adv = owner[keep], x_rows[keep], y_rows[keep], x_adv[keep]
                weight, kappa = weight[keep], kappa[keep]
            x_best = self.threat.project(best.x_best, x)
            with torch.no_grad():
                pred = model(x_best).argmax(1)
                success = (pred != y) & (detector.score(x_best) <= threshold)
        return x_best, success, counter.freeze(time.perf_counter() - start)

    def _loss(
        self,
        logits: Tensor,
        y: Tensor,
        score: Tensor,
        threshold: float,
        scale: float,
        weight: Tensor,
        kappa: Tensor,
    ) -> Tensor:
        z_y = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        classify = (z_y - other + kappa.to(logits.dtype)).clamp_min(0)
        detect = ((score - threshold) / scale + self.margin).clamp_min(0)
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
            _, success, batch_cost = attack(model, detector, x[idx], y[idx])
            robust[idx[success]] = False
            cost = cost + batch_cost
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
