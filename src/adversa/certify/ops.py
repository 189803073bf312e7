"""The operators of a bound graph: what `bounds.py` knows how to bound.

- `Affine`: y = L(x) + bias with L linear (Linear, Conv1d/2d, AvgPool, BatchNorm in eval,
  mean, scaling by constants, reshapes and permutations).
- `Relu`: ReLU, or LeakyReLU with a negative slope in [0, 1] (both convex and monotone).
- `SShape`: sigmoid or tanh (monotone, convex below 0 and concave above).
- `Gelu`: GELU, exact or tanh-approximated (not monotone: one minimum).
- `MaxPool`: 2-d max pooling.
- `Add`: a + alpha * b (residual connections, sums and differences of two branches).
- `Cat`: concatenation along a non-batch dimension.

Shapes are per sample (no batch dimension); every op works on batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Kind = str  # "w" (the op's weights), "abs" (their absolute values) or "sq" (their squares)


@dataclasses.dataclass(frozen=True, eq=False)
class Conv2d:
    """What CROWN's patch form (`adversa.certify.patches`) needs of a 2-d convolution with
    zero padding, no dilation and one group: weight (C_out, C_in, K_h, K_w) and geometry."""

    weight: Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclasses.dataclass(frozen=True, eq=False)
class Affine:
    """y = L(x) + bias, L linear. `apply(x, kind)` runs L with its weights, their absolute
    values (for interval radii) or their squares (for l2 row norms); `transpose(a)` runs L^T
    on a batch of rows shaped like the output. `mixing` is False for maps that act on each
    coordinate alone (scale, reshape), for which interval arithmetic is exact."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    fn: Callable[[Tensor, Kind], Tensor]
    fn_t: Callable[[Tensor], Tensor]
    bias: Tensor | None  # broadcastable to out_shape
    mixing: bool
    conv2d: Conv2d | None = None  # set for plain 2-d convolutions
    channel: tuple[Tensor, Tensor] | None = None  # (scale, shift) (C,) of a 2-d batch norm

    def forward(self, x: Tensor) -> Tensor:
        out = self.fn(x, "w")
        return out if self.bias is None else out + self.bias

    def transpose(self, a: Tensor) -> Tensor:
        """Rows (B, S, *out_shape) -> (B, S, *in_shape)."""
        lead = a.shape[:2]
        return self.fn_t(a.reshape(-1, *self.out_shape)).reshape(*lead, *self.in_shape)

    def bias_term(self, a: Tensor) -> Tensor | None:
        """sum over the output of a * bias: (B, S), or None without bias."""
        if self.bias is None:
            return None
        bias = self.bias.reshape((1,) * (len(self.out_shape) - self.bias.dim()) + self.bias.shape)
        lead = a.dim() - bias.dim()
        shared = [lead + i for i, size in enumerate(bias.shape) if size == 1]
        if shared:  # e.g. a convolution's bias, shared over positions: sum those first
            a = a.sum(shared, keepdim=True)
        return (a * bias).flatten(2).sum(2)


@dataclasses.dataclass(frozen=True, eq=False)
class Relu:
    """max(x, slope * x): ReLU (slope 0) or LeakyReLU (0 <= slope <= 1)."""

    slope: float = 0.0

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp_min(0) if self.slope == 0 else F.leaky_relu(x, self.slope)


@dataclasses.dataclass(frozen=True, eq=False)
class SShape:
    """An S-shaped activation: "sigmoid" or "tanh"."""

    name: str

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) if self.name == "sigmoid" else torch.tanh(x)

    def derivative(self, x: Tensor) -> Tensor:
        s = self.forward(x)
        return s * (1 - s) if self.name == "sigmoid" else 1 - s * s


# GELU's minimum: (place, value rounded down) for each form
GELU_MIN = {"none": (-0.75179, -0.169972), "tanh": (-0.75246, -0.170041)}


@dataclasses.dataclass(frozen=True, eq=False)
class Gelu:
    """GELU, x Phi(x) (Hendrycks & Gimpel 2016, arXiv:1606.08415), exact ("none") or with
    torch's tanh approximation ("tanh"). Not monotone: it falls to its minimum (value and
    place in `GELU_MIN`) and rises after it; |GELU''| <= `CURVATURE` everywhere (the largest is
    2 phi(0) = 0.798, at 0, for both forms)."""

    approximate: str = "none"
    CURVATURE = 0.8

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def derivative(self, x: Tensor) -> Tensor:
        if self.approximate == "tanh":
            c = math.sqrt(2 / math.pi)
            t = torch.tanh(c * (x + 0.044715 * x**3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(
            2 * math.pi
        )

    def interval(self, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        """Bounds of GELU on [lower, upper]: its minimum there (the global one when the
        interval holds its place) and the larger endpoint value (it falls, then rises)."""
        f_l, f_u = self.forward(lower), self.forward(upper)
        x_min, value = GELU_MIN[self.approximate]
        low = torch.minimum(f_l, f_u)
        near = (lower <= x_min + 1e-3) & (upper >= x_min - 1e-3)  # the global value: sound
        low = torch.where(near, torch.full_like(low, value), low)
        return low, torch.maximum(f_l, f_u)


@dataclasses.dataclass(frozen=True, eq=False)
class MaxPool:
    """2-d max pooling with zero-free (-inf) padding and ceil_mode=False."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, self.padding, self.dilation)

    def windows(self, x: Tensor, fill: float) -> Tensor:
        """(N, C, H, W) -> (N, C, K, L): the K entries of each of the L output windows, with
        padded positions set to `fill`."""
        n, c = x.shape[:2]
        pad = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
        x = F.pad(x.reshape(n * c, 1, *x.shape[2:]), pad, value=fill)
        cols = F.unfold(x, self.kernel, dilation=self.dilation, stride=self.stride)
        return cols.view(n, c, cols.shape[1], cols.shape[2])


@dataclasses.dataclass(frozen=True, eq=False)
class Add:
    """a + alpha * b."""

    alpha: float = 1.0

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b if self.alpha == 1 else a + self.alpha * b


@dataclasses.dataclass(frozen=True, eq=False)
class Cat:
    """Concatenation along per-sample dimension `dim` (0 is the first after the batch)."""

    dim: int
    sizes: tuple[int, ...]

    def forward(self, *xs: Tensor) -> Tensor:
        return torch.cat(xs, self.dim + 1)


Op = Affine | Relu | SShape | Gelu | MaxPool | Add | Cat
ELEMENTWISE = (Relu, SShape, Gelu)  # elementwise, with linear relaxations in `relax.py`
CURVED = (SShape, Gelu)  # their relaxations read the bound values, not only the signs


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    op: Op | None  # None for the input node (index 0)
    inputs: tuple[int, ...]  # indices of earlier nodes
    shape: tuple[int, ...]  # per-sample output shape
    where: str = ""  # the layer or traced operation it comes from


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """Nodes in topological order: node 0 is the input, the last node the logits.
    `input_affine[k]` says node k is an affine function of the input through at most one
    mixing op, where interval arithmetic on the input box is exact."""

    nodes: tuple[Node, ...]
    input_affine: tuple[bool, ...]

    def forward(self, x: Tensor) -> list[Tensor]:
        values = [x]
        for node in self.nodes[1:]:
            values.append(node.op.forward(*(values[i] for i in node.inputs)))
        return values


def finish(nodes: list[Node]) -> Graph:
    """The graph of `nodes` (topologically ordered, the output last) with `input_affine`."""
    affine = [True]
    mixes = [0]
    for node in nodes[1:]:
        src = node.inputs[0]
        ok = isinstance(node.op, Affine) and affine[src]
        mixes.append(mixes[src] + int(ok and node.op.mixing))
        affine.append(ok and mixes[-1] <= 1)
    return Graph(tuple(nodes), tuple(affine))
