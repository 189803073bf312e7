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
- Max pooling (as in auto_LiRPA's and DeepPoly's relaxation): the lower bound of each window's
  max is the entry j with the largest lower bound (max >= x_j). The upper bound is x_j when l_j
  is at least every other entry's upper bound (then the max is x_j exactly), else the
  constant max_i u_i.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adversa.certify.ops import MaxPool, Relu, SShape

CHORD_MIN_WIDTH = 1e-4  # narrower intervals use the derivative lines (no cancellation)


def relax(op: Relu | SShape, lower: Tensor, upper: Tensor) -> tuple[Tensor, ...]:
    """(lower slope, lower intercept or None, upper slope, upper intercept), elementwise."""
    if isinstance(op, Relu):
        return _relu(lower, upper, op.slope)
    return _sshape(op, lower, upper)


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
