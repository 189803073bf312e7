"""Certification of a set of points, optionally checked against attacks at the same eps.

A certificate is a proof and an attack a search, so on the same points and the same ball
certified accuracy can never exceed empirical robust accuracy, and no certified point may be
broken by an attack (FIELD item 9; Carlini et al. 2019). `run_certification` certifies with
IBP, CROWN or randomized smoothing, and with `attacks` also runs them and checks both
statements per eps; any violation is a bug in the bounds, the sampler or the attack, and
becomes a warning starting with "BUG".

- Bounds ("ibp", "crown", "crown-ibp"): a point is certified at eps when it is verified (every
  margin's lower bound is positive). The attacks are the evaluation battery
  (`adversa.evaluate_sweep`, default PGD then APGD-CE) on the base model.
- Smoothing: a point is certified at radius R when CERTIFY returns its label with radius >= R.
  The attack is L2 PGD on the smoothed classifier with EOT over noise draws
  (`attack_smoothed`), and its result is judged by PREDICT with the same n and alpha: it
  breaks a point only when PREDICT returns another class (an abstention is not a violation
  of the certificate, whose answers are themselves wrong with probability at most alpha).

Cost: the certifier's (see `bounds.py`, `smoothing.py`) plus the attacks' per eps.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from adversa.certify import ablation  # noqa: F401  (registers "patch-ablation", ablated archs)
from adversa.certify.bounds import METHODS, verified
from adversa.certify.smoothing import ABSTAIN, CertResult, Smooth, attack_smoothed
from adversa.checks import as_tensor, check_batch
from adversa.errors import BadInput
from adversa.evaluation import evaluate_sweep
from adversa.model import Model, as_model
from adversa.threat import ThreatModel

ProgressFn = Callable[[str, int, int], None]
DEFAULT_ATTACKS: tuple[str, ...] = ("pgd", "apgd-ce")
ALL_METHODS: tuple[str, ...] = (*METHODS, "smoothing")
PATCH_SMOOTHING = "patch-smoothing"  # patches: `adversa.certify.patch_smoothing.certify_patches`


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class CertifyResult:
    """Per eps (in the order given): `certified[i]` (bool, n) and, with attacks, `robust[i]`
    (bool, n: correct and not broken by any attack). `smoothing` holds CERTIFY's answers."""

    method: str
    threat: ThreatModel  # norm and bounds; eps is the largest listed
    eps: tuple[float, ...]
    y: Tensor
    clean_correct: Tensor  # the base model's, (n,)
    certified: tuple[Tensor, ...]
    robust: tuple[Tensor, ...] | None
    attacks: tuple[str, ...]
    smoothing: CertResult | None
    warnings: tuple[str, ...]
    seconds: tuple[float, ...]  # certification time per eps (smoothing: once, in [0])
    attack_seconds: tuple[float, ...]
    seed: int

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def certified_accuracy(self, i: int = 0) -> float:
        return float(self.certified[i].float().mean())

    def violations(self, i: int) -> Tensor:
        """Indices of the points certified at eps[i] that an attack broke."""
        if self.robust is None:
            return torch.empty(0, dtype=torch.long)
        return torch.nonzero(self.certified[i] & ~self.robust[i]).squeeze(1).cpu()


def run_certification(
    model: Model | nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    eps_values: Sequence[float] | None = None,
    *,
    method: str = "crown",
    smooth: Smooth | None = None,
    attacks: Sequence[str] = (),
    batch_size: int = 64,
    seed: int = 0,
    eot: int = 16,
    attack_steps: int = 40,
    progress: ProgressFn | None = None,
) -> CertifyResult:
    """Certify (x, y) at each eps (default: `threat.eps`) with `method` ("ibp", "crown",
    "crown-ibp", or "smoothing" with `smooth`), and with `attacks` check the certificates
    against them. For smoothing, eps values are L2 radii, `threat.norm` must be "l2", and any
    non-empty `attacks` means `attack_smoothed` (`eot` draws, `attack_steps` steps)."""
    if method == PATCH_SMOOTHING:
        raise BadInput(
            "method patch-smoothing certifies patches, not balls: use "
            "adversa.certify.patch_smoothing.certify_patches"
        )
    if method not in ALL_METHODS:
        raise BadInput(f"method must be one of {', '.join(ALL_METHODS)}, got {method!r}")
    if method == "smoothing" and (smooth is None or threat.norm != "l2"):
        raise BadInput("method 'smoothing' needs smooth=Smooth(...) and an l2 threat model")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInput(f"batch_size must be a positive integer, got {batch_size!r}")
    eps = tuple(float(e) for e in (eps_values if eps_values else [threat.eps]))
    threats = [threat.with_eps(e) for e in eps]
    model = as_model(model, threat.bounds)
    x = as_tensor(x, "x").to(model.device)
    y = as_tensor(y, "y").to(model.device)
    check_batch(x, y, max(threats, key=lambda t: t.eps), model.resolve_num_classes(x))
    y = y.long()
    clean_correct = model.predict(x, batch_size) == y

    result: CertResult | None = None
    notes: list[str] = []
    if method == "smoothing":
        start = time.perf_counter()
        result = smooth.certify(model, x, progress)
        notes += result.warnings
        certified = [result.certified(y, e) for e in eps]
        seconds = [time.perf_counter() - start] + [0.0] * (len(eps) - 1)
    else:
        certified, seconds = [], []
        for t in threats:
            start = time.perf_counter()
            certified.append(verify_in_batches(model, x, y, t, method, batch_size, progress))
            seconds.append(time.perf_counter() - start)

    robust, attack_seconds = None, []
    if attacks:
        if method == "smoothing":
            notes += smooth.diagnose("predict")  # PREDICT judges the attacks
            robust = []
            for t in threats:
                begin = time.perf_counter()
                robust.append(
                    _smoothed_robust(
                        model, smooth, x, y, t, result, eot, attack_steps, seed, batch_size
                    )
                )
                attack_seconds.append(time.perf_counter() - begin)
        else:
            sweep = evaluate_sweep(
                model,
                x,
                y,
                threat,
                list(eps),
                list(attacks),
                batch_size=batch_size,
                seed=seed,
                progress=progress,
                checks=False,
            )
            robust = [r.robust for r in sweep.results]
            attack_seconds = [r.seconds for r in sweep.results]
        alpha = smooth.alpha if method == "smoothing" else None
        notes += _consistency(method, eps, certified, robust, alpha)
    return CertifyResult(
        method=method,
        threat=max(threats, key=lambda t: t.eps),
        eps=eps,
        y=y,
        clean_correct=clean_correct,
        certified=tuple(certified),
        robust=None if robust is None else tuple(robust),
        attacks=(f"pgd-eot (l2, {attack_steps} steps, {eot} draws)",)
        if attacks and method == "smoothing"
        else tuple(attacks),
        smoothing=result,
        warnings=tuple(notes),
        seconds=tuple(seconds),
        attack_seconds=tuple(attack_seconds),
        seed=seed,
    )


def certify_and_attack(
    model: Model | nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    eps_values: Sequence[float] | None = None,
    *,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    **options: object,
) -> CertifyResult:
    """`run_certification` with attacks (default PGD and APGD-CE) and the consistency check."""
    if not attacks:
        raise BadInput("certify_and_attack needs at least one attack")
    return run_certification(model, x, y, threat, eps_values, attacks=attacks, **options)


def verify_in_batches(
    model: Model,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    method: str,
    batch_size: int,
    progress: ProgressFn | None,
) -> Tensor:
    out = torch.zeros_like(y, dtype=torch.bool)
    label = f"{method} eps={threat.eps:g}"
    for first in range(0, x.shape[0], batch_size):
        part = slice(first, first + batch_size)
        out[part] = verified(model, x[part], y[part], threat, method)  # type: ignore[arg-type]
        if progress is not None:
            progress(label, min(x.shape[0], first + batch_size), x.shape[0])
    return out


def _smoothed_robust(
    model: Model,
    smooth: Smooth,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    result: CertResult,
    eot: int,
    steps: int,
    seed: int,
    batch_size: int,
) -> Tensor:
    """Correct under CERTIFY and not turned into another class (by PREDICT) by
    `attack_smoothed`, which runs on the points CERTIFY labels correctly."""
    robust = result.prediction == y
    todo = torch.nonzero(robust).squeeze(1)
    if todo.numel() == 0 or threat.eps == 0:
        return robust
    for first in range(0, todo.numel(), batch_size):
        idx = todo[first : first + batch_size]
        x_adv = attack_smoothed(
            model, x[idx], y[idx], threat, smooth.sigma, eot=eot, steps=steps, seed=seed
        )
        pred = smooth.predict(model, x_adv)
        robust[idx] = (pred == y[idx]) | (pred == ABSTAIN)
    return robust


def _consistency(
    method: str,
    eps: tuple[float, ...],
    certified: list[Tensor],
    robust: list[Tensor],
    alpha: float | None = None,
) -> list[str]:
    """BUG warnings: certified accuracy above empirical robust accuracy, or a certified point
    broken, at any eps. For smoothing (`alpha` given) the message says how many such points
    chance allows: CERTIFY and PREDICT each err with probability at most alpha."""
    notes = []
    for e, cert, rob in zip(eps, certified, robust, strict=True):
        cert_acc, rob_acc = float(cert.float().mean()), float(rob.float().mean())
        broken = torch.nonzero(cert & ~rob).squeeze(1).tolist()
        if broken:
            shown = ", ".join(map(str, broken[:10])) + (" ..." if len(broken) > 10 else "")
            notes.append(
                f"BUG: eps={e:g}: {len(broken)} point(s) certified by {method} were broken by "
                f"an attack (indices {shown}); the certificate or the attack is wrong"
                + (
                    ""
                    if alpha is None
                    else f" (or chance: up to {2 * alpha * cert.numel():.2g} expected at "
                    f"alpha={alpha:g})"
                )
            )
        if cert_acc > rob_acc + 1e-12:
            notes.append(
                f"BUG: eps={e:g}: certified accuracy {cert_acc:.2%} exceeds empirical robust "
                f"accuracy {rob_acc:.2%}; a certificate must be a lower bound"
            )
    return notes
