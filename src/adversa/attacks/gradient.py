"""The projected-gradient ascent template, and the per-norm pieces every gradient attack shares.

One loop (`ascend`): a per-sample loss and its gradient -> the steepest-ascent step in the
threat model's norm (`steepest_step`) -> the threat model's projection. A frozen `Ascent`
says how to climb: steps and step size (or a per-step schedule), batched restarts, a random
start, early stopping, and whether to keep the best point per sample or the last iterate.
What is climbed is an `Objective`, a function of the candidate rows, so the same loop serves
every caller:

- PGD and FGSM (`gradient_ascent`): a loss of the classifier's logits; best point kept,
  fooled samples leave the batch;
- adversarial training (`defenses.objectives.inner_max`): the last iterate of every point,
  outside any evaluation;
- the smoothed classifier's attack (`certify.smoothing.attack_smoothed`): a loss of x' that
  draws fresh noise every step; last iterate;
- the detector-aware attack (`evaluation.detector_eval.DetectorAwarePGD`): a loss of a
  (classifier, detector) composite, one (weight, kappa) setting per restart; best point;
- the clean-label poisons (`poisoning.clean_label.pgd_away`): last iterate.

APGD keeps its own loop (momentum, per-sample step sizes halved at checkpoints, restarts
from the best point) and reuses `ascent_step` and `BestTracker` (see `attacks.apgd`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from adversa.errors import BadInput, require
from adversa.losses import LossFn, is_adversarial
from adversa.model import Model
from adversa.threat import ThreatModel


def sparse_l1_direction(
    grad: Tensor, x_adv: Tensor, share: Tensor, bounds: tuple[float, float]
) -> Tensor:
    """A unit-l1 ascent direction: sign(grad) on the ceil(share * d) coordinates of largest
    |grad| per sample (`share` broadcastable to (B, 1)), spread evenly (the sparse l1 step of
    Tramer & Boneh 2019, arXiv:1904.13000).

    Coordinates pinned at a box edge whose gradient points out of the box cannot move: they
    are left out before ranking, so the step is not wasted on them.
    """
    lo, hi = bounds
    pinned = ((x_adv >= hi) & (grad > 0)) | ((x_adv <= lo) & (grad < 0))
    flat = grad.masked_fill(pinned, 0).flatten(1)
    dim = flat.shape[1]
    share = torch.as_tensor(share, dtype=flat.dtype, device=flat.device).reshape(-1)
    k = (share * dim).ceil().long().clamp(1, dim).expand(flat.shape[0])
    threshold = flat.abs().sort(1, descending=True).values.gather(1, (k - 1)[:, None])
    chosen = (flat.abs() >= threshold) & (flat != 0)
    count = chosen.sum(1, keepdim=True).clamp_min(1)
    return (flat.sign() * chosen / count).view_as(grad)


def steepest_step(
    grad: Tensor,
    norm: str,
    step_size: float | Tensor,
    *,
    x_adv: Tensor,
    bounds: tuple[float, float],
    l1_sparsity: float,
) -> Tensor:
    """The steepest-ascent direction of unit size in `norm`, scaled by `step_size` (a number,
    or per-sample sizes shaped to broadcast against `grad`).

    linf: sign(g). l2: g / ||g||_2. l1: `sparse_l1_direction` on the top (1 - l1_sparsity)
    share of coordinates.
    """
    if norm == "linf":
        return step_size * grad.sign()
    if norm == "l2":
        flat = grad.flatten(1)
        n = torch.linalg.vector_norm(flat, dim=1).clamp_min(1e-12)
        return step_size * (flat / n[:, None]).view_as(grad)
    share = torch.tensor(1.0 - l1_sparsity)
    return step_size * sparse_l1_direction(grad, x_adv, share, bounds)


def ascent_step(
    threat: ThreatModel,
    x_adv: Tensor,
    grad: Tensor,
    step_size: float | Tensor,
    center: Tensor,
    l1_sparsity: float = 0.99,
) -> Tensor:
    """One projected step: `x_adv` moved by `steepest_step` in the threat model's norm, then
    projected onto the ball around `center` and the box. `x_adv` must be detached."""
    move = steepest_step(
        grad,
        threat.norm,
        step_size,
        x_adv=x_adv,
        bounds=threat.bounds,
        l1_sparsity=l1_sparsity,
    )
    return threat.project(x_adv + move, center)


def _first_row_per_owner(owner: Tensor, score: Tensor, n_owners: int) -> Tensor:
    """Index of the highest-scoring row of each owner (lowest row index among ties), or -1."""
    best = torch.full((n_owners,), float("-inf"), device=score.device, dtype=score.dtype)
    best = best.scatter_reduce(0, owner, score, reduce="amax")
    rows = torch.arange(owner.shape[0], device=owner.device)
    is_best = score == best[owner]
    sentinel = owner.shape[0]
    pick = torch.full((n_owners,), sentinel, device=owner.device, dtype=torch.long)
    pick = pick.scatter_reduce(0, owner, torch.where(is_best, rows, sentinel), reduce="amin")
    return torch.where(pick == sentinel, -1, pick)


class BestTracker:
    """Per-sample best point over rows that may hold several copies (restarts) of a sample.

    A row that fools the model beats any row that does not; otherwise the higher loss wins.
    `done` marks samples already fooled: their rows can leave the batch.
    """

    def __init__(self, x: Tensor, done: Tensor) -> None:
        self.x_best = x.clone()
        self.done = done.clone()
        self.best_score = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)

    def update(self, owner: Tensor, x_cand: Tensor, loss: Tensor, fooled: Tensor) -> Tensor:
        """Record the best candidate row per owner; return the rows still worth attacking."""
        score = torch.where(fooled, torch.inf, loss.to(self.best_score.dtype))
        pick = _first_row_per_owner(owner, score, self.x_best.shape[0])
        idx = torch.nonzero(pick >= 0).squeeze(1)
        rows = pick[idx]
        improved = score[rows] > self.best_score[idx]
        idx, rows = idx[improved], rows[improved]
        self.x_best[idx] = x_cand[rows].to(self.x_best.dtype)
        self.best_score[idx] = score[rows]
        self.done[idx] |= fooled[rows]
        return ~self.done[owner]


Objective = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]
"""`objective(x_rows, row) -> (loss, fooled)`: the per-row loss (R,) to maximise at the
candidate rows (R, ...) and, when the best point is tracked, which rows fool the model (bool,
R; else None). `row` (R,) is each row's index in the stack of `restarts` copies of the batch
of n samples: row r is restart r // n of sample r % n."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Ascent:
    """How `ascend` climbs: the configuration every projected-gradient caller fills in.

    `step_size` is one number, or a schedule with one size per step. `restarts` copies of
    each sample run side by side as one batch, from independent random starts when
    `random_start` (else from x). With `track_best` the best point per sample is returned: a
    point that fools the model beats any that does not (the first one found, lowest restart
    on ties), otherwise the highest loss; with `early_stop` a sample leaves the batch as soon
    as one of its copies fools the model, so later steps cost nothing for it. Without
    `early_stop` every row takes every step (equal work per sample, for comparisons with
    libraries that do not stop early); the best-point rule is the same (a fooled sample keeps
    the first point that fooled the model), so the returned points are the same, up to
    rounding from the larger batches, and only the cost grows. Without `track_best`
    (adversarial training, smoothing, poisons) the last iterate is returned, with one restart
    and no early stop.

    Without `final_eval` (one restart only) the point after the last step is not evaluated:
    a sample not fooled by any evaluated iterate gets that last point, unchecked. Callers
    whose result is verified anyway (the harness's final forward pass, PGD and FGSM) save one
    forward pass per sample this way and find the same fooling points.
    """

    steps: int  # gradient steps per restart
    step_size: float | tuple[float, ...]  # per step, in the threat model's norm
    restarts: int = 1  # copies of each sample, batched
    random_start: bool = True  # start uniformly inside the ball (needs a generator)
    early_stop: bool = True  # a fooled sample leaves the batch (track_best only)
    track_best: bool = True  # return the best point per sample, else the last iterate
    l1_sparsity: float = 0.99  # L1 only: share of coordinates left out of each step
    final_eval: bool = True  # evaluate the point after the last step (else keep it unchecked)

    def __post_init__(self) -> None:
        require(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        require(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}")
        sizes = self.step_size if isinstance(self.step_size, tuple) else (self.step_size,)
        require(all(s >= 0 for s in sizes), f"step_size must be >= 0, got {self.step_size}")
        require(
            not isinstance(self.step_size, tuple) or len(self.step_size) == self.steps,
            f"a step_size schedule needs one size per step ({self.steps}), got {len(sizes)}",
        )
        require(
            self.track_best or (self.restarts == 1 and not self.early_stop),
            "the last iterate (track_best=False) is defined for one restart without early stop",
        )
        require(0 <= self.l1_sparsity < 1, f"l1_sparsity must be in [0, 1), got {self.l1_sparsity}")
        require(
            self.final_eval or self.restarts == 1,
            "skipping the final evaluation (final_eval=False) needs one restart",
        )

    def size(self, step: int) -> float:
        """The step size at step `step` (from 0)."""
        return self.step_size[step] if isinstance(self.step_size, tuple) else self.step_size


def ascend(
    objective: Objective,
    threat: ThreatModel,
    x: Tensor,
    plan: Ascent,
    *,
    gen: torch.Generator | None = None,
    start: Tensor | None = None,
    done: Tensor | None = None,
) -> Tensor:
    """Maximise `objective` inside `threat`'s ball around each sample of `x`, as `plan` says;
    return the best point per sample (`plan.track_best`) or the last iterate, detached.

    `start` (one restart only) replaces the first iterate and is projected first; otherwise
    it is `threat.random_start` drawn from `gen`, or x. `done` (bool, n) marks samples that
    need no attack (already fooled): they are returned as they are and cost nothing.
    Cost: `objective` is evaluated with a backward pass `steps` times per row (fewer with
    early stopping), plus once without one after the last step when the best point is kept
    and `plan.final_eval`.
    The caller owns the model's mode and the cost scope.
    """
    if (start is not None and plan.restarts > 1) or (
        start is None and plan.random_start and gen is None
    ):
        raise BadInput("ascend: `start` needs one restart, and a random start a generator")
    n = x.shape[0]
    done = torch.zeros(n, dtype=torch.bool, device=x.device) if done is None else done
    row = torch.arange(n * plan.restarts, device=x.device)
    row = row[~done[row % n]]
    owner = row % n
    center = x[owner]
    if start is not None:
        x_adv = threat.project(start.detach()[~done], center)
    elif plan.random_start:
        x_adv = threat.random_start(center, gen)
    else:
        x_adv = center.clone()
    if not plan.track_best:
        return _last_iterate(objective, threat, x_adv, center, row, plan)
    best = BestTracker(x, done)
    for k in range(plan.steps):
        if row.numel() == 0:
            return best.x_best
        x_adv.requires_grad_(True)
        loss, fooled = objective(x_adv, row)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = x_adv.detach()
        stepped = ascent_step(threat, x_adv, grad, plan.size(k), center, plan.l1_sparsity)
        keep = best.update(owner, x_adv, loss.detach(), _fooled(fooled))
        x_adv = stepped
        if plan.early_stop and not bool(keep.all()):
            row, owner, center, x_adv = row[keep], owner[keep], center[keep], x_adv[keep]
    if row.numel() and plan.final_eval:
        with torch.no_grad():
            loss, fooled = objective(x_adv, row)
            best.update(owner, x_adv, loss, _fooled(fooled))
    elif row.numel():  # one restart: each remaining row is its own sample, not yet fooled
        best.x_best[owner] = x_adv.to(best.x_best.dtype)
    return best.x_best


def _fooled(fooled: Tensor | None) -> Tensor:
    if fooled is None:
        raise BadInput(
            "ascend: tracking the best point needs an objective that says which rows fool the model"
        )
    return fooled.detach()


def _last_iterate(
    objective: Objective,
    threat: ThreatModel,
    x_adv: Tensor,
    center: Tensor,
    row: Tensor,
    plan: Ascent,
) -> Tensor:
    """Every row takes every step; the last iterate. No step can move a point when eps = 0."""
    if threat.eps == 0:
        return x_adv.detach()
    for k in range(plan.steps):
        x_adv.requires_grad_(True)
        loss, _ = objective(x_adv, row)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv = ascent_step(threat, x_adv.detach(), grad, plan.size(k), center, plan.l1_sparsity)
    return x_adv.detach()


def gradient_ascent(
    model: Model,
    threat: ThreatModel,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn,
    plan: Ascent,
    gen: torch.Generator,
    clean_check: bool = True,
) -> Tensor:
    """`ascend` on `loss_fn` of the classifier's logits, with `is_adversarial` as the
    fooled test (PGD, FGSM). Points the model already gets wrong (right, when targeted) are
    returned as they are after one forward pass (without `clean_check`, the caller's word
    that none is: every point is attacked). Cost per attacked sample: at most
    `steps * restarts` forward and backward passes, plus one forward pass before the loop
    (`clean_check`) and, with `plan.final_eval`, one after it."""
    targeted, n = threat.targeted, x.shape[0]
    if clean_check:
        with torch.no_grad():
            already = is_adversarial(model(x), y, targeted)
    else:
        already = torch.zeros(n, dtype=torch.bool, device=x.device)

    def objective(x_rows: Tensor, row: Tensor) -> tuple[Tensor, Tensor]:
        labels = y[row % n]
        logits = model(x_rows)
        return loss_fn(logits, labels), is_adversarial(logits.detach(), labels, targeted)

    return ascend(objective, threat, x, plan, gen=gen, done=already)
