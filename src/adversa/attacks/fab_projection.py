"""Minimum-norm projection onto a hyperplane intersected with a box, for Linf, L2 and L1,
batched over rows; the projection step of FAB (Croce & Hein 2020, arXiv:1907.02044, sec. 3.1).

For each row, with `c = w . t + b` the hyperplane's value at the point `t`, find

    delta = argmin ||delta||_p   subject to   w . (t + delta) + b = 0,   lo <= t + delta <= hi.

Flip the signs so that `c >= 0`; the step must then lower `w . z` by `c`. Coordinate i lowers
it most by moving to its "far" bound `e_i` (`lo - t_i` where `w_i > 0`, `hi - t_i` where
`w_i < 0`), which buys at most `cap_i = |w_i| |e_i|`. If the caps sum to less than `c` the
hyperplane misses the box, and the step goes all the way to that corner (the best the box
allows, as in the authors' code). Otherwise:

- L2 and Linf: the optimum is `delta_i = sign(e_i) min(lam a_i, |e_i|)` for one `lam >= 0`,
  with `a_i = |w_i|` (L2: the scaled gradient, clipped by the box) or `a_i = 1` (Linf: a
  common radius, clipped). The reduction `R(lam)` is piecewise linear and non-decreasing with
  breakpoints `|e_i| / a_i`; after one sort, `R` at every breakpoint is two cumulative sums,
  the segment where `R` crosses `c` is a count, and `lam` on it is one division.
- L1: spend the budget greedily on the largest `|w_i|` first, each up to its cap (a fractional
  knapsack): one sort, one cumulative sum, one count.

O(d log d) per row, no Python loop over rows or coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor

_TINY = 1e-12


def project_onto_hyperplane(
    t: Tensor, w: Tensor, b: Tensor, norm: str, bounds: tuple[float, float]
) -> Tensor:
    """The smallest step in `norm` from each row of `t` (n, d) onto `w . z + b = 0` inside the
    box `bounds`; `w` (n, d), `b` (n,). Returns `delta` (n, d). Where the hyperplane misses the
    box, `delta` moves to the box corner that gets closest to it."""
    lo, hi = bounds
    c = (w * t).sum(1) + b
    w = torch.where((c < 0)[:, None], -w, w)
    c = c.abs()
    e = torch.where(w > 0, lo - t, hi - t).clamp(lo - hi, hi - lo)
    e = torch.where(w == 0, torch.zeros_like(e), e)
    w_abs = w.abs()
    cap = w_abs * e.abs()
    feasible = cap.sum(1) >= c
    if norm == "l1":
        delta = _l1(w_abs, e, cap, c)
    elif norm in ("l2", "linf"):
        a = w_abs if norm == "l2" else (w != 0).to(w.dtype)
        delta = _scaled_clip(a, w_abs, e, cap, c)
    else:
        raise ValueError(f"norm must be one of linf, l2, l1, got {norm!r}")
    return torch.where(feasible[:, None], delta, e)


def _scaled_clip(a: Tensor, w_abs: Tensor, e: Tensor, cap: Tensor, c: Tensor) -> Tensor:
    """L2 / Linf: solve R(lam) = sum_i |w_i| min(lam a_i, |e_i|) = c for lam >= 0."""
    e_abs = e.abs()
    # a_i = 0 (w_i = 0) never saturates and never helps: its breakpoint is +inf.
    breaks = torch.where(a > 0, e_abs / a.clamp_min(_TINY), torch.full_like(a, torch.inf))
    breaks, order = breaks.sort(1)
    cap_sorted = cap.gather(1, order)
    slope_sorted = (w_abs * a).gather(1, order)
    cap_before = cap_sorted.cumsum(1) - cap_sorted  # saturated strictly before j
    slope_from = slope_sorted.flip(1).cumsum(1).flip(1)  # still unsaturated from j on
    # R at breakpoint j: the ones before are saturated, j and later move at slope lam.
    r_at = (
        cap_before + torch.where(breaks.isfinite(), breaks, torch.zeros_like(breaks)) * slope_from
    )
    r_at = torch.where(breaks.isfinite(), r_at, torch.full_like(r_at, torch.inf))
    k = (r_at < c[:, None]).sum(1, keepdim=True).clamp_max(a.shape[1] - 1)
    lam = (c[:, None] - cap_before.gather(1, k)) / slope_from.gather(1, k).clamp_min(_TINY)
    return e.sign() * torch.minimum(lam.clamp_min(0) * a, e_abs)


def _l1(w_abs: Tensor, e: Tensor, cap: Tensor, c: Tensor) -> Tensor:
    """L1: saturate coordinates in decreasing |w_i| until the reduction reaches c."""
    order = w_abs.sort(dim=1, descending=True, stable=True).indices
    cap_sorted = cap.gather(1, order)
    w_sorted = w_abs.gather(1, order).clamp_min(_TINY)
    e_sorted = e.gather(1, order)
    cum = cap_sorted.cumsum(1)
    k = (cum < c[:, None]).sum(1, keepdim=True).clamp_max(w_abs.shape[1] - 1)
    rest = c[:, None] - (cum.gather(1, k) - cap_sorted.gather(1, k))
    partial = rest.clamp(min=0).minimum(cap_sorted.gather(1, k)) / w_sorted.gather(1, k)
    ranks = torch.arange(w_abs.shape[1], device=w_abs.device).expand_as(w_abs)
    step = torch.where(ranks < k, e_sorted, torch.zeros_like(e_sorted))
    step = torch.where(ranks == k, e_sorted.sign() * partial, step)
    return torch.zeros_like(e).scatter(1, order, step)
