"""Linear relaxations of the nonlinear ops, used by CROWN's backward pass.

- ReLU and LeakyReLU (slope alpha in [0, 1]): the upper line is the chord through
  (l, alpha l) and (u, u); the lower line passes through 0 with slope 1 if u > -l else alpha
  (CROWN's adaptive choice, Zhang et al. 2018, arXiv:1811.00866).
- Sigmoid and tanh (convex below 0, concave above): on an interval inside the convex part the
  upper line is the chord and the lower line the tangent at the midpoint; inside the concave
  part the other way round. On an interval across 0 (or too narrow for a stable chord) both
  lines take the smallest derivative k on [l, u] (at an endpoint, since the derivative peaks
  at 0): f(x) >= f(l) + k (x - l) and f(x) <= f(u) + k (x - u), since f' >= k on [l, u].
  These are sound, if looser across 0 than CROWN's tangent search.
- GELU (neither convex nor concave; Zhang et al. 2018 bound general activations by tangent
  and chord lines): for each of four slopes k (the tangents at the midpoint and at both
  ends, and the chord) the intercepts are made sound directly: with g(x) = f(x) - k x
  sampled on a grid of 33 points of step h, g >= min over the grid - M h^2 / 8 and
  g <= max + M h^2 / 8 on [l, u] (on each cell g lies within M h^2 / 8 of its chord, as
  |g''| = |f''| <= M = 0.8), with a float rounding allowance on top. Among these lines and
  the constant ones of IBP's interval (GELU's true minimum on [l, u], the larger end value),
  the lower bound keeps the line highest at the midpoint and the upper bound the lowest, so
  the least area to the curve and never wider there than IBP (but for the allowance). Sound
  for any interval, narrow ones too (h -> 0); in the convex part [-1.41, 1.41] the lines are
  the midpoint tangent and the chord up to the M h^2 / 8 term, at most M (u - l)^2 / 8 apart.
- Max pooling (as in auto_LiRPA's and DeepPoly's relaxation): the lower bound of each window's
  max is the entry j with the largest lower bound (max >= x_j). The upper bound is x_j when l_j
  is at least every other entry's upper bound (then the max is x_j exactly), else the
  constant max_i u_i.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adversa.certify.ops import Gelu, MaxPool, Op, Relu, SShape

CHORD_MIN_WIDTH = 1e-4  # narrower intervals use the derivative lines (no cancellation)
GRID = 33  # points per interval where GELU's lines are checked


def relax(op: Relu | SShape | Gelu, lower: Tensor, upper: Tensor) -> tuple[Tensor, ...]:
    """(lower slope, lower intercept or None, upper slope, upper intercept), elementwise."""
    if isinstance(op, Relu):
        return _relu(lower, upper, op.slope)
    if isinstance(op, Gelu):
        return _gelu(op, lower, upper)
    return _sshape(op, lower, upper)


def interval(op: Op, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Exact bounds of an elementwise op or max pooling over the box [lower, upper]."""
    if isinstance(op, Gelu):
        return op.interval(lower, upper)
    return op.forward(lower), op.forward(upper)  # monotone non-decreasing


def _relu(lower: Tensor, upper: Tensor, alpha: float) -> tuple[Tensor, ...]:
    unstable = (lower < 0) & (upper > 0)
    active = (lower >= 0).to(lower.dtype)
    stable_slope = active if alpha == 0 else active + alpha * (1 - active)
    chord = (upper - alpha * lower) / (upper - lower).clamp_min(1e-12)
    up_slope = torch.where(unstable, chord, stable_slope)
    up_bias = torch.where(unstable, lower * (alpha - up_slope), torch.zeros_like(lower))
    steep = (upper > -lower).to(lower.dtype)
    lo_slope = torch.where(
        unstable, steep if alpha == 0 else steep + alpha * (1 - steep), stable_slope
    )
    return lo_slope, None, up_slope, up_bias


def _sshape(op: SShape, lower: Tensor, upper: Tensor) -> tuple[Tensor, ...]:
    f_l, f_u = op.forward(lower), op.forward(upper)
    k = torch.minimum(op.derivative(lower), op.derivative(upper))
    lo_slope, lo_bias = k, f_l - k * lower
    up_slope, up_bias = k, f_u - k * upper
    mid = (lower + upper) / 2
    t_slope = op.derivative(mid)
    t_bias = op.forward(mid) - t_slope * mid
    width = upper - lower
    c_slope = (f_u - f_l) / width.clamp_min(CHORD_MIN_WIDTH)
    c_bias = f_l - c_slope * lower
    wide = width > CHORD_MIN_WIDTH
    convex, concave = (upper <= 0) & wide, (lower >= 0) & wide
    lo_slope = torch.where(convex, t_slope, torch.where(concave, c_slope, lo_slope))
    lo_bias = torch.where(convex, t_bias, torch.where(concave, c_bias, lo_bias))
    up_slope = torch.where(concave, t_slope, torch.where(convex, c_slope, up_slope))
    up_bias = torch.where(concave, t_bias, torch.where(convex, c_bias, up_bias))
    return lo_slope, lo_bias, up_slope, up_bias


def _gelu(op: Gelu, lower: Tensor, upper: Tensor) -> tuple[Tensor, ...]:
    steps = torch.linspace(0, 1, GRID, dtype=lower.dtype, device=lower.device)
    width = upper - lower
    xs = lower.unsqueeze(-1) + width.unsqueeze(-1) * steps  # (..., GRID)
    fs = op.forward(xs)
    h = width / (GRID - 1)
    rounding = 16 * torch.finfo(lower.dtype).eps * (1 + torch.maximum(lower.abs(), upper.abs()))
    margin = op.CURVATURE * h * h / 8 + rounding
    mid = (lower + upper) / 2
    chord = (fs[..., -1] - fs[..., 0]) / width.clamp_min(CHORD_MIN_WIDTH)
    chord = torch.where(width > CHORD_MIN_WIDTH, chord, op.derivative(mid))
    lo_slope = up_slope = torch.zeros_like(mid)  # first the constant lines of IBP's interval
    lo_bias, up_bias = op.interval(lower, upper)
    lo_bias, up_bias = lo_bias - rounding, up_bias + rounding
    for k in (op.derivative(mid), chord, op.derivative(lower), op.derivative(upper)):
        g = torch.addcmul(fs, k.unsqueeze(-1), xs, value=-1)  # f - k x on the grid
        low, high = g.amin(-1) - margin, g.amax(-1) + margin
        take = k * mid + low > lo_slope * mid + lo_bias  # higher at the midpoint
        lo_slope, lo_bias = torch.where(take, k, lo_slope), torch.where(take, low, lo_bias)
        take = k * mid + high < up_slope * mid + up_bias  # lower at the midpoint
        up_slope, up_bias = torch.where(take, k, up_slope), torch.where(take, high, up_bias)
    return lo_slope, lo_bias, up_slope, up_bias


def maxpool_backward(op: MaxPool, a: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """Rows a (B or 1, S, C, Ho, Wo) on the pooled output -> (rows on the input (B, S, C, H, W),
    the constant term (B, S)) of a lower bound of a . maxpool(x) over lower <= x <= upper."""
    b, c, h, w = lower.shape
    low = op.windows(lower, -math.inf)  # (B, C, K, L)
    up = op.windows(upper, -math.inf)
    best, j = low.max(2, keepdim=True)
    others = up.scatter(2, j, -math.inf).amax(2)
    stable = (best.squeeze(2) >= others).to(a.dtype).unsqueeze(1)  # (B, 1, C, L)
    top = up.amax(2).unsqueeze(1)
    positions = torch.arange(h * w, dtype=lower.dtype, device=lower.device).view(1, 1, h, w)
    where = op.windows(positions, -1.0).expand(b, c, -1, -1).gather(2, j).squeeze(2).long()
    a = a.reshape(a.shape[0], a.shape[1], c, -1)
    pos, neg = a.clamp_min(0), a.clamp_max(0)
    coef = pos + neg * stable
    bias = (neg * (1 - stable) * top).flatten(2).sum(2)
    index = where.unsqueeze(1).expand(b, a.shape[1], c, -1)
    out = torch.zeros(b, a.shape[1], c, h * w, dtype=a.dtype, device=a.device)
    out.scatter_add_(3, index, coef.expand(b, -1, -1, -1))
    return out.view(b, a.shape[1], c, h, w), bias
