"""`evaluate` behind an input-side defense or detector (`EvaluationPlan.defense`/`detector`).

The defended model is evaluated naively and adaptively by
`adversa.evaluation.adaptive_eval.evaluate_defense`; a detector is first fitted and calibrated
on clean points disjoint from the evaluated ones (`detector_pool`: a built-in's train split,
else the file's points after the evaluated ones), then attacked together with the classifier
by `DetectorAwarePGD` (its steps: the plan's `steps`, default 100).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from adversa.data import list_datasets, load_data
from adversa.data.dataset import Dataset
from adversa.errors import BadInput
from adversa.evaluation.adaptive_eval import DefenseEvaluation, evaluate_defense
from adversa.evaluation.battery import ProgressFn
from adversa.evaluation.detector_eval import DetectorAwarePGD
from adversa.input_defenses.detectors import Detector
from adversa.input_defenses.spec import BuildContext, build_detector, defended
from adversa.model import Model
from adversa.threat import ThreatModel

if TYPE_CHECKING:
    from adversa.jobs.evaluate import EvaluationPlan

FIT_POINTS = 1000  # clean points a detector is fitted on (and as many to calibrate it)
MIN_POOL = 40  # fewer clean points than this cannot fit and calibrate a detector
DEFAULT_EOT = 20  # draws of the adaptive run's EOT when the plan gives none
DEFAULT_DETECTOR_STEPS = 100  # steps of the detector-aware attack when the plan gives none


def detector_pool(spec: str, label_column: str | None, n_eval: int) -> Dataset:
    """Clean points disjoint from the first `n_eval` test points of the data `spec`: a
    built-in's train split, else the file's points after the first `n_eval`."""
    if spec.strip().lower() in list_datasets():
        pool = load_data(spec, split="train")
    else:
        pool = load_data(spec, label_column=label_column).subset(slice(n_eval, None))
    if len(pool) < MIN_POOL:
        raise BadInput(
            f"--detector needs at least {MIN_POOL} clean points besides the evaluated ones to "
            f"fit and calibrate on, got {len(pool)} (evaluate fewer points with --n)"
        )
    return pool


def fit_detector(
    spec: str, classifier: torch.nn.Module, pool: Dataset, fpr: float, ctx: BuildContext
) -> Detector:
    """The detector of `spec`, fitted on the first half of `pool` (at most FIT_POINTS) and
    calibrated at false-positive rate `fpr` on the next as many points."""
    if len(pool) < MIN_POOL:
        raise BadInput(f"detector_data: need at least {MIN_POOL} points, got {len(pool)}")
    half = min(FIT_POINTS, len(pool) // 2)
    detector = build_detector(spec, classifier, ctx)
    with torch.no_grad():
        detector.fit(pool.x[:half].to(ctx.device), pool.y[:half].to(ctx.device))
    detector.calibrate(pool.x[half : 2 * half].to(ctx.device), fpr)
    return detector


def evaluate_input_defense(
    plan: EvaluationPlan,
    model: Model,
    data: Dataset,
    threat: ThreatModel,
    attacks: list[Any],
    progress: ProgressFn | None,
) -> DefenseEvaluation:
    """The plan's defense and detector around `model`, evaluated naively and adaptively."""
    classifier = model.module
    if plan.defense:
        model = defended(model, plan.defense, seed=plan.seed)
    detector = None
    if plan.detector:
        assert plan.detector_data is not None  # the plan checks it
        ctx = BuildContext(bounds=tuple(threat.bounds), seed=plan.seed, device=model.device)
        detector = fit_detector(
            plan.detector, classifier, plan.detector_data, plan.detector_fpr, ctx
        )
    evaluation = evaluate_defense(
        model,
        data.x,
        data.y,
        threat,
        plan.eps,
        attacks,
        spec=plan.defense or "",
        eot=plan.eot or DEFAULT_EOT,
        detector=detector,
        detector_spec=plan.detector or "",
        detector_attack=DetectorAwarePGD(
            threat=threat, steps=plan.steps or DEFAULT_DETECTOR_STEPS, seed=plan.seed
        ),
        batch_size=plan.batch_size,
        seed=plan.seed,
        progress=progress,
        check_masking=plan.check_masking,
    )
    if plan.eot is not None and evaluation.eot is None:  # nothing randomised to average over
        unused = (
            f"--eot {plan.eot}: not used, as no part of the defended model is marked "
            "randomised (randomized = True), so the adaptive run takes no EOT"
        )
        evaluation = dataclasses.replace(evaluation, warnings=(*evaluation.warnings, unused))
    return evaluation
