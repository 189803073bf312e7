"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", arXiv:2003.01690) for Linf and L2, and l1-APGD (Croce &
Hein 2021, "Mind the box", arXiv:2103.01208) for L1.

PGD with momentum 0.75 and a per-sample step size that starts at 2 * eps. At checkpoints
w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06),
a sample halves its step size and restarts from its best point if the loss rose in fewer than
rho of the steps since the last checkpoint, or if it kept its step size there and its best loss
has not improved since (from the second checkpoint on, as in the authors' code). L1 follows
l1-APGD: no momentum, a sparse step with a per-sample sparsity, the exact projection onto the
l1-ball intersected with the box, and checkpoints every 4% of the steps that adapt sparsity and
step size (`adversa.attacks.apgd_l1`).

Registered as "apgd-ce" (alias "apgd", cross-entropy), "apgd-dlr" (the DLR loss) and "apgd-t"
(targeted DLR against each of the `n_target_classes` classes the clean logits rank highest
after the true one, one target after another on the points still robust, as in AutoAttack;
untargeted from the user's side: success is misclassification). With `threat.targeted`,
apgd-ce and apgd-dlr maximise the targeted CE or DLR loss towards the given labels.

Restarts are batched: `restarts` copies of each sample run side by side from independent random
starts. A sample leaves the batch as soon as one of its copies fools the model.

Cost per attacked sample: `steps * restarts` forward and backward passes at most (times the
number of target classes tried, for apgd-t), plus `restarts` forward passes after the last
step, one clean forward pass and the harness's verification.

Example::

    threat = ThreatModel(norm="linf", eps=8 / 255)
    result = get_attack("apgd-ce", threat, steps=100)(model, x, y)   # x: (B, 3, 32, 32)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from adversa.attacks.apgd_l1 import SPARSITY_START, l1_checkpoints, l1_step, sparsity_checkpoint
from adversa.attacks.base import AttackBase, register_attack
from adversa.attacks.gradient import BestTracker, ascent_step
from adversa.errors import BadInput, require
from adversa.losses import dlr_targeted, get_loss, is_adversarial
from adversa.model import Model
from adversa.threat import ThreatModel

MOMENTUM = 0.75  # alpha: weight of the new step against the previous displacement
RowFn = Callable[[Tensor, Tensor], Tensor]  # (logits, sample index of each row) -> (rows,)


def checkpoint_fractions(upto: float = 1.0) -> list[float]:
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), while <= upto."""
    return [h / 100 for h in _hundredths(upto)]


def _hundredths(upto: float) -> list[int]:
    out, prev, cur = [0], 0, 22  # exact integer arithmetic, in hundredths
    while cur <= upto * 100:
        out.append(cur)
        prev, cur = cur, cur + max(cur - prev - 3, 6)
    return out


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j * steps), 1 <= w_j < steps, where step sizes are checked."""
    marks = sorted({-(-h * steps // 100) for h in _hundredths(1.0)})
    return [w for w in marks if 0 < w < steps]


def halve_step_sizes(
    step_size: Tensor,
    increases: Tensor,
    interval: int,
    best_loss: Tensor,
    best_loss_before: Tensor,
    reduced_before: Tensor,
    rho: float,
) -> tuple[Tensor, Tensor]:
    """APGD's checkpoint rule, per sample; returns (new step sizes, which samples halved).

    A sample halves its step size (and restarts from its best point) if the loss rose in fewer
    than `rho * interval` of the `interval` steps since the last checkpoint (`increases`), or
    if it did not halve at the last checkpoint (`reduced_before`) and its best loss has not
    improved since (`best_loss_before`).
    """
    oscillating = increases < rho * interval
    stalled = ~reduced_before & (best_loss <= best_loss_before)
    halve = oscillating | stalled
    return torch.where(halve, step_size / 2, step_size), halve


def apgd_ascent(
    model: Model,
    threat: ThreatModel,
    x: Tensor,
    *,
    loss_fn: RowFn,
    fooled_fn: RowFn,
    steps: int,
    restarts: int,
    rho: float,
    gen: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Maximise `loss_fn` from `restarts` random starts per sample of `x` (none fooled yet).

    Returns the best point per sample (a fooling one if any, else the highest loss) and which
    samples were fooled. Both row functions receive the sample index of each row.

    This loop is not the shared template `attacks.gradient.ascend`, because APGD's state is
    per row and changes the iterate itself: a step size per sample, halved at checkpoints
    that look back over the loss history; a restart from the best point (with its gradient)
    when halving; a momentum term mixing the new step with the previous displacement; and,
    for L1, a sparsity adapted per sample. The template's fixed step schedule has none of
    these. It shares the rest: `ascent_step` (steepest step and projection) for Linf and L2,
    `BestTracker` for the best point per sample and early stopping, and the threat model's
    random start.
    """
    n, l1, eps = x.shape[0], threat.norm == "l1", threat.eps
    best = BestTracker(x, torch.zeros(n, dtype=torch.bool, device=x.device))
    owner = torch.arange(n, device=x.device).repeat(restarts)
    center = x[owner]
    rows = owner.shape[0]
    start = threat.random_start(center, gen)
    per_row = dict(device=x.device, dtype=x.dtype)
    s = {
        "x": start,
        "x_prev": start,
        "x_max": start,
        "grad_max": torch.zeros_like(start),
        "f_max": torch.full((rows,), -torch.inf, **per_row),
        "f_max_before": torch.full((rows,), -torch.inf, **per_row),
        "loss_prev": torch.full((rows,), torch.inf, **per_row),
        "increases": torch.zeros(rows, **per_row),
        "reduced_before": torch.ones(rows, dtype=torch.bool, device=x.device),
        "step_size": torch.full((rows,), (1.0 if l1 else 2.0) * eps, **per_row),
        "sparsity": torch.full((rows,), SPARSITY_START, **per_row),
        "nnz_before": torch.full((rows,), float(x[0].numel()), **per_row),
    }
    marks = set(l1_checkpoints(steps) if l1 else checkpoints(steps))
    last_mark = 0
    shape = (-1,) + (1,) * (x.dim() - 1)

    for k in range(steps):
        if owner.numel() == 0:
            return best.x_best, best.done
        x_adv = s["x"].detach().requires_grad_(True)
        logits = model(x_adv)
        loss = loss_fn(logits, owner)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        x_adv, loss, logits = x_adv.detach(), loss.detach(), logits.detach()
        keep = best.update(owner, x_adv, loss, fooled_fn(logits, owner))

        better = loss > s["f_max"]
        s["x_max"] = torch.where(better.view(shape), x_adv, s["x_max"])
        s["grad_max"] = torch.where(better.view(shape), grad, s["grad_max"])
        s["f_max"] = torch.where(better, loss, s["f_max"])
        s["increases"] = s["increases"] + (loss > s["loss_prev"]).to(x.dtype)
        s["loss_prev"] = loss

        if k in marks:
            if l1:
                s["step_size"], s["sparsity"], s["nnz_before"], restart = sparsity_checkpoint(
                    s["step_size"], s["x_max"], center, s["nnz_before"], eps
                )
            else:
                s["step_size"], restart = halve_step_sizes(
                    s["step_size"],
                    s["increases"],
                    k - last_mark,
                    s["f_max"],
                    s["f_max_before"],
                    s["reduced_before"],
                    rho,
                )
                s["reduced_before"], s["f_max_before"] = restart, s["f_max"]
            last_mark = k
            s["increases"] = torch.zeros_like(s["increases"])
            x_adv = torch.where(restart.view(shape), s["x_max"], x_adv)
            grad = torch.where(restart.view(shape), s["grad_max"], grad)
            s["loss_prev"] = torch.where(restart, s["f_max"], s["loss_prev"])

        step = s["step_size"].view(shape)
        if l1:
            x_next = l1_step(x_adv, grad, center, step, s["sparsity"], eps, threat.bounds)
        else:
            x_next = ascent_step(threat, x_adv, grad, step, center, l1_sparsity=0.0)
            if k > 0:
                mixed = x_adv + MOMENTUM * (x_next - x_adv) + (1 - MOMENTUM) * (x_adv - s["x_prev"])
                x_next = threat.project(mixed, center)
        s["x_prev"], s["x"] = x_adv, x_next
        if not bool(keep.all()):
            owner, center = owner[keep], center[keep]
            s = {name: value[keep] for name, value in s.items()}

    if owner.numel():
        with torch.no_grad():
            logits = model(s["x"])
            best.update(owner, s["x"], loss_fn(logits, owner), fooled_fn(logits, owner))
    return best.x_best, best.done


@dataclasses.dataclass(frozen=True, kw_only=True)
class _APGDConfig(AttackBase):
    steps: int = 100  # gradient steps per restart (and per target class, for apgd-t)
    restarts: int = 1  # independent random starts, run as one batch
    rho: float = 0.75  # Linf/L2: halve when the loss rose in fewer than rho of the steps

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}")
        require(0 < self.rho <= 1, f"rho must be in (0, 1], got {self.rho}")
        require(
            math.isfinite(self.threat.eps),
            f"{self.name} needs a finite eps, got {self.threat.eps}",
        )

    def _ascent(
        self, model: Model, x: Tensor, loss_fn: RowFn, fooled_fn: RowFn, gen: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        return apgd_ascent(
            model,
            self.threat,
            x,
            loss_fn=loss_fn,
            fooled_fn=fooled_fn,
            steps=self.steps,
            restarts=self.restarts,
            rho=self.rho,
            gen=gen,
        )


def _needs_classes(name: str, loss: str, have: int | None, need: int) -> None:
    if have is not None and have < need:
        raise BadInput(f"{name}: the {loss} loss needs at least {need} classes, got {have}")


@register_attack("apgd-ce", aliases=("apgd",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class APGD(_APGDConfig):
    """APGD on the cross-entropy loss (targeted CE when `threat.targeted`)."""

    loss: ClassVar[str] = "ce"

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        targeted = self.threat.targeted
        if self.loss == "dlr":
            _needs_classes(self.name, "dlr", model.num_classes, 4 if targeted else 3)
        base = get_loss(self.loss, targeted)
        with torch.no_grad():
            todo = torch.nonzero(~is_adversarial(model(x), y, targeted)).squeeze(1)
        x_adv = x.clone()
        if todo.numel():
            labels = y[todo]
            x_adv[todo], _ = self._ascent(
                model,
                x[todo],
                lambda logits, rows: base(logits, labels[rows]),
                lambda logits, rows: is_adversarial(logits, labels[rows], targeted),
                gen,
            )
        return x_adv


@register_attack("apgd-dlr")
@dataclasses.dataclass(frozen=True, kw_only=True)
class APGDDLR(APGD):
    """APGD on the DLR loss (targeted DLR when `threat.targeted`)."""

    loss: ClassVar[str] = "dlr"


@register_attack("apgd-t")
@dataclasses.dataclass(frozen=True, kw_only=True)
class APGDT(_APGDConfig):
    """APGD on the targeted DLR loss, one target class after another on still-robust points."""

    n_target_classes: int = 9  # the highest-ranked other classes of the clean logits to try

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            not self.threat.targeted,
            "apgd-t picks its own target classes and reports misclassification: "
            "threat.targeted must be False, got True",
        )
        require(
            self.n_target_classes >= 1,
            f"n_target_classes must be >= 1, got {self.n_target_classes}",
        )

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        _needs_classes(self.name, "targeted dlr", model.num_classes, 4)
        with torch.no_grad():
            logits = model(x)
        fooled = logits.argmax(1) != y
        ranked = logits.scatter(1, y[:, None], -torch.inf).argsort(1, descending=True)
        x_adv = x.clone()
        for rank in range(min(self.n_target_classes, logits.shape[1] - 1)):
            todo = torch.nonzero(~fooled).squeeze(1)
            if todo.numel() == 0:
                break
            labels, targets = y[todo], ranked[todo, rank]
            x_adv[todo], done = self._ascent(
                model, x[todo], _targeted_dlr(labels, targets), _misclassified(labels), gen
            )
            fooled[todo] |= done
        return x_adv


def _targeted_dlr(labels: Tensor, targets: Tensor) -> RowFn:
    return lambda logits, rows: dlr_targeted(logits, targets[rows], labels[rows])


def _misclassified(labels: Tensor) -> RowFn:
    return lambda logits, rows: logits.argmax(1) != labels[rows]
