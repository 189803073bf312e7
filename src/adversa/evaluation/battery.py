"""The evaluation battery: clean predictions, then a cascade of attacks, each run only on the
points still robust, and the per-sample worst case over all of them.

A point counts as robust iff the model classifies it correctly and no attack in the list fools
it: the mean over points of the minimum over attacks, never the minimum over attacks of the
mean (Carlini et al. 2019, "On Evaluating Adversarial Robustness", arXiv:1902.06705; the
cascade is AutoAttack's, Croce & Hein 2020, arXiv:2003.01690). Attacks later in the list see
only the points the earlier ones could not break, so the battery costs far less than running
every attack on every point; each attack reports the robust accuracy after its turn in the
cascade, how many points it newly broke, and its own cost (summed `Cost` over its batches).

Cost: one forward pass per point for the clean predictions, the attacks' own cost on the
points they attack (including the harness's verification pass), and the sanity checks (see
`sanity.py`; at most one forward and backward pass on up to `batch_size` points, plus the
iterative attack re-run on the points a single-step attack broke).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adversa import distributed
from adversa.attacks import AttackBase
from adversa.checks import as_tensor, check_batch
from adversa.errors import BadInput, describe, is_integer
from adversa.evaluation import sanity
from adversa.evaluation.attack_list import AttackSpec, resolve_attacks, sweep_threats
from adversa.evaluation.attack_progress import AttackProgress
from adversa.model import Cost, Model, as_model, diagnose_mismatch
from adversa.threat import ThreatModel

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int], None]  # (description, completed, total)
DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "pgd")


@dataclasses.dataclass(frozen=True, slots=True)
class AttackSummary:
    """One attack's turn in the cascade."""

    name: str  # registry name
    robust_accuracy: float  # share of all n points still robust after this attack's turn
    newly_broken: int  # points this attack fooled that no earlier attack had fooled
    attacked: int  # points it ran on: those still robust when its turn came
    cost: Cost  # forward/backward passes and queries per sample, and seconds, over its batches
    config: dict[str, Any]  # the attack's hyper-parameters (`attack.config()`)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class EvalResult:
    """The evaluation of one model at one threat model. Per-sample tensors have length n.

    `broken_by[i]` is the index (into `attacks`) of the attack that fooled point i, or -1 when
    no attack did (the point is robust, or the model already misclassifies it). `x_adv[i]` is
    the adversarial example that fooled it (`x[i]` itself where none did), `adv_pred[i]` the
    model's prediction there.
    """

    threat: ThreatModel
    x: Tensor = dataclasses.field(repr=False)
    y: Tensor = dataclasses.field(repr=False)
    clean_pred: Tensor = dataclasses.field(repr=False)
    robust: Tensor = dataclasses.field(repr=False)
    broken_by: Tensor = dataclasses.field(repr=False)
    x_adv: Tensor = dataclasses.field(repr=False)
    adv_pred: Tensor = dataclasses.field(repr=False)
    attacks: tuple[AttackSummary, ...]
    warnings: tuple[str, ...]
    clean_cost: Cost  # the clean predictions
    check_cost: Cost  # the sanity checks' extra attack runs
    seconds: float  # wall time of the cascade at this eps
    seed: int

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def eps(self) -> float:
        return self.threat.eps

    @property
    def clean_correct(self) -> Tensor:
        return self.clean_pred == self.y

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    @property
    def robust_accuracy(self) -> float:
        """Per-sample worst case: the share of points no attack fooled."""
        return float(self.robust.float().mean())


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class SweepResult:
    """One `EvalResult` per eps (in the order given), plus every warning of the sweep: the
    model-level checks, each eps's own warnings (prefixed with the eps when there are several)
    and the sweep-level checks. Indexing and iterating go over `results`."""

    results: tuple[EvalResult, ...]
    warnings: tuple[str, ...]
    seconds: float
    masking_curve: tuple[tuple[float, float], ...] = ()  # (eps, accuracy) with check_masking

    @property
    def curve(self) -> list[tuple[float, float]]:
        """(eps, robust accuracy) pairs ordered by eps."""
        return sorted((r.eps, r.robust_accuracy) for r in self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[EvalResult]:
        return iter(self.results)

    def __getitem__(self, index: int) -> EvalResult:
        return self.results[index]


def evaluate(
    model: Model | nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    attacks: Sequence[AttackSpec] | AttackSpec = DEFAULT_ATTACKS,
    *,
    batch_size: int = 256,
    seed: int = 0,
    progress: ProgressFn | None = None,
    checks: bool = True,
    check_masking: bool = False,
) -> EvalResult:
    """Robust accuracy of `model` on (x, y) under `threat`: the per-sample worst case over a
    cascade of `attacks` (registry names or `NamedAttack`s with option overrides, built with
    `seed`, or attack objects, whose threat is replaced by `threat`). Attacks that do not
    support the threat's norm are skipped with a warning; naming only such attacks raises
    `BadInput`. `checks=False` skips the sanity checks. `progress(description, completed,
    total)` counts each attack's points, moving within a batch (`attack_progress`).

    Example::

        result = adversa.evaluate(model, x, y, ThreatModel(norm="linf", eps=8 / 255))
        result.clean_accuracy, result.robust_accuracy, result.warnings
    """
    if not isinstance(threat, ThreatModel):
        raise BadInput(f"threat must be a ThreatModel, got {type(threat).__name__}")
    sweep = evaluate_sweep(
        model,
        x,
        y,
        threat,
        [threat.eps],
        attacks,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
        checks=checks,
        check_masking=check_masking,
    )
    return dataclasses.replace(sweep.results[0], warnings=sweep.warnings)


def evaluate_sweep(
    model: Model | nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    eps_values: Sequence[float],
    attacks: Sequence[AttackSpec] | AttackSpec = DEFAULT_ATTACKS,
    *,
    batch_size: int = 256,
    seed: int = 0,
    progress: ProgressFn | None = None,
    checks: bool = True,
    check_masking: bool = False,
) -> SweepResult:
    """`evaluate` at each eps in `eps_values` (the rest of `threat` kept), sharing one clean
    pass and the model-level checks; adds the eps-monotonicity check over the sweep. Each
    attack is built once per eps, here only (`attack_list.resolve_attacks`).

    `check_masking=True` adds the costlier checks: the convergence test (twice the steps and
    one more restart for the first iterative attack, on the points still robust) at each eps,
    and an automatic eps sweep up to the full input range on `batch_size` points."""
    start = time.perf_counter()
    if not is_integer(batch_size) or batch_size < 1:
        raise BadInput(f"batch_size must be a positive integer, got {describe(batch_size)}")
    if not is_integer(seed):
        raise BadInput(f"seed must be an integer, got {describe(seed)}")
    if progress is not None and not callable(progress):
        raise BadInput(f"progress must be a callable or None, got {describe(progress)}")
    for flag, value in (("checks", checks), ("check_masking", check_masking)):
        if not isinstance(value, bool):
            raise BadInput(f"{flag} must be True or False, got {describe(value)}")
    threats = sweep_threats(threat, eps_values)
    model = as_model(model, threat.bounds)
    x = as_tensor(x, "x").to(model.device)
    y = as_tensor(y, "y").to(model.device)
    if not x.is_floating_point():
        raise BadInput(f"x must be floating point, got dtype {x.dtype}")
    num_classes = model.resolve_num_classes(x)
    check_batch(x, y, max(threats, key=lambda t: t.eps), num_classes)
    y = y.long()
    batch_size = distributed.batch_size_for(x.shape[0], batch_size)  # every rank gets work
    plans = [resolve_attacks(attacks, t, seed) for t in threats]

    with diagnose_mismatch(model, x, data="x"):
        clean_pred, first_outputs, clean_cost = _clean_pass(model, x, batch_size)
    warnings: list[str] = []
    if checks:
        warnings += sanity.model_checks(model, x, y, clean_pred == y, first_outputs, batch_size)
    results = []
    chance = sanity.chance_level(y, num_classes)
    for t, (plan, skipped) in zip(threats, plans, strict=True):
        result = _cascade(model, x, y, t, plan, clean_pred, clean_cost, batch_size, seed, progress)
        own, check_cost = list(skipped), Cost()
        if checks:
            found, check_cost = _eps_checks(model, x, y, plan, result, chance, batch_size)
            own += found
        if check_masking:
            found, cost = sanity.check_convergence(model, x, y, plan, result.robust, batch_size)
            own += found
            check_cost = check_cost + cost
        results.append(dataclasses.replace(result, warnings=tuple(own), check_cost=check_cost))
    for result in results:
        prefix = f"eps={result.eps:g}: " if len(results) > 1 else ""
        warnings += [prefix + w for w in result.warnings]
    if checks and len(results) > 1:
        warnings += sanity.check_eps_monotone([(r.eps, r.robust_accuracy) for r in results])
    masking_curve: list[tuple[float, float]] = []
    if check_masking:
        found, _, masking_curve = sanity.masking_sweep(
            model, x, y, threats[0], plans[0][0], chance, batch_size
        )
        warnings += [f"eps sweep to the full input range: {w}" for w in found]
    warnings = list(dict.fromkeys(warnings))
    for warning in warnings:
        logger.info("evaluation warning: %s", warning)
    return SweepResult(
        tuple(results), tuple(warnings), time.perf_counter() - start, tuple(masking_curve)
    )


def _eps_checks(
    model: Model,
    x: Tensor,
    y: Tensor,
    plan: list[AttackBase],
    result: EvalResult,
    chance: float,
    batch_size: int,
) -> tuple[list[str], Cost]:
    """The sanity checks of one eps: attack ordering per example, and chance at huge eps."""
    newly_broken = [a.newly_broken for a in result.attacks]
    warnings, cost = sanity.single_step_vs_iterative(
        model, x, y, plan, result.broken_by, newly_broken, batch_size
    )
    warnings += sanity.check_black_box_after_white_box(
        [(a.name, a.access) for a in plan], newly_broken, result.n
    )
    warnings += sanity.check_chance_at_large_eps(
        result.threat, x[0].numel(), result.robust_accuracy, chance
    )
    return warnings, cost


def _clean_pass(model: Model, x: Tensor, batch_size: int) -> tuple[Tensor, Tensor, Cost]:
    """Predictions on every point, the first batch's raw outputs, and the cost (all ranks)."""
    start = time.perf_counter()
    pieces, first = [], None
    idx_all = torch.arange(x.shape[0], device=x.device)
    with torch.no_grad(), model.eval_mode(), model.counting() as counter:
        for idx in distributed.my_batches(idx_all, batch_size):
            out = model(x[idx])
            first = out if idx[0] == 0 else first
            pieces.append((idx, out.argmax(1), int((~out.isfinite().all(1)).sum())))
    preds = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    nonfinite = 0
    for rank_pieces, rank_first in distributed.all_gather((pieces, first)):
        for idx, pred, bad in rank_pieces:
            preds[idx.to(x.device)] = pred.to(x.device)
            nonfinite += bad
        first = rank_first.to(x.device) if rank_first is not None else first
    if nonfinite:
        raise BadInput(
            f"model {model.name!r} returned NaN or infinite logits for {nonfinite} of "
            f"{x.shape[0]} inputs: its accuracy would be meaningless; check the model and its "
            "weights on this data"
        )
    cost = distributed.sum_costs(counter.freeze(time.perf_counter() - start))
    return preds, first, cost


def _cascade(
    model: Model,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    plan: list[AttackBase],
    clean_pred: Tensor,
    clean_cost: Cost,
    batch_size: int,
    seed: int,
    progress: ProgressFn | None,
) -> EvalResult:
    start = time.perf_counter()
    n = y.shape[0]
    robust = clean_pred == y
    broken_by = torch.full((n,), -1, dtype=torch.long, device=y.device)
    x_adv = x.clone()
    adv_pred = clean_pred.clone()
    summaries = []
    for k, attack in enumerate(plan):
        todo = torch.nonzero(robust).squeeze(1)
        if "clean_check" in {f.name for f in dataclasses.fields(attack)}:
            # every point left is classified correctly: the attack's own clean pass is waste
            attack = dataclasses.replace(attack, clean_check=False)
        label = f"{attack.name} eps={threat.eps:g}"
        shown = AttackProgress(progress, label, todo.shape[0], attack.config())
        cost, hits = Cost(), []
        for idx in distributed.my_batches(todo, batch_size):
            with shown.batch(model.module, idx.shape[0]):  # points, moving within a batch
                result = attack(model, x[idx], y[idx])
            cost = cost + result.cost
            hits.append(
                (idx[result.success], result.x_adv[result.success], result.pred[result.success])
            )
        for rank_hits in distributed.all_gather(hits):
            for hit, x_hit, pred_hit in rank_hits:
                hit = hit.to(x.device)
                robust[hit] = False
                broken_by[hit] = k
                x_adv[hit] = x_hit.to(x.device)
                adv_pred[hit] = pred_hit.to(x.device)
        cost = distributed.sum_costs(cost)
        summaries.append(
            AttackSummary(
                name=attack.name,
                robust_accuracy=float(robust.float().mean()),
                newly_broken=int((broken_by == k).sum()),
                attacked=int(todo.shape[0]),
                cost=cost,
                config=attack.config(),
            )
        )
    return EvalResult(
        threat=threat,
        x=x,
        y=y,
        clean_pred=clean_pred,
        robust=robust,
        broken_by=broken_by,
        x_adv=x_adv,
        adv_pred=adv_pred,
        attacks=tuple(summaries),
        warnings=(),
        clean_cost=clean_cost,
        check_cost=Cost(),
        seconds=time.perf_counter() - start,
        seed=seed,
    )
