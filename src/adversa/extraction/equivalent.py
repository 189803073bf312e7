"""Functionally equivalent extraction of a one-hidden-layer ReLU network from exact scores
(Jagielski et al. 2020, "High Accuracy and High Fidelity Extraction of Neural Networks",
arXiv:1909.01838, section 5, after Milli et al. 2019's critical points).

The target's logit differences g(x) = z(x) - z_0(x) are piecewise linear; each hidden unit i
switches on a hyperplane n_i . x + b_i = 0. The method

1. queries `grid` evenly spaced points on segments between two random pool inputs (inside
   the input box, which is convex) and finds the isolated kinks (critical points) where the
   slope changes, each located by intersecting the two linear pieces around it;
2. at each critical point, estimates g's gradient on both sides by finite differences (d + 1
   queries per side); the difference is rank one, u_i n_i^T, and gives the unit's direction;
3. groups critical points of the same unit (directions within `tolerance` and the points on
   one hyperplane) and refits each unit's hyperplane through its points;
4. solves for the output weights and a linear term by least squares on every point queried,
   g(x) = sum_i u_i relu(n_i . x + b_i) + M x + m; the linear term absorbs the sign that a
   rank-one difference cannot tell (relu(-t) = relu(t) - t).

The copy is a one-hidden-layer ReLU network (the linear term as relu(t) - relu(-t) pairs).
Directions are unit vectors (ReLU is positively homogeneous, so scale moves into u).
Cost: `queries` target queries at most; no backward pass through the target.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from adversa.errors import require
from adversa.extraction.base import ExtractionBase, register_extraction
from adversa.model import Model


@register_extraction("equivalent")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Equivalent(ExtractionBase):
    """Jagielski et al.'s functionally equivalent extraction for one-hidden-layer ReLU MLPs."""

    grid: int = 1024  # points queried per line
    step: float = 1e-3  # finite-difference step of the gradient estimates
    tolerance: float = 0.99  # |cos| above which two critical points share a unit

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.grid >= 16, f"grid must be >= 16, got {self.grid}")
        require(0 < self.tolerance < 1, f"tolerance must be in (0, 1), got {self.tolerance}")

    def _extract(self, api: Model, pool: Tensor, gen: torch.Generator) -> tuple[nn.Module, dict]:
        flat = pool.reshape(pool.shape[0], -1).double()
        d = flat.shape[1]
        scores = _scores(api, pool.shape[1:])
        per_point = 2 * (d + 1)
        xs, gs, crit, normals = [], [], [], []
        spent = 0
        while spent + self.grid + per_point <= self.queries:
            ends = torch.randint(0, flat.shape[0], (2,), generator=gen, device=gen.device)
            u, v = flat[ends[0]], flat[ends[1]] - flat[ends[0]]
            t = torch.linspace(0, 1, self.grid, dtype=torch.float64, device=u.device)
            x = u + t[:, None] * v
            g = scores(x)
            spent += self.grid
            xs.append(x)
            gs.append(g)
            x_star, left, right = _kinks(t, g, u, v)
            n = min(x_star.shape[0], (self.queries - spent) // per_point)
            if n == 0:
                continue
            diff = _gradients(scores, right[:n], self.step) - _gradients(
                scores, left[:n], self.step
            )
            spent += n * per_point
            crit.append(x_star[:n])
            normals.append(torch.linalg.svd(diff, full_matrices=False)[2][:, 0])
        require(crit, f"equivalent: {self.queries} queries found no critical point; raise it")
        units = _group(torch.cat(crit), torch.cat(normals), self.tolerance)
        x_all, g_all = torch.cat(xs), torch.cat(gs)
        net = _fit(units, x_all, g_all, api.num_classes).to(pool.dtype)
        return nn.Sequential(nn.Flatten(), net).eval(), {
            "units": int(units.shape[0]),
            "critical_points": sum(c.shape[0] for c in crit),
        }


def _scores(api: Model, shape: torch.Size):
    """x (N, d) float64 -> the target's logit differences to class 0 (N, C - 1), float64."""

    def call(x: Tensor) -> Tensor:
        out = api(x.reshape(-1, *shape).float()).double()
        sums = out.sum(1)
        if bool((out >= 0).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
            out = out.clamp_min(1e-300).log()  # probabilities: log p_j - log p_0 = z_j - z_0
        return out[:, 1:] - out[:, :1]

    return call


def _kinks(t: Tensor, g: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(critical points, points left of them, points right of them), each (K, d), for the
    isolated kinks on the line u + t v: intervals k whose slope bends at both ends and whose
    neighbours are linear (one kink in three intervals), located by intersecting the linear
    pieces on either side."""
    dt = t[1] - t[0]
    slope = (g[1:] - g[:-1]) / dt  # (S - 1, C'): slope[k] on interval k = [t_k, t_k+1]
    bend = (slope[1:] - slope[:-1]).norm(dim=1)  # bend[j] at grid point j + 1
    bent = bend > 1e-5 * (g.abs().max() + 1) / dt
    k = torch.arange(2, t.shape[0] - 3, device=t.device)  # candidate intervals
    isolated = bent[k - 1] & bent[k] & ~bent[k - 2] & ~bent[k + 1]
    k = k[isolated]
    s_left, s_right = slope[k - 1], slope[k + 1]
    den = s_left - s_right
    num = g[k + 1] - g[k] + s_left * t[k, None] - s_right * t[k + 1, None]
    t_star = (num * den).sum(1) / (den * den).sum(1)
    inside = (t_star >= t[k]) & (t_star <= t[k + 1])
    k, t_star = k[inside], t_star[inside]
    on = lambda ts: u + ts[:, None] * v  # noqa: E731
    return on(t_star), on(t[k] - dt / 2), on(t[k + 1] + dt / 2)


def _gradients(scores, x: Tensor, step: float) -> Tensor:
    """Forward-difference Jacobians (K, C', d) of `scores` at x (K, d), in one batch of
    K (d + 1) queries."""
    kn, d = x.shape
    eye = step * torch.eye(d, dtype=x.dtype, device=x.device)
    points = torch.cat([x[:, None], x[:, None] + eye], 1).reshape(-1, d)
    g = scores(points).reshape(kn, d + 1, -1)
    return ((g[:, 1:] - g[:, :1]) / step).transpose(1, 2)


def _group(points: Tensor, normals: Tensor, tolerance: float) -> Tensor:
    """One (n, b) row per hidden unit (K, d + 1), n a unit vector: critical points whose
    directions agree within `tolerance` form a unit, whose hyperplane is refit through its
    points when they span it."""
    units = []
    free = torch.ones(points.shape[0], dtype=torch.bool)
    while bool(free.any()):
        i = int(free.nonzero()[0])
        cos = normals @ normals[i]
        members = free & (cos.abs() > tolerance)
        free &= ~members
        signs = torch.sign(cos[members])[:, None]
        n = (normals[members] * signs).mean(0)
        n = n / n.norm()
        pts = points[members]
        if pts.shape[0] > points.shape[1]:
            aug = torch.cat([pts, torch.ones(pts.shape[0], 1, dtype=pts.dtype)], 1)
            plane = torch.linalg.svd(aug, full_matrices=False)[2][-1]
            n = plane[:-1] / plane[:-1].norm()
        units.append(torch.cat([n, (-(pts @ n)).mean()[None]]))
    return torch.stack(units)


def _fit(units: Tensor, x: Tensor, g: Tensor, num_classes: int) -> nn.Sequential:
    """The copy: hidden units from `units`, output weights and linear term by least squares."""
    d, c = x.shape[1], g.shape[1]
    hidden = torch.relu(x @ units[:, :-1].T + units[:, -1])
    design = torch.cat([hidden, x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    coef = torch.linalg.lstsq(design, g, rcond=1e-9, driver="gelsd").solution  # (K + d + 1, C')
    k = units.shape[0]
    out_w, lin_w, lin_b = coef[:k].T, coef[k : k + d].T, coef[-1]
    first = nn.Linear(d, k + 2 * c)
    second = nn.Linear(k + 2 * c, num_classes)
    with torch.no_grad():
        first.weight.copy_(torch.cat([units[:, :-1], lin_w, -lin_w]))
        first.bias.copy_(torch.cat([units[:, -1], lin_b, -lin_b]))
        w2 = torch.zeros(num_classes, k + 2 * c, dtype=x.dtype)
        w2[1:, :k] = out_w
        w2[1:, k : k + c] = torch.eye(c, dtype=x.dtype)
        w2[1:, k + c :] = -torch.eye(c, dtype=x.dtype)
        second.weight.copy_(w2)
        second.bias.zero_()
    return nn.Sequential(first.double(), nn.ReLU(), second.double())


def weight_error(copy: nn.Module, units: int, weight: Tensor, bias: Tensor) -> dict[str, float]:
    """How far the first `units` hidden units of an `Equivalent` copy are from the target's
    first layer (`weight` (H, d), `bias` (H,)), both as [w, b] / |w|: each recovered unit
    against its closest true unit, up to sign (mean and largest distance), and how many true
    units were found (a unit that never switches between pool inputs cannot be)."""
    with torch.no_grad():
        layer = copy[1][0]
        found = torch.cat([layer.weight[:units], layer.bias[:units, None]], 1).double().cpu()
        true = torch.cat([weight, bias[:, None]], 1).double().cpu()
        true = true / weight.double().cpu().norm(dim=1, keepdim=True)
        dist = torch.minimum(torch.cdist(found, true), torch.cdist(found, -true)).min(1).values
    return {
        "weight_error_mean": float(dist.mean()),
        "weight_error_max": float(dist.max()),
        "units_found": int(units),
        "units_true": int(true.shape[0]),
    }
