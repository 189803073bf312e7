"""Sanity checks for an evaluation: signs of gradient masking and other evaluation pitfalls.

Each check is a small pure function returning a list of warning strings (empty when the check
passes); the probes that measure something on the model (`probe_*`) are separate, cheap, and
never counted into an attack's cost. The checks follow Carlini et al. 2019 ("On Evaluating
Adversarial Robustness", arXiv:1902.06705, Sec. 5), Athalye, Carlini & Wagner 2018
("Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420) and the flags of
AutoAttack (Croce & Hein 2020):

- `check_probability_outputs`: the model returns probabilities, not logits.
- `check_nondeterministic`: identical forward passes disagree (a randomised model needs EOT).
- `check_zero_gradients`: many input gradients are exactly zero, NaN or infinite.
- `check_single_step_vs_iterative`: a single-step attack fools points the iterative one misses.
- `check_black_box_after_white_box`: a black-box attack fools points the gradient ones missed.
- `check_eps_monotone`: robust accuracy rises with eps somewhere in a sweep.
- `check_chance_at_large_eps`: robust accuracy stays above chance although eps is so large that
  every input can be moved to the centre of the input box.
- `check_convergence` (asked for with `check_masking`): twice the steps and one more restart
  still lower robust accuracy.
- `masking_sweep` (asked for with `check_masking`): an automatic eps sweep up to the full input
  range must fall monotonically to chance.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from adversa.attacks import AttackBase
from adversa.losses import ce
from adversa.model import Access, Cost, Model
from adversa.physical.masked import MaskedThreat
from adversa.threat import ThreatModel

SINGLE_STEP: tuple[str, ...] = ("fgsm",)  # registry names of single-step gradient attacks
ITERATIVE: tuple[str, ...] = ("pgd", "apgd-ce", "apgd-dlr")  # loss-maximising iterative ones


def check_probability_outputs(outputs: Tensor, atol: float = 1e-3) -> list[str]:
    """Warn when every row of `outputs` (B, C) is non-negative and sums to 1."""
    if outputs.numel() == 0 or outputs.dim() != 2:
        return []
    out = outputs.detach().float()
    looks_like_probs = bool((out >= 0).all()) and bool(((out.sum(1) - 1).abs() <= atol).all())
    if not looks_like_probs:
        return []
    return [
        "the model's outputs look like probabilities (non-negative rows summing to 1); attacks "
        "expect logits, and softmax outputs saturate gradients and hide adversarial examples: "
        "remove the final softmax"
    ]


def check_nondeterministic(max_abs_diff: float, atol: float = 1e-5) -> list[str]:
    """Warn when two forward passes on the same inputs (in eval mode) differ by more than atol."""
    if max_abs_diff <= atol:
        return []
    return [
        f"the model is randomised: two forward passes on the same inputs differ by up to "
        f"{max_abs_diff:.3g}; gradient attacks need expectation over transformation (EOT) on "
        "such models, and the robust accuracy reported here may be too high"
    ]


def check_zero_gradients(
    zero_share: float, nonfinite_share: float, threshold: float = 0.5
) -> list[str]:
    """Warn when more than `threshold` of the input gradients are exactly zero, or any of them
    holds NaN or infinite values: the attacks then have nothing to follow."""
    warnings = []
    if zero_share > threshold:
        warnings.append(
            f"{zero_share:.0%} of the input gradients at clean points are exactly zero: the "
            "model may mask its gradients (non-differentiable layer, saturation); gradient "
            "attacks will be weak, so try BPDA or a gradient-free attack"
        )
    if nonfinite_share > 0:
        warnings.append(
            f"{nonfinite_share:.0%} of the input gradients at clean points contain NaN or "
            "infinite values: the model's gradients are broken, and gradient attacks unreliable"
        )
    return warnings


def check_single_step_vs_iterative(
    single: str, iterative: str, count: int, n: int, tolerance: float = 0.01
) -> list[str]:
    """Warn when `count` of `n` points were fooled by the single-step attack but not by the
    iterative one, and that is more than `tolerance` of the points (iterative attacks should
    be at least as strong, per example)."""
    if n <= 0 or count <= tolerance * n:
        return []
    return [
        f"{count} of {n} points were fooled by single-step {single!r} but not by iterative "
        f"{iterative!r}: a sign of gradient masking, or of too few steps or a poor step size"
    ]


def check_black_box_after_white_box(
    attacks: Sequence[tuple[str, Access]],
    newly_broken: Sequence[int],
    n: int,
    tolerance: float = 0.01,
) -> list[str]:
    """Warn when a score- or label-based attack that ran after a gradient attack in the cascade
    newly broke more than `tolerance` of the n points: white-box attacks should dominate
    black-box ones, so their success signals masked gradients (AutoAttack's Square flag)."""
    warnings = []
    seen_gradient: list[str] = []
    for (name, access), broken in zip(attacks, newly_broken, strict=True):
        if access >= Access.GRADIENT:
            seen_gradient.append(name)
        elif seen_gradient and n > 0 and broken > tolerance * n:
            warnings.append(
                f"black-box {name!r} fooled {broken} of {n} points that the gradient attacks "
                f"({', '.join(seen_gradient)}) could not: a sign of gradient masking"
            )
    return warnings


def check_eps_monotone(points: Sequence[tuple[float, float]], tolerance: float = 0.0) -> list[str]:
    """Warn for each step of the sweep, ordered by eps, where robust accuracy goes up by more
    than `tolerance`: a larger ball contains every point of a smaller one."""
    ordered = sorted(points)
    warnings = []
    for (eps_a, acc_a), (eps_b, acc_b) in itertools.pairwise(ordered):
        if eps_b > eps_a and acc_b > acc_a + tolerance:
            warnings.append(
                f"robust accuracy rises from {acc_a:.2%} at eps={eps_a:g} to {acc_b:.2%} at "
                f"eps={eps_b:g}; it cannot rise with eps, so the attacks did not converge "
                "or the model masks its gradients"
            )
    return warnings


def check_chance_at_large_eps(
    threat: ThreatModel, dim: int, robust_accuracy: float, chance: float
) -> list[str]:
    """Warn when robust accuracy stays above `chance` at an eps of at least half of
    `threat.max_eps(dim)`: such a ball around any input contains the centre of the input box,
    so an attacker can make all inputs identical and accuracy must fall to chance or below."""
    if math.isinf(threat.eps) or threat.eps < 0.5 * threat.max_eps(dim):
        return []
    if isinstance(threat, MaskedThreat) and not bool(threat.mask.all()):
        return []  # the pixels outside the mask never move: inputs cannot become identical
    if robust_accuracy <= chance:
        return []
    return [
        f"robust accuracy is {robust_accuracy:.2%} at eps={threat.eps:g}, above chance "
        f"({chance:.2%}) although that eps lets every input be moved to the same point: "
        "the attacks fail where they cannot, a strong sign of gradient masking"
    ]


def chance_level(y: Tensor, num_classes: int) -> float:
    """Accuracy of always predicting the most frequent label (at least 1 / num_classes)."""
    if y.numel() == 0:
        return 1.0 / max(num_classes, 1)
    share = torch.bincount(y.long(), minlength=num_classes).max().item() / y.numel()
    return max(share, 1.0 / max(num_classes, 1))


@torch.no_grad()
def probe_nondeterminism(model: Model, x: Tensor) -> float:
    """Largest absolute difference between two eval-mode forward passes on `x` (uncounted)."""
    with model.eval_mode():
        first = model(x)
        second = model(x)
    return float((first - second).abs().max()) if first.numel() else 0.0


def probe_gradients(model: Model, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Shares of points whose cross-entropy input gradient is all zero, or not finite.

    One forward and one backward pass on `x`; views without gradient access return (0, 0).
    """
    if model.access < Access.GRADIENT or x.shape[0] == 0:
        return 0.0, 0.0
    with model.frozen():
        x_in = x.detach().clone().requires_grad_(True)
        logits = model(x_in)
        if not logits.requires_grad:
            return 1.0, 0.0
        (grad,) = torch.autograd.grad(ce(logits, y).sum(), x_in, allow_unused=True)
    if grad is None:
        return 1.0, 0.0
    flat = grad.flatten(1)
    finite = torch.isfinite(flat).all(1)
    zero = finite & (flat == 0).all(1)
    return float(zero.float().mean()), float((~finite).float().mean())


def model_checks(
    model: Model,
    x: Tensor,
    y: Tensor,
    correct: Tensor,
    first_outputs: Tensor,
    max_points: int,
) -> list[str]:
    """The checks that do not depend on eps: probability outputs (on `first_outputs`, the
    clean pass's first batch), randomness and gradients (on at most `max_points` points the
    model classifies correctly, or any points if there are none). Cost: two forward passes
    and one backward pass per probed point."""
    pool = torch.nonzero(correct).squeeze(1)
    if pool.numel() == 0:
        pool = torch.arange(y.shape[0], device=y.device)
    probe = pool[:max_points]
    warnings = check_probability_outputs(first_outputs)
    warnings += check_nondeterministic(probe_nondeterminism(model, x[probe]))
    warnings += check_zero_gradients(*probe_gradients(model, x[probe], y[probe]))
    return warnings


def single_step_vs_iterative(
    model: Model,
    x: Tensor,
    y: Tensor,
    plan: Sequence[AttackBase],
    broken_by: Tensor,
    newly_broken: Sequence[int],
    batch_size: int,
) -> tuple[list[str], Cost]:
    """Per example: did the single-step attack fool points the iterative one could not?

    In a cascade the iterative attack never sees the points a single-step attack before it
    broke. So when the single-step attack ran first, the iterative one is re-run on just those
    points (cheap: it drops each point as soon as it is fooled), and the re-run's cost is
    returned; when the iterative attack ran first, the points the single-step attack broke
    later are exactly ones it missed (a lower bound: points an attack in between broke are not
    counted). Uses the first attacks in `plan` named in SINGLE_STEP and ITERATIVE.
    """
    names = [a.name for a in plan]
    single = next((i for i, name in enumerate(names) if name in SINGLE_STEP), None)
    iterative = next((i for i, name in enumerate(names) if name in ITERATIVE), None)
    cost = Cost()
    if single is None or iterative is None:
        return [], cost
    if iterative < single:
        count = newly_broken[single]
    else:
        todo = torch.nonzero(broken_by == single).squeeze(1)
        count = 0
        for start in range(0, todo.shape[0], batch_size):
            idx = todo[start : start + batch_size]
            rerun = plan[iterative](model, x[idx], y[idx])
            count += int((~rerun.success).sum())
            cost = cost + rerun.cost
    n = int(broken_by.shape[0])
    return check_single_step_vs_iterative(names[single], names[iterative], count, n), cost


MASKING_SWEEP_SHARES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)  # of the largest useful eps


def first_iterative(plan: Sequence[AttackBase]) -> AttackBase | None:
    """The first loss-maximising iterative gradient attack of the plan, if any."""
    return next((a for a in plan if a.name in ITERATIVE), None)


def check_convergence(
    model: Model,
    x: Tensor,
    y: Tensor,
    plan: Sequence[AttackBase],
    robust: Tensor,
    batch_size: int,
    tolerance: float = 0.01,
) -> tuple[list[str], Cost]:
    """Carlini et al. 2019's convergence test: re-run the first iterative attack with twice the
    steps and one more restart on the points still robust; warn when that breaks more than
    `tolerance` of all points (the reported robust accuracy is then an overestimate).

    Cost: the stronger attack on the robust points (about 2x the original attack's cost on
    them, times (restarts + 1) / restarts).
    """
    attack = first_iterative(plan)
    todo = torch.nonzero(robust).squeeze(1)
    if attack is None or todo.numel() == 0:
        return [], Cost()
    changes = {"steps": 2 * attack.steps}
    if hasattr(attack, "restarts"):
        changes["restarts"] = attack.restarts + 1
    stronger = dataclasses.replace(attack, **changes)
    broken, cost = 0, Cost()
    for start in range(0, todo.shape[0], batch_size):
        idx = todo[start : start + batch_size]
        result = stronger(model, x[idx], y[idx])
        broken += int(result.success.sum())
        cost = cost + result.cost
    n = int(y.shape[0])
    if broken <= tolerance * n:
        return [], cost
    before = float(robust.float().mean())
    return [
        f"not converged: {attack.name!r} with {changes['steps']} steps"
        + (f" and {changes['restarts']} restarts" if "restarts" in changes else "")
        + f" lowers robust accuracy from {before:.2%} to {before - broken / n:.2%}; "
        "raise steps and restarts until it stops falling"
    ], cost


def masking_sweep(
    model: Model,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    plan: Sequence[AttackBase],
    chance: float,
    max_points: int,
) -> tuple[list[str], Cost, list[tuple[float, float]]]:
    """An eps sweep up to the full input range with the first iterative attack (or PGD) on at
    most `max_points` points: robust accuracy must fall as eps grows and reach chance at the
    largest eps, where any input can be moved anywhere in the box (Carlini et al. 2019,
    Sec. 5.2; Athalye et al. 2018). Returns warnings, cost and the (eps, accuracy) curve."""
    from adversa.attacks import get_attack

    attack = first_iterative(plan) or get_attack("pgd", threat, seed=0)
    xs, ys = x[:max_points], y[:max_points]
    dim = int(xs[0].numel())
    full = threat.max_eps(dim)
    eps_values = sorted({threat.eps, *(full * share for share in MASKING_SWEEP_SHARES)})
    curve, cost = [], Cost()
    for eps in eps_values:
        result = dataclasses.replace(attack, threat=threat.with_eps(eps))(model, xs, ys)
        cost = cost + result.cost
        curve.append((eps, float((~result.success).float().mean())))
    warnings = check_eps_monotone(curve)
    warnings += check_chance_at_large_eps(threat.with_eps(full), dim, curve[-1][1], chance)
    return warnings, cost, curve
