"""CROWN's intermediate bounds of a convolution's outputs, with the linear bounds kept in
patch form.

A row e_n on output neuron n = (channel c, position (i, j)) of a convolution, pushed back
through the network, stays zero outside that neuron's receptive field: through the
convolution itself it is the kernel W[c] placed at (i, j); through an elementwise relaxation
it is multiplied by the slopes at those positions; through an earlier convolution it grows
by a transposed convolution of the patch alone; through max pooling (`relax.py`'s
relaxation) each coefficient moves to its window's entry of largest lower bound; through a
batch norm it is scaled per channel. So each row is held as a small patch
(C, P_h, P_w) anchored at (i, j) * step + offset instead of a dense tensor the size of the
layer: for the CROWN-IBP paper's 4-layer MNIST CNN a row on the second convolution is
16x4x4 numbers at the first ReLU (not 16x14x14) and 1x10x10 at the input (not 28x28). The
result is the same bound as the dense backward pass (`bounds._Propagation.backward`) up to
float rounding. This is the "patches" form of Xu et al. 2020 ("Automatic Perturbation
Analysis for Scalable Certified Robustness and Beyond", arXiv:2002.12920, Appendix).

It applies to a chain input -> conv -> ... -> conv of single-input ops: convolutions (2-d,
zero padding, no dilation, one group), elementwise activations (ReLU, LeakyReLU, sigmoid,
tanh), max pooling (no dilation) and 2-d batch norm; `chain` finds it, anything else keeps
the dense pass. Cost per row and point: one matrix product (or transposed convolution) of a
patch per convolution, no work outside the receptive field.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from adversa.certify.ops import ELEMENTWISE, Affine, Conv2d, Graph, MaxPool
from adversa.certify.relax import relax
from adversa.threat import ThreatModel

Interval = tuple[Tensor, Tensor]
_MATRIX_LIMIT = 2**22  # entries of the matrix of conv^T on one patch, above which it is not built


class _Input(Protocol):
    graph: Graph
    x: Tensor
    threat: ThreatModel
    box: Interval
    ball: bool


def chain(graph: Graph, k: int) -> list[int] | None:
    """[k, ..., the convolution reading the input]: node k and the nodes it is computed from,
    when node k is a convolution and all of those are convolutions, elementwise activations
    and max poolings of one input each; else None (and for a convolution of the input)."""
    nodes, out = graph.nodes, [k]
    while True:
        node = nodes[out[-1]]
        if len(node.inputs) != 1 or not _patchable(node.op, out[-1] == k):
            return None
        if node.inputs[0] == 0:
            return out if len(out) > 1 and isinstance(node.op, Affine) else None
        out.append(node.inputs[0])


def _patchable(op: object, top: bool) -> bool:
    if isinstance(op, Affine):
        return op.conv2d is not None or (op.channel is not None and not top)
    if isinstance(op, MaxPool):
        return not top and op.dilation == (1, 1)
    return not top and isinstance(op, ELEMENTWISE)


def _spread(op: Affine | MaxPool) -> tuple[tuple[int, ...], ...]:
    """(stride, padding, kernel) of a convolution or max pooling."""
    if isinstance(op, MaxPool):
        return op.stride, op.padding, op.kernel
    return op.conv2d.stride, op.conv2d.padding, tuple(op.conv2d.weight.shape[2:])


def row_size(graph: Graph, nodes: list[int]) -> int:
    """The largest number of elements one row's patch (times the pooling kernel, through a
    max pooling) has on the chain."""
    geo, largest = _Geometry(None, (1, 1)), 1
    for k in nodes:
        op = graph.nodes[k].op
        if isinstance(op, MaxPool) or (isinstance(op, Affine) and op.channel is None):
            geo.through(*_spread(op))
            channels = graph.nodes[graph.nodes[k].inputs[0]].shape[0]
            kernel = math.prod(op.kernel) if isinstance(op, MaxPool) else 1
            largest = max(largest, channels * kernel * math.prod(geo.size))
    return largest


class _Geometry:
    """Where the patches of a set of rows sit in a layer: a row at output position (i, j)
    covers positions (i, j) * step + offset + [0, size) along the two spatial axes. With
    `positions` None the rows are every position of whole channels, in order, and patches
    of a layer are shared by the channels (broadcast, not copied)."""

    def __init__(self, positions: Tensor | None, grid: tuple[int, int]) -> None:
        self.positions, self.grid = positions, grid
        self.step, self.offset, self.size = (1, 1), (0, 0), (1, 1)

    def through(
        self, stride: tuple[int, ...], padding: tuple[int, ...], kernel: tuple[int, ...]
    ) -> None:
        """The geometry one convolution or pooling further down (towards the input)."""
        axes = zip(stride, padding, kernel, strict=True)
        offset, size, step = [], [], []
        for axis, (s, p, k) in enumerate(axes):
            offset.append(self.offset[axis] * s - p)
            size.append((self.size[axis] - 1) * s + k)
            step.append(self.step[axis] * s)
        self.offset, self.size, self.step = tuple(offset), tuple(size), tuple(step)

    def windows(self, t: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, L, 1, C * P_h * P_w) for whole channels, else (B, 1, rows,
        C * P_h * P_w): the patches of t, zero outside t."""
        h, w = t.shape[2:]
        spans = zip(self.offset, self.grid, self.step, self.size, strict=True)
        ends = [o + (n - 1) * s + p for o, n, s, p in spans]
        # negative amounts crop: keep exactly the span the patches cover
        t = F.pad(t, (-self.offset[1], ends[1] - w, -self.offset[0], ends[0] - h))
        cols = F.unfold(t, self.size, stride=self.step).transpose(1, 2).contiguous()
        if self.positions is None:
            return cols.unsqueeze(2)
        return cols.index_select(1, self.positions).unsqueeze(1)


def _dot(a: Tensor, w: Tensor) -> Tensor:
    """sum over the last dimension of a * w, (B, L, rows): a matrix product when the
    patches w (B, L, 1, F) are shared by the rows, else elementwise."""
    if w.shape[2] == 1 and a.shape[:2] == (1, 1):  # rows shared by the points too
        return (w.reshape(-1, w.shape[3]) @ a[0, 0].t()).view(*w.shape[:2], -1)
    if w.shape[2] == 1:
        return (a @ w.transpose(2, 3)).squeeze(3)
    return (a * w).sum(3)


def _transpose(a: Tensor, conv: Conv2d, size: tuple[int, int], bias: Tensor | None) -> Tensor:
    """Patches (..., C_out * P_h * P_w) -> (..., C_in * P_h' * P_w' [+ 1]) through conv^T
    (and, appended, the patch's dot product with the bias): one matrix product with the map
    precomputed on the basis patches when it is small, else a transposed convolution of
    each patch."""
    c_out, c_in = conv.weight.shape[:2]
    volume = c_out * math.prod(size)
    kernel = conv.weight.shape[2:]
    grown = tuple((n - 1) * s + k for n, s, k in zip(size, conv.stride, kernel, strict=True))
    if volume * c_in * math.prod(grown) <= _MATRIX_LIMIT:
        basis = torch.eye(volume, dtype=a.dtype, device=a.device).view(volume, c_out, *size)
        matrix = F.conv_transpose2d(basis, conv.weight, stride=conv.stride).flatten(1)
        if bias is not None:
            column = bias.flatten().repeat_interleave(math.prod(size)).unsqueeze(1)
            matrix = torch.cat([matrix, column], 1)
        return (a.reshape(-1, volume) @ matrix).view(*a.shape[:-1], -1)
    lead = a.shape[:-1]
    out = F.conv_transpose2d(a.reshape(-1, c_out, *size), conv.weight, stride=conv.stride)
    out = out.view(*lead, -1)
    if bias is not None:
        column = (a.unflatten(-1, (c_out, -1)).sum(-1) * bias.flatten()).sum(-1, keepdim=True)
        out = torch.cat([out, column], -1)
    return out


def lower_bounds(prop: _Input, nodes: list[int], idx: Tensor, pre: dict[int, Interval]) -> Tensor:
    """Lower bounds (B, 2 len(idx)) of +z_k[idx] then -z_k[idx] for the chain `nodes` from
    `chain` (k = nodes[0], idx sorted flat indices into its output), given the bounds `pre`
    of every activation's input on the chain."""
    graph, top = prop.graph, prop.graph.nodes[nodes[0]]
    conv = top.op.conv2d
    grid = tuple(top.shape[1:])
    area = math.prod(grid)
    c = idx // area
    first, last = int(idx[0]), int(idx[-1])
    whole = len(idx) % area == 0 and first % area == 0 and last - first == len(idx) - 1
    geo = _Geometry(None if whole else (idx % area).repeat(2), grid)
    # rows: (sign, channel) at every position when whole, else (sign, neuron)
    chans = c[::area] if whole else c
    w = conv.weight[chans].flatten(1)
    a = torch.cat([w, -w]).unsqueeze(0).unsqueeze(0)  # (1, 1, rows, C_in * K_h * K_w)
    total = torch.zeros(1, 1, a.shape[2], dtype=a.dtype, device=a.device)
    if top.op.bias is not None:
        bias = top.op.bias.flatten()[chans]
        total = total + torch.cat([bias, -bias])
    geo.through(*_spread(top.op))
    for k in nodes[1:]:
        op, below = graph.nodes[k].op, graph.nodes[k].inputs[0]
        if isinstance(op, Affine) and op.channel is not None:  # batch norm
            grid = graph.nodes[k].shape[1:]
            scale, shift = (v.view(1, -1, 1, 1).expand(1, -1, *grid) for v in op.channel)
            # zero outside the layer: padded positions are constants, not batch-norm outputs
            scale, shift = geo.windows(torch.cat([scale, shift], 1)).chunk(2, 3)
            total, a = total + _dot(a, shift), a * scale
        elif isinstance(op, Affine):
            a = _transpose(a, op.conv2d, geo.size, op.bias)
            if op.bias is not None:
                total, a = total + a[..., -1], a[..., :-1]
        elif isinstance(op, MaxPool):
            a, bias = _max_pool(op, a, geo, graph.nodes[k].shape[1:], pre[below])
            total = total + bias
        else:
            lo_slope, lo_bias, up_slope, up_bias = relax(op, *pre[below])
            parts = [lo_slope, up_slope, up_bias] + ([] if lo_bias is None else [lo_bias])
            parts = geo.windows(torch.cat(parts, 1)).chunk(len(parts), 3)
            total = total + _dot(a.clamp_max(0), parts[2])
            if lo_bias is not None:
                total = total + _dot(a.clamp_min(0), parts[3])
            a = torch.where(a > 0, parts[0], parts[1]) * a  # (B, L or 1, rows, C P_h P_w)
        if isinstance(op, MaxPool) or (isinstance(op, Affine) and op.channel is None):
            geo.through(*_spread(op))
    out = total + _concretize(prop, a, geo)  # (B, L or 1, rows)
    if whole:  # rows (sign, channel) x positions, in the order of idx
        return out.transpose(1, 2).flatten(1)
    return out.flatten(1)


def _max_pool(
    op: MaxPool, a: Tensor, geo: _Geometry, pooled: tuple[int, ...], bounds: Interval
) -> tuple[Tensor, Tensor]:
    """`relax.maxpool_backward` on patches: each window's coefficient goes to the entry of
    largest lower bound (its upper bound too when that entry is surely the max), else the
    window's largest upper bound becomes a constant. -> (patches one level down, bias)."""
    lower, upper = bounds
    b, c = lower.shape[:2]
    low, up = op.windows(lower, -math.inf), op.windows(upper, -math.inf)  # (B, C, K, L)
    best, j = low.max(2, keepdim=True)
    others = up.scatter(2, j, -math.inf).amax(2)
    stable = (best.squeeze(2) >= others).to(a.dtype)
    loose_top = (1 - stable) * up.amax(2)
    kernel = low.shape[2]
    chosen = torch.zeros_like(low).scatter_(2, j, 1).view(b, c * kernel, -1)
    grid = [v.view(b, -1, *pooled) for v in (stable, loose_top, chosen)]
    size = math.prod(geo.size)
    stable, loose_top, chosen = geo.windows(torch.cat(grid, 1)).split(
        [c * size, c * size, c * kernel * size], 3
    )
    neg = a.clamp_max(0)
    bias = _dot(neg, loose_top)
    coef = (a - neg) + neg * stable  # (B, L or 1, rows, C * P_h * P_w)
    lead = coef.shape[:3]
    cols = coef.unflatten(3, (c, 1, size)) * chosen.unflatten(3, (c, kernel, size))
    grown = [(n - 1) * s + k for n, s, k in zip(geo.size, op.stride, op.kernel, strict=True)]
    out = F.fold(cols.reshape(-1, c * kernel, size), grown, op.kernel, stride=op.stride)
    return out.view(*lead, -1), bias


def _concretize(prop: _Input, a: Tensor, geo: _Geometry) -> Tensor:
    """min over the input set of each row's patch . x0: (B, L or 1, rows)."""
    low, high = prop.box
    mid, rad = geo.windows(torch.cat([(high + low) / 2, (high - low) / 2], 1)).chunk(2, 3)
    value = _dot(a, mid) - _dot(a.abs(), rad)
    if prop.ball and prop.threat.eps > 0:
        x, inside = geo.windows(torch.cat([prop.x, torch.ones_like(prop.x)], 1)).chunk(2, 3)
        a = a * inside  # padded positions are constants, not coordinates of the ball
        ball = _dot(a, x) - prop.threat.eps * a.norm(dim=3)
        value = torch.maximum(value, ball)
    return value
