"""The threat model: which perturbations the adversary may make. It owns projection, clipping,
random starts and distances; nothing else in adversa re-implements them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from adversa.errors import BadInput, describe, is_real
from adversa.registry import Registry

Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1")
_ORD = {"linf": math.inf, "l2": 2.0, "l1": 1.0}
THREAT_OPTIONS: tuple[str, ...] = ("eps", "norm", "bounds")  # a threat's fields, given flat
T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ThreatModel:
    """An eps-ball in `norm` around each input, intersected with the box `bounds`.

    `eps=math.inf` means unbounded (for minimum-norm attacks, which then report distortion).
    With `targeted=True`, attacks read the labels they are given as target classes.
    """

    norm: Norm
    eps: float
    bounds: tuple[float, float] = (0.0, 1.0)
    targeted: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.norm, str) or self.norm not in _ORD:
            raise BadInput(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not is_real(self.eps):
            raise BadInput(f"eps must be a real number >= 0, got {describe(self.eps)}")
        eps = float(self.eps)
        if math.isnan(eps) or eps < 0:
            raise BadInput(f"eps must be >= 0, got {self.eps}")
        lo, hi = check_bounds(self.bounds)
        if not isinstance(self.targeted, bool | np.bool_):
            raise BadInput(f"targeted must be True or False, got {describe(self.targeted)}")
        if self.norm == "linf" and math.isfinite(eps) and eps > hi - lo:
            raise BadInput(
                f"eps={eps} is larger than the bounds allow: an linf perturbation of inputs "
                f"in [{lo}, {hi}] cannot exceed {hi - lo}"
            )
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "bounds", (lo, hi))
        object.__setattr__(self, "targeted", bool(self.targeted))

    @property
    def ord(self) -> float:
        """The p of the norm, as torch.linalg.vector_norm expects it."""
        return _ORD[self.norm]

    def with_eps(self, eps: float) -> ThreatModel:
        return dataclasses.replace(self, eps=eps)

    def max_eps(self, dim: int) -> float:
        """The largest eps that can still matter for inputs with `dim` features."""
        width = self.bounds[1] - self.bounds[0]
        return {"linf": width, "l2": width * math.sqrt(dim), "l1": width * dim}[self.norm]

    def clip(self, x: Tensor) -> Tensor:
        return x.clamp(self.bounds[0], self.bounds[1])

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample distance (B,) in this norm."""
        delta = (x_adv - x).flatten(1)
        return torch.linalg.vector_norm(delta, ord=self.ord, dim=1)

    def contains(self, x_adv: Tensor, x: Tensor, atol: float = 1e-5) -> Tensor:
        """Per-sample bool (B,): inside the eps-ball and the box, up to `atol` times the box
        width plus the rounding error of the dtype summed over the features."""
        lo, hi = self.bounds
        flat = x_adv.flatten(1)
        width = hi - lo
        ulp = torch.finfo(x_adv.dtype).eps if x_adv.is_floating_point() else 0.0
        in_box = (flat >= lo - atol * width).all(1) & (flat <= hi + atol * width).all(1)
        if math.isinf(self.eps):
            return in_box
        terms = {"linf": 1.0, "l2": math.sqrt(flat.shape[1]), "l1": float(flat.shape[1])}
        tol = atol * width + 4 * ulp * width * terms[self.norm]
        return in_box & (self.distance(x_adv, x) <= self.eps + tol)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Map `x_adv` to a point inside the eps-ball around `x` and inside the box.

        Linf: the exact projection onto the intersection. L2: the exact ball projection, then
        clipping, which only moves coordinates toward `x` (inside the box), so the result stays
        inside the ball. L1: the exact projection onto the intersection (`project_l1_box`).
        """
        delta = x_adv - x
        if self.norm == "l1" and math.isfinite(self.eps):
            delta = project_l1_box(delta, x, self.eps, self.bounds)
        elif math.isfinite(self.eps):
            delta = _project_ball(delta, self.norm, self.eps)
        return self.clip(x + delta)

    def random_start(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """A point drawn uniformly from the eps-ball around `x`, then clipped to the box."""
        if math.isinf(self.eps):
            raise BadInput("random_start needs a finite eps")
        shape = x.shape
        flat_dim = math.prod(shape[1:])
        if self.norm == "linf":
            u = torch.rand(shape, generator=gen, device=x.device, dtype=x.dtype)
            delta = (2 * u - 1) * self.eps
        elif self.norm == "l2":
            direction = torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype)
            direction = direction / _norm_like(direction, 2.0).clamp_min(1e-12)
            radius = torch.rand(
                (shape[0],) + (1,) * (len(shape) - 1), generator=gen, device=x.device
            ).to(x.dtype) ** (1.0 / flat_dim)
            delta = direction * radius * self.eps
        else:
            # Uniform in the l1 ball: exponential draws normalised with one slack coordinate.
            e = torch.empty((shape[0], flat_dim + 1), device=x.device, dtype=x.dtype)
            e.exponential_(generator=gen)
            mags = (e[:, :-1] / e.sum(1, keepdim=True)).reshape(shape)
            signs = torch.randint(0, 2, shape, generator=gen, device=x.device).to(x.dtype)
            delta = mags * (2 * signs - 1) * self.eps
        return self.clip(x + delta)


def check_bounds(bounds: object) -> tuple[float, float]:
    """(lo, hi) as floats: two finite real numbers with lo < hi, else `BadInput`."""
    pair = tuple(bounds) if isinstance(bounds, tuple | list | np.ndarray) else None
    if pair is None or len(pair) != 2 or not all(is_real(b) for b in pair):
        raise BadInput(f"bounds must be a pair (lo, hi) of numbers, got {describe(bounds)}")
    lo, hi = float(pair[0]), float(pair[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise BadInput(f"bounds must be finite with lo < hi, got {bounds}")
    return lo, hi


def _norm_like(t: Tensor, p: float) -> Tensor:
    """Per-sample p-norm of `t`, shaped to broadcast against `t`."""
    n = torch.linalg.vector_norm(t.flatten(1), ord=p, dim=1)
    return n.view((-1,) + (1,) * (t.dim() - 1))


def _project_ball(delta: Tensor, norm: str, eps: float) -> Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    n = _norm_like(delta, 2.0)
    return delta * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)


def project_l1_box(delta: Tensor, x: Tensor, eps: float, bounds: tuple[float, float]) -> Tensor:
    """The Euclidean projection of `delta` onto {d : ||d||_1 <= eps, lo <= x + d <= hi}
    (Croce & Hein 2021, "Mind the box", arXiv:2103.01208), batched.

    The solution is d_i = sign(delta_i) * clamp(|delta_i| - lam, 0, room_i), with room_i the
    distance from x_i to the box edge on delta_i's side and lam >= 0 the smallest value that
    meets the budget. The l1 norm of that point is piecewise linear and non-increasing in lam,
    with kinks at max(|delta_i| - room_i, 0) and |delta_i|: sort the 2d kinks, evaluate the
    norm at each with a cumulative sum and interpolate inside the crossing segment.
    O(d log d) per sample.
    """
    flat, center = delta.flatten(1), x.flatten(1)
    if eps == 0:
        return torch.zeros_like(delta)
    size = flat.abs()
    room = torch.where(flat >= 0, bounds[1] - center, center - bounds[0]).clamp_min(0)
    total = torch.minimum(size, room).sum(1, keepdim=True)
    kinks = torch.cat([(size - room).clamp_min(0), size], 1)
    slope_change = torch.cat([torch.ones_like(size), -torch.ones_like(size)], 1)
    kinks, order = kinks.sort(1)
    active = slope_change.gather(1, order).cumsum(1)  # shrinking coordinates past each kink
    drop = (active[:, :-1] * kinks.diff(dim=1)).cumsum(1)
    norm_at = torch.cat([total, total - drop], 1)  # l1 norm when lam sits at each kink
    last = ((norm_at > eps).sum(1, keepdim=True) - 1).clamp_min(0)
    lam = kinks.gather(1, last) + (norm_at.gather(1, last) - eps) / active.gather(1, last).clamp(
        min=1
    )
    lam = torch.where(total > eps, lam, torch.zeros_like(lam))
    projected = flat.sign() * torch.minimum((size - lam).clamp_min(0), room)
    return projected.view_as(delta)


def threat_options(threat: ThreatModel) -> dict[str, Any]:
    """`threat`'s eps, norm and bounds as flat options (how cards, manifests and command lines
    spell a config's `threat` field)."""
    return {"eps": threat.eps, "norm": threat.norm, "bounds": threat.bounds}


class ThreatRegistry(Registry[T]):
    """A registry of configs some of which hold `threat: ThreatModel` (training-time defenses,
    poisons). For those, `get` also takes the threat's fields flat and builds the one
    `ThreatModel`: `DEFENSES.get("pgd-at", eps=0.3, steps=7)`. Flat fields go over the
    field's default threat when it has one, else over norm "linf" and bounds (0, 1); without
    a default, eps (or `threat=`) is required. The config itself holds only `threat`."""

    def options(self, factory: Callable[..., T]) -> list[str]:
        names = super().options(factory)
        return [*names, *THREAT_OPTIONS] if "threat" in names else names

    def prepare(self, name: str, factory: Callable[..., T], overrides: dict[str, Any]) -> dict:
        if "threat" not in super().options(factory):
            return overrides
        out = dict(overrides)
        flat = {k: out.pop(k) for k in THREAT_OPTIONS if k in out}
        if "threat" in out:
            if flat:
                raise BadInput(f"{self.kind} {name!r}: give threat= or {', '.join(flat)}, not both")
            return out
        field = next(f for f in dataclasses.fields(factory) if f.name == "threat")  # type: ignore[arg-type]
        default = field.default if isinstance(field.default, ThreatModel) else None
        if default is None and "eps" not in flat:
            raise BadInput(
                f"{self.kind} {name!r} needs eps, the radius of its threat model "
                "(or threat=ThreatModel(...))"
            )
        if flat:
            base = threat_options(default) if default is not None else {"norm": "linf"}
            out["threat"] = ThreatModel(**{**base, **flat})
        return out
