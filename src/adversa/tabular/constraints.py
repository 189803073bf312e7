"""Tabular threat models: feature constraints and the `ConstrainedThreat` that enforces them.

A perturbed table row must stay a row the system could see: some features cannot change
(age of the account), some are counts (integers), some are one-hot encodings of a category,
some can only grow (a customer can add transactions, not remove them), and each feature has
its own valid range and its own cost of change (the per-feature `weights` of the norm).
`FeatureConstraints` states them in the model's input space (the scaled space), and
`ConstrainedThreat` is a `ThreatModel` whose `project` applies the weighted ball, the box and
then every constraint, so that any attack built on `threat.project` (PGD, APGD, FGSM, and the
`run_attack` harness's final projection) yields feasible rows only (the "constrained
adversarial examples" setting of Simonetto et al. 2022, "A Unified Framework for Adversarial
Attack and Defense in Constrained Feature Space", IJCAI; projection after each gradient step).

Projection, in order, per row (all vectorised; cost O(B * D) plus O(B * G * K) for G groups of
at most K categories):

1. `increase_only` features: the change is clamped at >= 0; `immutable` ones are reset.
2. The weighted ball on the non-categorical features: `w * delta` is projected onto the eps
   ball (linf: exact; l2: exact in the weighted norm; l1: rescaled onto the sphere, not the
   Euclidean projection), then `delta = z / w`.
3. The box: per-feature `lower`/`upper` intersected with `threat.bounds`.
4. `integer` features: rounded to the nearest grid point `origin + k * unit`; where that point
   leaves the feature's range or (linf) its share of the ball, rounded toward the clean value
   instead; for l2/l1 a row whose rounding left the ball has all its integer features rounded
   toward the clean value. Rounding toward the clean value only shrinks the change, so the
   result stays feasible when the clean row was.
5. `categorical` groups: each group is set to the one-hot vector of its largest entry
   (argmax after the continuous step). Categorical features are outside the norm ball: the
   distance (and so `eps`) counts the other features only. A group with any immutable feature
   keeps the clean value.

Each step only moves coordinates toward the clean row or re-encodes a group, so the output
satisfies all constraints at once, provided the clean row does (`satisfied(x, x)`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from adversa.errors import BadInput, ShapeError
from adversa.threat import ThreatModel


def _indices(name: str, values: Sequence[int], num_features: int) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    bad = [v for v in out if not 0 <= v < num_features]
    if bad:
        raise BadInput(f"{name} must hold feature indices in [0, {num_features}), got {bad}")
    if len(set(out)) != len(out):
        raise BadInput(f"{name} lists a feature twice: {list(out)}")
    return out


def _per_feature(name: str, values: Sequence[float] | None, num_features: int, default: float):
    if values is None:
        return (default,) * num_features
    out = tuple(float(v) for v in values)
    if len(out) != num_features:
        raise BadInput(f"{name} must have one value per feature ({num_features}), got {len(out)}")
    if any(math.isnan(v) for v in out):
        raise BadInput(f"{name} must not contain NaN, got {list(out)}")
    return out


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class FeatureConstraints:
    """Constraints on the features of flat inputs (B, num_features), in the input space.

    Validated against the threat's box by `ConstrainedThreat`; a contradiction (an empty
    range, an integer feature with no grid point in its range, a categorical feature that
    cannot take the box's low and high values, a feature both categorical and integer or
    increase-only) raises `BadInput` naming the feature.
    """

    num_features: int
    lower: Sequence[float] | None = None  # per-feature minimum (default: the threat's low bound)
    upper: Sequence[float] | None = None  # per-feature maximum (default: the threat's high bound)
    immutable: Sequence[int] = ()  # features that never change
    integer: Sequence[int] = ()  # features on the grid origin + k * unit
    unit: Sequence[float] | None = None  # per-feature grid step (default 1; 1/scale if scaled)
    origin: Sequence[float] | None = None  # per-feature grid origin (default 0; -min/scale)
    categorical: Sequence[Sequence[int]] = ()  # one-hot groups (low = off, high = on)
    increase_only: Sequence[int] = ()  # monotone features: may only grow
    weights: Sequence[float] | None = None  # per-feature cost of change in the norm (> 0)
    feature_names: Sequence[str] | None = None  # for messages and reports

    def __post_init__(self) -> None:
        d = int(self.num_features)
        if d < 1:
            raise BadInput(f"num_features must be >= 1, got {self.num_features}")
        set_ = object.__setattr__
        set_(self, "lower", _per_feature("lower", self.lower, d, -math.inf))
        set_(self, "upper", _per_feature("upper", self.upper, d, math.inf))
        set_(self, "unit", _per_feature("unit", self.unit, d, 1.0))
        set_(self, "origin", _per_feature("origin", self.origin, d, 0.0))
        set_(self, "weights", _per_feature("weights", self.weights, d, 1.0))
        for name in ("immutable", "integer", "increase_only"):
            set_(self, name, _indices(name, getattr(self, name), d))
        groups = tuple(_indices("categorical group", g, d) for g in self.categorical)
        set_(self, "categorical", groups)
        flat = [i for g in groups for i in g]
        if len(set(flat)) != len(flat):
            raise BadInput(f"categorical groups overlap: {[list(g) for g in groups]}")
        if any(len(g) < 2 for g in groups):
            raise BadInput(
                f"a categorical group needs >= 2 features, got {[list(g) for g in groups]}"
            )
        clash = sorted(set(flat) & (set(self.integer) | set(self.increase_only)))
        if clash:
            raise BadInput(
                f"features {self.name_of(clash)} are categorical and also integer or "
                "increase-only; a one-hot feature takes only the low and high values"
            )
        if any(not (w > 0 and math.isfinite(w)) for w in self.weights):
            raise BadInput(f"weights must be finite and > 0, got {list(self.weights)}")
        if any(not (u > 0 and math.isfinite(u)) for u in self.unit):
            raise BadInput(f"unit must be finite and > 0, got {list(self.unit)}")
        if self.feature_names is not None and len(self.feature_names) != d:
            raise BadInput(f"feature_names must have {d} names, got {len(self.feature_names)}")

    def name_of(self, idx: Sequence[int]) -> list[str]:
        names = self.feature_names
        return [f"{names[i]!r} (#{i})" if names is not None else f"#{i}" for i in idx]

    def check_bounds(self, bounds: tuple[float, float]) -> None:
        """Raise `BadInput` if a constraint cannot be met inside the box `bounds`."""
        lo, hi = self.box(bounds)
        empty = [i for i in range(self.num_features) if lo[i] > hi[i]]
        if empty:
            raise BadInput(
                f"features {self.name_of(empty)}: lower > upper once intersected with the "
                f"bounds {bounds} (lower={[self.lower[i] for i in empty]}, "
                f"upper={[self.upper[i] for i in empty]})"
            )
        no_grid = [
            i
            for i in self.integer
            if math.floor((hi[i] - self.origin[i]) / self.unit[i] + 1e-6)
            < math.ceil((lo[i] - self.origin[i]) / self.unit[i] - 1e-6)
        ]
        if no_grid:
            raise BadInput(
                f"integer features {self.name_of(no_grid)} have no integer value in their "
                f"range [lower, upper] within the bounds {bounds}"
            )
        cat = [i for g in self.categorical for i in g if lo[i] > bounds[0] or hi[i] < bounds[1]]
        if cat:
            raise BadInput(
                f"categorical features {self.name_of(cat)} must be able to take both bounds "
                f"{bounds} (off and on), but their lower/upper exclude one"
            )

    def box(self, bounds: tuple[float, float]) -> tuple[list[float], list[float]]:
        lo = [max(v, bounds[0]) for v in self.lower]
        hi = [min(v, bounds[1]) for v in self.upper]
        return lo, hi

    def _vec(self, values: Sequence[float], like: Tensor) -> Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device)

    def _mask(self, idx: Sequence[int], like: Tensor) -> Tensor:
        mask = torch.zeros(self.num_features, dtype=torch.bool, device=like.device)
        mask[list(idx)] = True
        return mask

    def _groups(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(G, K) feature indices of each group padded with 0, and the (G, K) validity mask."""
        k = max(len(g) for g in self.categorical)
        index = torch.zeros((len(self.categorical), k), dtype=torch.long, device=like.device)
        valid = torch.zeros_like(index, dtype=torch.bool)
        for row, group in enumerate(self.categorical):
            index[row, : len(group)] = torch.tensor(group, device=like.device)
            valid[row, : len(group)] = True
        return index, valid

    def _check_shape(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ShapeError(
                f"feature constraints need flat inputs (B, {self.num_features}), "
                f"got {tuple(x.shape)}"
            )

    def project(self, x_adv: Tensor, x: Tensor, threat: ThreatModel) -> Tensor:
        """The feasible point for `x_adv` around the clean rows `x` (see the module docs)."""
        self._check_shape(x_adv)
        cat = self._mask([i for g in self.categorical for i in g], x)
        fixed = self._mask(self.immutable, x)
        w = self._vec(self.weights, x)
        delta = x_adv - x
        delta = torch.where(self._mask(self.increase_only, x), delta.clamp_min(0), delta)
        delta = torch.where(fixed | cat, torch.zeros_like(delta), delta)
        if math.isfinite(threat.eps):
            delta = _weighted_ball(delta, w, threat.norm, threat.eps)
        lo_list, hi_list = self.box(threat.bounds)
        lo, hi = self._vec(lo_list, x), self._vec(hi_list, x)
        out = torch.minimum(torch.maximum(x + delta, lo), hi)
        if self.integer:
            out = self._round(out, x, lo, hi, w, threat)
        if self.categorical:
            out = self._one_hot(out, x_adv, x, fixed, threat.bounds)
        return out

    def _round(
        self, v: Tensor, x: Tensor, lo: Tensor, hi: Tensor, w: Tensor, threat: ThreatModel
    ) -> Tensor:
        integer = self._mask(self.integer, x)
        unit, origin = self._vec(self.unit, x), self._vec(self.origin, x)
        k = (v - origin) / unit
        near = origin + k.round() * unit
        # The grid point between x and v nearest to v (1e-4 absorbs float error in k).
        toward = origin + torch.where(v >= x, (k + 1e-4).floor(), (k - 1e-4).ceil()) * unit
        tol = 1e-6 * (threat.bounds[1] - threat.bounds[0])
        ok = (near >= lo - tol) & (near <= hi + tol)
        if threat.norm == "linf" and math.isfinite(threat.eps):
            ok &= (w * (near - x)).abs() <= threat.eps + tol
        rounded = torch.where(integer, torch.where(ok, near, toward), v)
        if threat.norm != "linf" and math.isfinite(threat.eps):
            over = _weighted_norm(rounded - x, w, threat.norm, self._non_cat(x)) > threat.eps + tol
            rounded = torch.where(over[:, None] & integer, toward, rounded)
        return rounded

    def _non_cat(self, like: Tensor) -> Tensor:
        return ~self._mask([i for g in self.categorical for i in g], like)

    def _one_hot(
        self, out: Tensor, x_adv: Tensor, x: Tensor, fixed: Tensor, bounds: tuple[float, float]
    ) -> Tensor:
        index, valid = self._groups(x)
        b = x.shape[0]
        vals = x_adv[:, index].masked_fill(~valid, -math.inf)  # (B, G, K)
        chosen = index.expand(b, -1, -1).gather(2, vals.argmax(2, keepdim=True)).squeeze(2)
        encoded = out.clone()
        flat_idx = index[valid]
        encoded[:, flat_idx] = bounds[0]
        encoded.scatter_(1, chosen, bounds[1])
        locked = (fixed[index] & valid).any(1)  # (G,) groups with an immutable feature
        keep = torch.zeros_like(fixed)
        keep[index[locked][valid[locked]]] = True
        return torch.where(keep, x, encoded)

    def satisfied(
        self, x_adv: Tensor, x: Tensor, bounds: tuple[float, float], atol: float = 1e-5
    ) -> Tensor:
        """Per-row bool (B,): every constraint holds for `x_adv` around `x` (not the ball)."""
        self._check_shape(x_adv)
        tol = atol * (bounds[1] - bounds[0])
        lo_list, hi_list = self.box(bounds)
        lo, hi = self._vec(lo_list, x), self._vec(hi_list, x)
        ok = ((x_adv >= lo - tol) & (x_adv <= hi + tol)).all(1)
        if self.immutable:
            idx = list(self.immutable)
            ok &= ((x_adv[:, idx] - x[:, idx]).abs() <= tol).all(1)
        if self.increase_only:
            idx = list(self.increase_only)
            ok &= (x_adv[:, idx] >= x[:, idx] - tol).all(1)
        if self.integer:
            idx = list(self.integer)
            unit, origin = self._vec(self.unit, x)[idx], self._vec(self.origin, x)[idx]
            k = (x_adv[:, idx] - origin) / unit
            ok &= ((k - k.round()).abs() * unit <= tol).all(1)
        if self.categorical:
            index, valid = self._groups(x)
            vals = x_adv[:, index]
            on = ((vals - bounds[1]).abs() <= tol) & valid
            off = ((vals - bounds[0]).abs() <= tol) & valid
            ok &= ((on | off | ~valid).all(2) & (on.sum(2) == 1)).all(1)
        return ok

    def distance(self, x_adv: Tensor, x: Tensor, norm: str) -> Tensor:
        """Per-row weighted distance (B,) over the non-categorical features."""
        return _weighted_norm(x_adv - x, self._vec(self.weights, x), norm, self._non_cat(x))


def _weighted_norm(delta: Tensor, w: Tensor, norm: str, keep: Tensor) -> Tensor:
    z = (w * delta).masked_fill(~keep, 0)
    return torch.linalg.vector_norm(z, ord={"linf": math.inf, "l2": 2.0, "l1": 1.0}[norm], dim=1)


def _weighted_ball(delta: Tensor, w: Tensor, norm: str, eps: float) -> Tensor:
    z = w * delta
    if norm == "linf":
        z = z.clamp(-eps, eps)
    else:
        n = torch.linalg.vector_norm(z, ord=2.0 if norm == "l2" else 1.0, dim=1, keepdim=True)
        z = z * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)
    return z / w


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConstrainedThreat(ThreatModel):
    """A `ThreatModel` for flat tabular inputs whose projection also enforces `constraints`.

    Drop-in for every attack that goes through `threat.project` (FGSM, PGD, APGD, and the
    harness's final projection of any attack): each step lands on a feasible row. Black-box
    attacks (square, hsj) search with the plain box and are made feasible by the harness's
    final projection only; their success is re-verified there, so it stays trustworthy, but
    they are weaker under constraints. `distance` and `contains` use the weighted norm over
    the non-categorical features. Cost: `project` is O(B * D).
    """

    constraints: FeatureConstraints

    def __post_init__(self) -> None:
        ThreatModel.__post_init__(self)
        if not isinstance(self.constraints, FeatureConstraints):
            raise BadInput(
                f"constraints must be FeatureConstraints, got {type(self.constraints).__name__}"
            )
        self.constraints.check_bounds(self.bounds)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return self.constraints.project(x_adv, x, self)

    def random_start(self, x: Tensor, gen: torch.Generator) -> Tensor:
        return self.project(ThreatModel.random_start(self, x, gen), x)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return self.constraints.distance(x_adv, x, self.norm)

    def contains(self, x_adv: Tensor, x: Tensor, atol: float = 1e-5) -> Tensor:
        ok = self.constraints.satisfied(x_adv, x, self.bounds, atol)
        if math.isinf(self.eps):
            return ok
        tol = atol * (self.bounds[1] - self.bounds[0]) * max(1.0, max(self.constraints.weights))
        return ok & (self.distance(x_adv, x) <= self.eps + tol * x.shape[1])
