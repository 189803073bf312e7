"""Layers as bound-graph ops: `leaf(module, in_shape, where, ref)` for torch.nn layers, and
the affine constructors it and the tracer (`trace.py`) share (dense, convolution, pooling,
batch norm, scale and shift, reshape, mean). An op holds the module's own parameters (not
copies), so bounds are differentiable with respect to the weights."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.certify.ops import Affine, Conv2d, Gelu, Kind, MaxPool, Op, Relu, SShape
from adversa.errors import BadInput

SUPPORTED = (
    "Linear, Conv1d/2d, ConvTranspose2d, ReLU, LeakyReLU (slope in [0, 1]), Sigmoid, Tanh, GELU, "
    "MaxPool2d, AvgPool2d, "
    "AdaptiveAvgPool2d (to a divisor of the size), BatchNorm1d/2d (eval), Flatten, Unflatten, "
    "Identity, Dropout; in a traced forward also their functional forms, +, -, scaling by "
    "constants, view/reshape/flatten/permute/transpose, torch.cat and mean/sum over non-batch "
    "dimensions"
)


def _weights(w: Tensor, kind: Kind) -> Tensor:
    return w if kind == "w" else w.abs() if kind == "abs" else w * w


def dense(w: Tensor, bias: Tensor | None, in_shape: tuple[int, ...], where: str) -> Affine:
    if len(in_shape) != 1 or w.dim() != 2 or w.shape[1] != in_shape[0]:
        raise BadInput(f"bounds: linear layer {where} needs flat inputs, got shape {in_shape}")
    return Affine(
        in_shape,
        (w.shape[0],),
        lambda x, k: F.linear(x, _weights(w, k)),
        lambda a: a @ w,
        bias,
        mixing=True,
    )


def conv(w: Tensor, bias: Tensor | None, in_shape: tuple[int, ...], **geo: object) -> Affine:
    """A 1-d or 2-d convolution with zero padding; `geo` holds stride, padding, dilation and
    groups, each spatial one a tuple with one entry per spatial dimension."""
    dims = w.dim() - 2
    fwd, back = (F.conv1d, F.conv_transpose1d) if dims == 1 else (F.conv2d, F.conv_transpose2d)
    out = fwd(torch.zeros(1, *in_shape, dtype=w.dtype, device=w.device), w, None, **geo)
    out_shape = tuple(out.shape[1:])
    stride, padding, dilation = (geo[k] for k in ("stride", "padding", "dilation"))
    full = [
        (out_shape[i + 1] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[i + 2] - 1) + 1
        for i in range(dims)
    ]
    output_padding = tuple(in_shape[i + 1] - full[i] for i in range(dims))

    plain = dims == 2 and geo.get("groups", 1) == 1 and tuple(dilation) == (1, 1)
    # With few input channels (the first layer), CPU transposed convolutions are slow: one
    # matrix product to the columns, then summing the overlapping windows (fold), is faster.
    columns = plain and math.prod(w.shape[1:]) <= w.shape[0]

    def fn_t(a: Tensor) -> Tensor:
        if columns:
            cols = w.flatten(1).t() @ a.flatten(2)  # (N, C_in * K_h * K_w, positions)
            return F.fold(cols, in_shape[1:], w.shape[2:], padding=padding, stride=stride)
        if dims == 2:
            a = a.contiguous(memory_format=torch.channels_last)
        return back(a, w, None, output_padding=output_padding, **geo)

    bias = None if bias is None else bias.view(-1, *([1] * dims))
    return Affine(
        in_shape,
        out_shape,
        lambda x, k: fwd(x, _weights(w, k), None, **geo),
        fn_t,
        bias,
        mixing=True,
        conv2d=Conv2d(w, tuple(stride), tuple(padding)) if plain else None,  # type: ignore[arg-type]
    )


TRANSPOSED = ("stride", "padding", "output_padding", "groups", "dilation")  # F.conv_transpose2d


def conv_transpose(
    w: Tensor, bias: Tensor | None, in_shape: tuple[int, ...], where: str, **geo: object
) -> Affine:
    """A 2-d transposed convolution (zero padding; `geo` holds any of stride, padding,
    output_padding, groups and dilation). Its adjoint is the 2-d convolution with the same
    weight and geometry but output_padding, which only adds rows and columns that the
    convolution does not read."""
    if len(in_shape) != 3 or w.dim() != 4 or in_shape[0] != w.shape[0]:
        raise BadInput(
            f"bounds: transposed convolution {where} with weight {tuple(w.shape)} on inputs of "
            f"shape {in_shape}: only 2-d ones are supported"
        )
    geo = {k: int(v) if k == "groups" else tuple_of(v) for k, v in geo.items()}  # type: ignore[arg-type]
    adjoint = {k: v for k, v in geo.items() if k != "output_padding"}
    out = F.conv_transpose2d(torch.zeros(1, *in_shape, dtype=w.dtype, device=w.device), w, **geo)
    return Affine(
        in_shape,
        tuple(out.shape[1:]),
        lambda x, k: F.conv_transpose2d(x, _weights(w, k), None, **geo),
        lambda a: F.conv2d(a, w, None, **adjoint),
        None if bias is None else bias.view(-1, 1, 1),
        mixing=True,
    )


def tuple_of(v: int | tuple[int, ...] | list[int], n: int = 2) -> tuple[int, ...]:
    return (int(v),) * n if isinstance(v, int) else tuple(int(i) for i in v)


def conv_geometry(
    kernel: tuple[int, ...], stride: object, padding: object, dilation: object, where: str
) -> dict[str, object]:
    """stride/padding/dilation tuples for F.convNd, with "valid" and "same" padding resolved."""
    dims = len(kernel)
    dilation = tuple_of(dilation, dims)  # type: ignore[arg-type]
    if padding == "valid":
        padding = (0,) * dims
    elif padding == "same":
        span = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
        if any(s % 2 for s in span):
            raise BadInput(f"bounds: convolution {where}: padding='same' with an even kernel")
        padding = tuple(s // 2 for s in span)
    return {
        "stride": tuple_of(stride, dims),  # type: ignore[arg-type]
        "padding": tuple_of(padding, dims),  # type: ignore[arg-type]
        "dilation": dilation,
    }


def _convnd(m: nn.Conv1d | nn.Conv2d, in_shape: tuple[int, ...], where: str) -> Affine:
    if m.padding_mode != "zeros":
        raise BadInput(f"bounds: {type(m).__name__} {where} uses padding_mode={m.padding_mode!r}")
    geo = conv_geometry(m.kernel_size, m.stride, m.padding, m.dilation, where)
    return conv(m.weight, m.bias, in_shape, groups=m.groups, **geo)


def _conv_transpose(m: nn.ConvTranspose2d, in_shape: tuple[int, ...], where: str) -> Affine:
    if m.padding_mode != "zeros":
        raise BadInput(f"bounds: ConvTranspose2d {where} uses padding_mode={m.padding_mode!r}")
    geo = {
        "stride": m.stride, "padding": m.padding, "output_padding": m.output_padding,
        "groups": m.groups, "dilation": m.dilation,
    }  # fmt: skip
    return conv_transpose(m.weight, m.bias, in_shape, where, **geo)


def avgpool(
    in_shape: tuple[int, ...], kernel: object, stride: object, padding: object, ref: Tensor
) -> Affine:
    """Average pooling (count_include_pad, floor mode) as a depthwise convolution."""
    kernel = tuple_of(kernel)  # type: ignore[arg-type]
    stride = tuple_of(stride if stride not in (None, [], ()) else kernel)  # type: ignore[arg-type]
    channels = in_shape[0]
    w = torch.full(
        (channels, 1, *kernel), 1.0 / math.prod(kernel), dtype=ref.dtype, device=ref.device
    )
    geo = {"stride": stride, "padding": tuple_of(padding), "dilation": (1, 1)}  # type: ignore[arg-type]
    return conv(w, None, in_shape, groups=channels, **geo)


def _avgpool(m: nn.AvgPool2d, in_shape: tuple[int, ...], where: str, ref: Tensor) -> Affine:
    padding = tuple_of(m.padding)
    if m.ceil_mode or m.divisor_override is not None or (any(padding) and not m.count_include_pad):
        raise BadInput(
            f"bounds: AvgPool2d {where} must have ceil_mode=False, no divisor_override and "
            "count_include_pad=True when padded"
        )
    return avgpool(in_shape, m.kernel_size, m.stride, padding, ref)


def adaptive_avgpool(in_shape: tuple[int, ...], size: object, where: str, ref: Tensor) -> Affine:
    """AdaptiveAvgPool2d to an output size that divides the input size (then a plain one)."""
    if len(in_shape) != 3:
        raise BadInput(f"bounds: adaptive average pooling {where} needs (C, H, W), got {in_shape}")
    out = [in_shape[i + 1] if s is None else int(s) for i, s in enumerate(tuple_of(size))]  # type: ignore[arg-type]
    if any(o < 1 or in_shape[i + 1] % o for i, o in enumerate(out)):
        raise BadInput(
            f"bounds: adaptive average pooling {where} to {tuple(out)} from {in_shape[1:]}: "
            "the output size must divide the input size"
        )
    kernel = tuple(in_shape[i + 1] // o for i, o in enumerate(out))
    return avgpool(in_shape, kernel, kernel, 0, ref)


def maxpool(
    kernel: object, stride: object, padding: object, dilation: object, ceil: bool, where: str
) -> MaxPool:
    if ceil:
        raise BadInput(f"bounds: max pooling {where} must have ceil_mode=False")
    kernel = tuple_of(kernel)  # type: ignore[arg-type]
    stride = tuple_of(stride if stride not in (None, [], ()) else kernel)  # type: ignore[arg-type]
    return MaxPool(kernel, stride, tuple_of(padding), tuple_of(dilation))  # type: ignore[arg-type]


def leaky(slope: float, where: str) -> Relu:
    if not 0 <= slope <= 1:
        raise BadInput(f"bounds: LeakyReLU {where} needs a negative slope in [0, 1], got {slope}")
    return Relu(float(slope))


def scale_shift(shape: tuple[int, ...], scale: Tensor | None, shift: Tensor | None) -> Affine:
    """x * scale + shift elementwise; scale and shift broadcast to `shape` (or are None)."""
    if scale is None:
        return Affine(shape, shape, lambda x, k: x, lambda a: a, shift, mixing=False)
    return Affine(
        shape,
        shape,
        lambda x, k: x * _weights(scale, k),
        lambda a: a * scale,
        shift,
        mixing=False,
    )


def batchnorm(
    in_shape: tuple[int, ...],
    mean: Tensor,
    var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Affine:
    """Batch norm with running statistics, per channel (dimension 0 of `in_shape`)."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    view = (-1,) + (1,) * (len(in_shape) - 1)
    op = scale_shift(in_shape, scale.view(view), shift.view(view))
    return dataclasses.replace(op, channel=(scale, shift)) if len(in_shape) == 3 else op


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, in_shape: tuple[int, ...], where: str) -> Affine:
    if m.running_var is None or m.running_mean is None:
        raise BadInput(f"bounds: {type(m).__name__} {where} keeps no running statistics")
    return batchnorm(in_shape, m.running_mean, m.running_var, m.weight, m.bias, m.eps)


def reshape(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Affine:
    return Affine(
        in_shape,
        out_shape,
        lambda x, k: x.reshape(-1, *out_shape),
        lambda a: a.reshape(-1, *in_shape),
        None,
        mixing=False,
    )


def expand(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Affine:
    """Broadcasting to `out_shape` (size-1 or missing leading dimensions repeated)."""
    full = (1,) * (len(out_shape) - len(in_shape)) + in_shape
    repeated = tuple(i + 1 for i, (a, b) in enumerate(zip(full, out_shape, strict=True)) if a != b)
    return Affine(
        in_shape,
        out_shape,
        lambda x, k: x.reshape(-1, *full).expand(-1, *out_shape),
        lambda a: a.sum(repeated, keepdim=True).reshape(-1, *in_shape),
        None,
        mixing=False,
    )


def permute(in_shape: tuple[int, ...], order: tuple[int, ...]) -> Affine:
    """Per-sample dimensions reordered: output dim i is input dim order[i]."""
    inverse = tuple(order.index(i) for i in range(len(order)))
    out_shape = tuple(in_shape[i] for i in order)
    return Affine(
        in_shape,
        out_shape,
        lambda x, k: x.permute(0, *(i + 1 for i in order)),
        lambda a: a.permute(0, *(i + 1 for i in inverse)),
        None,
        mixing=False,
    )


def mean(in_shape: tuple[int, ...], dims: tuple[int, ...], keep: bool, divide: bool) -> Affine:
    """Mean (or sum, `divide=False`) over per-sample dimensions `dims`."""
    count = math.prod(in_shape[d] for d in dims) if divide else 1
    kept = tuple(1 if i in dims else s for i, s in enumerate(in_shape))
    out_shape = kept if keep else tuple(s for i, s in enumerate(in_shape) if i not in dims)
    axes = tuple(d + 1 for d in dims)

    def fn(x: Tensor, k: Kind) -> Tensor:
        out = x.sum(axes, keepdim=keep)
        return out / (count if k != "sq" else count * count)

    return Affine(
        in_shape,
        out_shape,
        fn,
        lambda a: (a.reshape(-1, *kept) / count).expand(-1, *in_shape),
        None,
        mixing=True,
    )


def leaf(m: nn.Module, in_shape: tuple[int, ...], where: str, ref: Tensor) -> Op | None:
    """The op of a torch.nn layer (None for those that do nothing in eval mode)."""
    if isinstance(m, nn.Identity | nn.Dropout | nn.Dropout1d | nn.Dropout2d):
        return None
    if isinstance(m, nn.ReLU):
        return Relu()
    if isinstance(m, nn.LeakyReLU):
        return leaky(m.negative_slope, where)
    if isinstance(m, nn.Sigmoid | nn.Tanh):
        return SShape(type(m).__name__.lower())
    if isinstance(m, nn.GELU):
        return Gelu(m.approximate)
    if isinstance(m, nn.Linear):
        return dense(m.weight, m.bias, in_shape, where)
    if isinstance(m, nn.Conv1d | nn.Conv2d):
        return _convnd(m, in_shape, where)
    if isinstance(m, nn.ConvTranspose2d):
        return _conv_transpose(m, in_shape, where)
    if isinstance(m, nn.AvgPool2d):
        return _avgpool(m, in_shape, where, ref)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return adaptive_avgpool(in_shape, m.output_size, where, ref)
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            raise BadInput(f"bounds: MaxPool2d {where} returns indices")
        return maxpool(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, where)
    if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        return _batchnorm(m, in_shape, where)
    if isinstance(m, nn.Flatten | nn.Unflatten):
        with torch.no_grad():
            out = m(torch.zeros(2, *in_shape, dtype=ref.dtype, device=ref.device))
        if out.shape[0] != 2:
            raise BadInput(f"bounds: {type(m).__name__} {where} flattens the batch dimension")
        return reshape(in_shape, tuple(out.shape[1:]))
    raise BadInput(f"bounds: unsupported layer {type(m).__name__} {where}; supported: {SUPPORTED}")
