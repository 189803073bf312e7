"""Evaluating a model behind input-side defenses twice: with the plain attacks, and adaptively.

Most input-side defenses look strong against a naive attack and fall to an adaptive one
(Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security",
arXiv:1802.00420; Carlini & Wagner 2017 for detectors). `evaluate_defense` therefore runs the
same battery (attacks, seed, points) twice and reports both numbers side by side:

- naive: the attacks on the defended model as it is;
- adaptive: submodules marked `non_differentiable = True` (JPEG, bit depth, TVM) are
  differentiated as the identity (BPDA, `adversa.attacks.adaptive.bpda`), and a model with
  submodules marked `randomized = True` is attacked and judged as `EOT(model, k)`, the mean
  of its logits over k draws. A deterministic, differentiable defense needs neither: the
  plain attacks already differentiate through it, and the adaptive run is not repeated.

With a calibrated detector, `adversa.evaluation.detector_eval` adds the detection metrics
against the naive examples and an attack on classifier and detector together.

Cost: the battery twice (the adaptive run k times more expensive under EOT), plus the
detector-aware attack on the points still robust.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from adversa.attacks.adaptive import EOT, bpda
from adversa.errors import BadInput
from adversa.evaluation.battery import AttackSpec, ProgressFn, SweepResult, evaluate_sweep
from adversa.evaluation.detector_eval import (
    DetectionEvaluation,
    DetectorAwarePGD,
    evaluate_detection,
)
from adversa.evaluation.report import Report
from adversa.evaluation.sanity import check_nondeterministic, probe_nondeterminism
from adversa.input_defenses.detectors import Detector
from adversa.input_defenses.spec import adaptive_parts
from adversa.model import Model
from adversa.threat import ThreatModel

MASKING_GAP = 0.05  # a naive-minus-adaptive gap above this is reported as masking
RANDOMISED_WARNING = "the model is randomised"  # how sanity.check_nondeterministic starts
NO_DEFENSE = "none"  # the spec of a detector-only evaluation
EOT_PROBE_POINTS = 16  # points the redundant-EOT probe runs on (two uncounted passes)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class DefenseEvaluation:
    """Both runs of one defended model; per-eps numbers are in `naive` and `adaptive`."""

    spec: str  # the defense spec (NO_DEFENSE when only a detector is evaluated)
    naive: SweepResult
    adaptive: SweepResult  # the same object as `naive` when no adaptation applies
    bpda: tuple[str, ...]  # submodules differentiated as the identity in the adaptive run
    eot: int | None  # EOT draws in the adaptive run (None: deterministic defense)
    explanation: str
    warnings: tuple[str, ...]  # the masking warning(s), and the naive run's warnings
    detection: DetectionEvaluation | None = None

    @property
    def naive_robust_accuracy(self) -> float:
        return self.naive.results[0].robust_accuracy

    @property
    def adaptive_robust_accuracy(self) -> float:
        return self.adaptive.results[0].robust_accuracy

    def per_eps(self) -> list[dict[str, float]]:
        rows = []
        for n, a in zip(self.naive.results, self.adaptive.results, strict=True):
            rows.append(
                {
                    "eps": n.eps,
                    "naive_clean_accuracy": n.clean_accuracy,
                    "adaptive_clean_accuracy": a.clean_accuracy,
                    "naive_robust_accuracy": n.robust_accuracy,
                    "adaptive_robust_accuracy": a.robust_accuracy,
                    "worst_case_robust_accuracy": float((n.robust & a.robust).float().mean()),
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The report's `defense` entry."""
        return {
            "spec": self.spec,
            "naive_robust_accuracy": self.naive_robust_accuracy,
            "adaptive_robust_accuracy": self.adaptive_robust_accuracy,
            "adaptive_method": {"bpda": list(self.bpda), "eot": self.eot},
            "explanation": self.explanation,
            "per_eps": self.per_eps(),
            "naive_attacks": [
                {"eps": r.eps, "attacks": [_attack_row(a) for a in r.attacks]}
                for r in self.naive.results
            ],
            "detector": self.detection.to_dict() if self.detection is not None else None,
        }


def _attack_row(summary: Any) -> dict[str, Any]:
    return {
        "name": summary.name,
        "robust_accuracy": summary.robust_accuracy,
        "forward_calls": summary.cost.forward,
        "backward_calls": summary.cost.backward,
        "seconds": summary.cost.seconds,
    }


def evaluate_defense(
    model: Model,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    eps_values: Sequence[float],
    attacks: Sequence[AttackSpec] | AttackSpec,
    *,
    spec: str = "",
    eot: int = 20,
    detector: Detector | None = None,
    detector_spec: str = "",
    detector_attack: DetectorAwarePGD | None = None,
    batch_size: int = 256,
    seed: int = 0,
    progress: ProgressFn | None = None,
    checks: bool = True,
    check_masking: bool = False,
) -> DefenseEvaluation:
    """Run the battery on the defended `model` naively and adaptively (see the module
    docstring); with a calibrated `detector`, also evaluate it at the first eps."""
    nondiff, randomized = adaptive_parts(model.module)
    if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
        raise BadInput(f"eot must be an integer >= 1, got {eot!r}")
    options = dict(batch_size=batch_size, seed=seed, checks=checks, check_masking=check_masking)
    naive = evaluate_sweep(
        model, x, y, threat, eps_values, attacks, progress=_prefixed(progress, "naive"), **options
    )
    adaptive_model = EOT(model, eot) if randomized else model
    hooks = contextlib.ExitStack()
    with hooks:
        if nondiff:
            hooks.enter_context(bpda(model))
        if nondiff or randomized:
            adaptive = evaluate_sweep(
                adaptive_model,
                x,
                y,
                threat,
                eps_values,
                attacks,
                progress=_prefixed(progress, "adaptive"),
                **options,
            )
        else:
            adaptive = naive
        detection = None
        if detector is not None:
            attack = detector_attack or DetectorAwarePGD(threat=threat, seed=seed)
            attack = dataclasses.replace(attack, threat=threat.with_eps(eps_values[0]))
            detection = evaluate_detection(
                adaptive_model,
                detector,
                detector_spec or detector.name,
                naive.results[0],
                attack,
                batch_size=batch_size,
            )
    label = spec or NO_DEFENSE
    explanation = explain(label, nondiff, randomized, eot, naive, adaptive)
    warnings = _masking_warnings(label, naive, adaptive, nondiff, randomized, eot)
    if adaptive is not naive:
        warnings += [f"naive run: {w}" for w in naive.warnings]
    return DefenseEvaluation(
        spec=label,
        naive=naive,
        adaptive=adaptive,
        bpda=tuple(nondiff),
        eot=eot if randomized else None,
        explanation=explanation,
        warnings=tuple(warnings),
        detection=detection,
    )


def _prefixed(progress: ProgressFn | None, prefix: str) -> ProgressFn | None:
    if progress is None:
        return None
    return lambda description, done, total: progress(f"{prefix} {description}", done, total)


def _method(nondiff: list[str], randomized: list[str], eot: int) -> str:
    parts = []
    if nondiff:
        parts.append(f"BPDA (identity backward pass) through {', '.join(nondiff)}")
    if randomized:
        parts.append(f"EOT over {eot} draws of {', '.join(randomized)}")
    return " and ".join(parts)


def _masking_warnings(
    spec: str,
    naive: SweepResult,
    adaptive: SweepResult,
    nondiff: list[str],
    randomized: list[str],
    eot: int,
) -> list[str]:
    out = []
    for n, a in zip(naive.results, adaptive.results, strict=True):
        gap = n.robust_accuracy - a.robust_accuracy
        if gap > MASKING_GAP:
            method = _method(nondiff, randomized, eot)
            out.append(
                f"defense {spec}: the plain attacks leave {n.robust_accuracy:.1%} robust "
                f"accuracy at eps={n.eps:g}, the adaptive attack ({method}) "
                f"{a.robust_accuracy:.1%}: the naive number reflects gradient masking, not "
                "robustness; report the adaptive one"
            )
    return out


def explain(
    spec: str,
    nondiff: list[str],
    randomized: list[str],
    eot: int,
    naive: SweepResult,
    adaptive: SweepResult,
) -> str:
    """Why the naive and adaptive numbers differ (or do not), in a few sentences."""
    n, a = naive.results[0], adaptive.results[0]
    why = []
    if nondiff:
        why.append(
            f"{', '.join(nondiff)} {'is' if len(nondiff) == 1 else 'are'} not differentiable "
            "(a zero gradient almost everywhere), so the plain attacks have no gradient to "
            "follow through the defense ('shattered gradients'); the adaptive run keeps the "
            f"exact forward pass and differentiates through {'it' if len(nondiff) == 1 else 'them'}"
            " as the identity (BPDA)."
        )
    if randomized:
        why.append(
            f"{', '.join(randomized)} {'is' if len(randomized) == 1 else 'are'} randomised, so "
            "each plain attack step follows one random draw's gradient and success is judged "
            f"on one draw ('stochastic gradients'); the adaptive run attacks and judges the "
            f"mean logits over {eot} draws (EOT)."
        )
    if not why:
        return (
            f"The defense ({spec}) is deterministic and differentiable, so the plain attacks "
            "already differentiate through it: they are the adaptive attack, and robust "
            f"accuracy is {n.robust_accuracy:.1%} at eps={n.eps:g} either way."
        )
    gap = n.robust_accuracy - a.robust_accuracy
    verdict = (
        f"The naive evaluation overstates robust accuracy by {100 * gap:.1f} percentage "
        f"points: report "
        f"{a.robust_accuracy:.1%}."
        if gap > MASKING_GAP
        else "The adaptive attack did not do much better here; the numbers are still upper "
        "bounds on the true robust accuracy."
    )
    return (
        " ".join(why) + f" At eps={n.eps:g}, robust accuracy is {n.robust_accuracy:.1%} naive and "
        f"{a.robust_accuracy:.1%} adaptive on the same {n.n} points. {verdict}"
    )


def attach_to_report(report: Report, evaluation: DefenseEvaluation) -> Report:
    """`report` (built from `evaluation.adaptive`) with the `defense` entry and the defense's
    warnings (masking, and the naive run's own) added."""
    own = list(report.warnings)
    if evaluation.eot is not None:  # the adaptive run is randomised by design, and used EOT
        own = [w for w in own if not w.startswith(RANDOMISED_WARNING)]
    warnings = tuple(dict.fromkeys((*evaluation.warnings, *own)))
    no_defense = evaluation.spec == NO_DEFENSE  # detector only
    config = {**report.config, "defense": None if no_defense else evaluation.spec}
    if evaluation.detection is not None:
        config["detector"] = evaluation.detection.spec
    return dataclasses.replace(
        report, defense=evaluation.to_dict(), warnings=warnings, config=config
    )


def redundant_eot(model: Model, x: Tensor, eot: int) -> list[str]:
    """Before `EOT(model, eot)` is attacked: a warning when `model` is deterministic (two
    forward passes on a few points of `x` agree), as every draw is then the same and EOT only
    multiplies the cost by `eot`. Two forward passes on EOT_PROBE_POINTS points."""
    probe = x[:EOT_PROBE_POINTS].to(model.device)
    if check_nondeterministic(probe_nondeterminism(model, probe)):
        return []
    return [
        f"--eot {eot}: the model is deterministic (two forward passes on the same inputs "
        f"agree), so EOT is redundant: its {eot} draws are identical and every attack costs "
        f"{eot}x as much for the same numbers; drop --eot"
    ]


def attach_eot_notes(report: Report, notes: Sequence[str]) -> Report:
    """`report` of a run under EOT: without the "randomised model needs EOT" warning (the
    run used EOT; the probe saw the EOT view's residual variance), with `notes` first."""
    kept = [w for w in report.warnings if not w.startswith(RANDOMISED_WARNING)]
    return dataclasses.replace(report, warnings=tuple(dict.fromkeys((*notes, *kept))))
