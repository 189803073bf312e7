"""A feed-forward network as a graph of bound-propagation ops.

`build_graph(module, x)` walks `nn.Sequential` stacks (nested ones too) and `Residual`
blocks and turns every supported layer into one of four ops: `Affine` (Linear, Conv2d,
AvgPool2d as a depthwise convolution, BatchNorm in eval mode as a per-channel scale and shift,
Flatten as a reshape), `Relu`, and `Add` (a residual connection). Identity and Dropout are
dropped (bounds are always those of the network in eval mode). Anything else raises
`BadInput` naming the layer.

Ops hold the module's own parameters (not copies), so bounds computed from a graph are
differentiable with respect to the weights, which certified training needs; building a graph
costs one forward pass on one sample (to learn the shapes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.errors import BadInput

SUPPORTED = (
    "Linear, Conv2d, ReLU, Flatten, BatchNorm1d/2d (eval), AvgPool2d, Identity, Dropout, "
    "nn.Sequential and adversa.certify.Residual"
)


class Residual(nn.Module):
    """`x + body(x)`: a residual block that bound propagation understands. The body (a
    sequence of supported layers) must keep the shape of its input."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


Kind = str  # "w" (the op's weights), "abs" (their absolute values) or "sq" (their squares)


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
        lead = a.dim() - self.bias.dim()
        shared = [lead + i for i, size in enumerate(self.bias.shape) if size == 1]
        if shared:  # e.g. a convolution's bias, shared over positions: sum those first
            a = a.sum(shared, keepdim=True)
        return (a * self.bias).flatten(2).sum(2)


@dataclasses.dataclass(frozen=True, eq=False)
class Relu:
    def forward(self, x: Tensor) -> Tensor:
        return x.clamp_min(0)


@dataclasses.dataclass(frozen=True, eq=False)
class Add:
    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return a + b


Op = Affine | Relu | Add


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    op: Op | None  # None for the input node (index 0)
    inputs: tuple[int, ...]  # indices of earlier nodes
    shape: tuple[int, ...]  # per-sample output shape


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


def _weights(w: Tensor, kind: Kind) -> Tensor:
    return w if kind == "w" else w.abs() if kind == "abs" else w * w


def _dense(m: nn.Linear, in_shape: tuple[int, ...], where: str) -> Affine:
    if len(in_shape) != 1:
        raise BadInput(f"bounds: Linear {where} needs flat inputs, got shape {in_shape}")
    w = m.weight
    return Affine(
        in_shape,
        (m.out_features,),
        lambda x, k: F.linear(x, _weights(w, k)),
        lambda a: a @ w,
        m.bias,
        mixing=True,
    )


def _conv(w: Tensor, bias: Tensor | None, in_shape: tuple[int, ...], **geo: object) -> Affine:
    """A 2-d convolution with zero padding; `geo` holds stride, padding, dilation, groups."""
    out = F.conv2d(torch.zeros(1, *in_shape, dtype=w.dtype, device=w.device), w, None, **geo)
    out_shape = tuple(out.shape[1:])
    stride, padding, dilation = (geo[k] for k in ("stride", "padding", "dilation"))
    full = [
        (out_shape[i + 1] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[i + 2] - 1) + 1
        for i in range(2)
    ]
    output_padding = tuple(in_shape[i + 1] - full[i] for i in range(2))

    def fn_t(a: Tensor) -> Tensor:
        return F.conv_transpose2d(a, w, None, output_padding=output_padding, **geo)

    bias = None if bias is None else bias[:, None, None]
    return Affine(
        in_shape,
        out_shape,
        lambda x, k: F.conv2d(x, _weights(w, k), None, **geo),
        fn_t,
        bias,
        mixing=True,
    )


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv2d(m: nn.Conv2d, in_shape: tuple[int, ...], where: str) -> Affine:
    if m.padding_mode != "zeros":
        raise BadInput(f"bounds: Conv2d {where} uses padding_mode={m.padding_mode!r}")
    padding = m.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        span = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True)]
        if any(s % 2 for s in span):
            raise BadInput(f"bounds: Conv2d {where}: padding='same' with an even kernel")
        padding = tuple(s // 2 for s in span)
    geo = {"stride": _pair(m.stride), "padding": _pair(padding)}
    geo |= {"dilation": _pair(m.dilation), "groups": m.groups}
    return _conv(m.weight, m.bias, in_shape, **geo)


def _avgpool(m: nn.AvgPool2d, in_shape: tuple[int, ...], where: str, ref: Tensor) -> Affine:
    kernel, padding = _pair(m.kernel_size), _pair(m.padding)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    if m.ceil_mode or m.divisor_override is not None or (any(padding) and not m.count_include_pad):
        raise BadInput(
            f"bounds: AvgPool2d {where} must have ceil_mode=False, no divisor_override and "
            "count_include_pad=True when padded"
        )
    channels = in_shape[0]
    w = torch.full(
        (channels, 1, *kernel), 1.0 / math.prod(kernel), dtype=ref.dtype, device=ref.device
    )
    return _conv(
        w, None, in_shape, stride=stride, padding=padding, dilation=(1, 1), groups=channels
    )


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, in_shape: tuple[int, ...], where: str) -> Affine:
    if m.running_var is None or m.running_mean is None:
        raise BadInput(f"bounds: {type(m).__name__} {where} keeps no running statistics")
    scale = torch.rsqrt(m.running_var + m.eps)
    if m.weight is not None:
        scale = scale * m.weight
    shift = -m.running_mean * scale
    if m.bias is not None:
        shift = shift + m.bias
    view = (-1,) + (1,) * (len(in_shape) - 1)
    scale, shift = scale.view(view), shift.view(view)
    return Affine(
        in_shape,
        in_shape,
        lambda x, k: x * _weights(scale, k),
        lambda a: a * scale,
        shift,
        mixing=False,
    )


def _reshape(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Affine:
    return Affine(
        in_shape,
        out_shape,
        lambda x, k: x.reshape(-1, *out_shape),
        lambda a: a.reshape(-1, *in_shape),
        None,
        mixing=False,
    )


def _leaf(m: nn.Module, in_shape: tuple[int, ...], where: str, ref: Tensor) -> Op | None:
    if isinstance(m, nn.Identity | nn.Dropout):
        return None
    if isinstance(m, nn.ReLU):
        return Relu()
    if isinstance(m, nn.Linear):
        return _dense(m, in_shape, where)
    if isinstance(m, nn.Conv2d):
        return _conv2d(m, in_shape, where)
    if isinstance(m, nn.AvgPool2d):
        return _avgpool(m, in_shape, where, ref)
    if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        return _batchnorm(m, in_shape, where)
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return _reshape(in_shape, (math.prod(in_shape),))
    raise BadInput(f"bounds: unsupported layer {type(m).__name__} {where}; supported: {SUPPORTED}")


def build_graph(module: nn.Module, sample: Tensor) -> Graph:
    """The graph of `module` for inputs shaped like `sample` (B, ...); B may be 1."""
    nodes = [Node(None, (), tuple(sample.shape[1:]))]
    values = [sample[:1].detach()]

    def add(op: Op, inputs: tuple[int, ...]) -> int:
        with torch.no_grad():
            values.append(op.forward(*(values[i] for i in inputs)))
        nodes.append(Node(op, inputs, tuple(values[-1].shape[1:])))
        return len(nodes) - 1

    def walk(m: nn.Module, cur: int, path: str) -> int:
        where = f"at {path!r}" if path else "as the top module"
        if isinstance(m, nn.Sequential):
            if type(m).forward is not nn.Sequential.forward:
                raise BadInput(f"bounds: {type(m).__name__} {where} overrides forward")
            for name, child in m.named_children():
                cur = walk(child, cur, f"{path}.{name}" if path else name)
            return cur
        if isinstance(m, Residual):
            out = walk(m.body, cur, f"{path}.body" if path else "body")
            if nodes[out].shape != nodes[cur].shape:
                raise BadInput(f"bounds: Residual {where} changes the shape")
            return add(Add(), (cur, out))
        op = _leaf(m, nodes[cur].shape, where, values[0])
        return cur if op is None else add(op, (cur,))

    walk(module, 0, "")
    affine = [True]
    mixes = [0]
    for node in nodes[1:]:
        src = node.inputs[0]
        ok = isinstance(node.op, Affine) and affine[src]
        mixes.append(mixes[src] + int(ok and node.op.mixing))
        affine.append(ok and mixes[-1] <= 1)
    return Graph(tuple(nodes), tuple(affine))
