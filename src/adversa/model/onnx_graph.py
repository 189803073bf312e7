"""An ONNX graph run by PyTorch operators, so gradients flow to the input.

`OnnxGraph(model_proto)` holds the initializers as buffers and runs the nodes in their
(topological) order with the torch function of each operator; the operators are those of
image and tabular classifiers as exporters write them (convolutions, matrix products,
activations, pooling, normalisation, and the shape arithmetic around reshapes and attention),
following the ONNX operator specification (https://onnx.ai/onnx/operators/) up to opset 21.
A graph with any other operator raises `UnsupportedOperator` at construction, naming it and
the node, so it is never run wrongly; `adversa.model.onnx` then serves it with onnxruntime.

Cost: one torch call per node; no copies beyond what the operators need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Op = Callable[..., Any]

_DTYPES = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}


class UnsupportedOperator(NotImplementedError):
    """An operator (or attribute value) this interpreter does not implement."""


def _ints(t: Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _pads(x: Tensor, pads: Sequence[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """ONNX pads (begins..., ends...) as symmetric padding, pre-padding what is not."""
    n = len(pads) // 2
    begin, end = list(pads[:n]), list(pads[n:])
    if begin == end:
        return x, begin
    torch_pads: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        torch_pads += [b, e]
    return F.pad(x, torch_pads, value=value), [0] * n


def _conv(x: Tensor, w: Tensor, b: Tensor | None = None, **a: Any) -> Tensor:
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOperator(f"Conv auto_pad={a['auto_pad']}")
    dims = w.dim() - 2
    x, pad = _pads(x, a.get("pads", [0] * 2 * dims))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return conv(
        x,
        w,
        b,
        a.get("strides", [1] * dims),
        pad,
        a.get("dilations", [1] * dims),
        a.get("group", 1),
    )


def _pool(kind: str) -> Op:
    def pool(x: Tensor, **a: Any) -> Any:
        if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise UnsupportedOperator(f"{kind}Pool auto_pad={a['auto_pad']}")
        k = a["kernel_shape"]
        dims = len(k)
        pads = a.get("pads", [0] * 2 * dims)
        strides, ceil = a.get("strides", [1] * dims), bool(a.get("ceil_mode", 0))
        if kind == "Max":
            x, pad = _pads(x, pads, value=-math.inf)
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
            return fn(x, k, strides, pad, a.get("dilations", [1] * dims), ceil)
        include = bool(a.get("count_include_pad", 0))
        if pads[:dims] != pads[dims:]:
            raise UnsupportedOperator("AveragePool with asymmetric pads")
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        return fn(x, k, strides, pads[:dims], ceil, include)

    return pool


def _gemm(a: Tensor, b: Tensor, c: Tensor | None = None, **at: Any) -> Tensor:
    a = a.t() if at.get("transA", 0) else a
    b = b.t() if at.get("transB", 0) else b
    out = at.get("alpha", 1.0) * (a @ b)
    return out if c is None else out + at.get("beta", 1.0) * c


def _batch_norm(x: Tensor, scale: Tensor, bias: Tensor, mean: Tensor, var: Tensor, **a: Any):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, a.get("epsilon", 1e-5))


def _layer_norm(x: Tensor, scale: Tensor, bias: Tensor | None = None, **a: Any) -> Tensor:
    axis = a.get("axis", -1) % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, a.get("epsilon", 1e-5))


def _reshape(x: Tensor, shape: Tensor, **a: Any) -> Tensor:
    dims = _ints(shape) or []
    if not a.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(x: Tensor, **a: Any) -> Tensor:
    axis = a.get("axis", 1) % max(x.dim(), 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _axes(a: dict[str, Any], given: Tensor | None) -> list[int] | None:
    return _ints(given) if given is not None else a.get("axes")


def _unsqueeze(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
    found = _axes(a, axes) or []
    rank = x.dim() + len(found)
    for axis in sorted(d % rank for d in found):
        x = x.unsqueeze(axis)
    return x


def _squeeze(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
    found = _axes(a, axes)
    if found is None:
        return x.squeeze()
    return x.squeeze(tuple(d % x.dim() for d in found))


def _reduce(fn: Callable[..., Tensor]) -> Op:
    def reduce(x: Tensor, axes: Tensor | None = None, **a: Any) -> Tensor:
        found = _axes(a, axes)
        keep = bool(a.get("keepdims", 1))
        if not found:
            if a.get("noop_with_empty_axes", 0):
                return x
            found = list(range(x.dim()))
        return fn(x, dim=tuple(d % x.dim() for d in found), keepdim=keep)

    return reduce


def _slice(
    x: Tensor,
    starts: Tensor,
    ends: Tensor,
    axes: Tensor | None = None,
    steps: Tensor | None = None,
    **_: Any,
) -> Tensor:
    s, e = _ints(starts) or [], _ints(ends) or []
    ax = _ints(axes) or list(range(len(s)))
    st = _ints(steps) or [1] * len(s)
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(s, e, ax, st, strict=True):
        if step < 0:
            raise UnsupportedOperator("Slice with a negative step")
        size = x.shape[axis]
        index[axis % x.dim()] = slice(
            max(min(start, size), -size), max(min(end, size), -size), step
        )
    return x[tuple(index)]


def _split(x: Tensor, split: Tensor | None = None, **a: Any) -> tuple[Tensor, ...]:
    axis = a.get("axis", 0)
    sizes = _ints(split) or a.get("split")
    if sizes is None:
        parts = a["num_outputs"]
        sizes = [math.ceil(x.shape[axis] / parts)] * parts
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    return torch.split(x, sizes, dim=axis)


def _gather(x: Tensor, index: Tensor, **a: Any) -> Tensor:
    axis = a.get("axis", 0) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index)
    out = x.index_select(axis, index.reshape(-1))
    return out.reshape((*x.shape[:axis], *index.shape, *x.shape[axis + 1 :]))


def _clip(x: Tensor, lo: Tensor | None = None, hi: Tensor | None = None, **a: Any) -> Tensor:
    lo_v = lo if lo is not None else a.get("min")
    hi_v = hi if hi is not None else a.get("max")
    return torch.clamp(x, lo_v, hi_v)


def _gelu(x: Tensor, **a: Any) -> Tensor:
    return F.gelu(x, approximate=a.get("approximate", "none"))


def _softmax(fn: Callable[..., Tensor]) -> Op:
    def softmax(x: Tensor, **a: Any) -> Tensor:
        return fn(x, dim=a.get("axis", -1))

    return softmax


def _constant_of_shape(shape: Tensor, **a: Any) -> Tensor:
    value = a.get("value")
    fill = value if value is not None else torch.zeros(1)
    return fill.reshape(()).expand(*(_ints(shape) or [])).clone()


def _range(start: Tensor, limit: Tensor, delta: Tensor, **_: Any) -> Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


OPS: dict[str, Op] = {
    "Add": lambda a, b, **_: a + b,
    "Sub": lambda a, b, **_: a - b,
    "Mul": lambda a, b, **_: a * b,
    "Div": lambda a, b, **_: (
        a / b if a.is_floating_point() else torch.div(a, b, rounding_mode="trunc")
    ),
    "Pow": lambda a, b, **_: torch.pow(a, b),
    "Sqrt": lambda x, **_: torch.sqrt(x),
    "Reciprocal": lambda x, **_: torch.reciprocal(x),
    "Neg": lambda x, **_: -x,
    "Exp": lambda x, **_: torch.exp(x),
    "Log": lambda x, **_: torch.log(x),
    "Abs": lambda x, **_: torch.abs(x),
    "Erf": lambda x, **_: torch.erf(x),
    "Tanh": lambda x, **_: torch.tanh(x),
    "Sigmoid": lambda x, **_: torch.sigmoid(x),
    "Relu": lambda x, **_: F.relu(x),
    "LeakyRelu": lambda x, **a: F.leaky_relu(x, a.get("alpha", 0.01)),
    "Elu": lambda x, **a: F.elu(x, a.get("alpha", 1.0)),
    "Selu": lambda x, **_: F.selu(x),
    "Softplus": lambda x, **_: F.softplus(x),
    "HardSigmoid": lambda x, **a: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda x, **_: F.hardswish(x),
    "Gelu": _gelu,
    "Clip": _clip,
    "Softmax": _softmax(F.softmax),
    "LogSoftmax": _softmax(F.log_softmax),
    "MatMul": lambda a, b, **_: torch.matmul(a, b),
    "Gemm": _gemm,
    "Conv": _conv,
    "MaxPool": _pool("Max"),
    "AveragePool": _pool("Average"),
    "GlobalAveragePool": lambda x, **_: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x, **_: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": lambda x, **a: x.permute(a.get("perm", list(range(x.dim()))[::-1])),
    "Concat": lambda *xs, **a: torch.cat(xs, dim=a["axis"]),
    "Split": _split,
    "Identity": lambda x, **_: x,
    "Dropout": lambda x, *_, **__: x,
    "Shape": lambda x, **a: torch.tensor(x.shape[a.get("start", 0) : a.get("end")]),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Slice": _slice,
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "ReduceMax": _reduce(torch.amax),
    "Expand": lambda x, shape, **_: (
        x * torch.ones(_ints(shape) or [], dtype=x.dtype, device=x.device)
    ),
    "ConstantOfShape": _constant_of_shape,
    "Cast": lambda x, **a: x.to(_DTYPES[a["to"]]),
    "Equal": lambda a, b, **_: a == b,
    "Where": lambda c, a, b, **_: torch.where(c, a, b),
    "Range": _range,
}


def _attribute(attr: Any) -> Any:
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if hasattr(value, "dims") and hasattr(value, "data_type"):  # a TensorProto
        return torch.from_numpy(np.array(numpy_helper.to_array(value)))
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


class OnnxGraph(nn.Module):
    """The graph of an ONNX `ModelProto`, run by torch operators (see the module docs)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        self._names: dict[str, str] = {}
        for i, init in enumerate(graph.initializer):
            array = np.array(numpy_helper.to_array(init))
            self.register_buffer(f"w{i}", torch.from_numpy(array))
            self._names[init.name] = f"w{i}"
        known = set(self._names)
        self.input_name = next(i.name for i in graph.input if i.name not in known)
        self.output_name = graph.output[0].name
        self._nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for node in graph.node:
            where = f"node {node.name or node.output[0]!r}"
            if node.domain not in ("", "ai.onnx") or (
                node.op_type not in OPS and node.op_type != "Constant"
            ):
                raise UnsupportedOperator(f"operator {node.op_type} ({where})")
            attrs = {a.name: _attribute(a) for a in node.attribute}
            if node.op_type == "Constant":
                value = next(iter(attrs.values()))
                tensor = value if isinstance(value, Tensor) else torch.tensor(value)
                name = f"c{len(self._names)}"
                self.register_buffer(name, tensor)
                self._names[node.output[0]] = name
                continue
            self._nodes.append((node.op_type, list(node.input), list(node.output), attrs))

    def forward(self, x: Tensor) -> Tensor:
        env: dict[str, Any] = {name: getattr(self, attr) for name, attr in self._names.items()}
        env[self.input_name] = x
        for op, inputs, outputs, attrs in self._nodes:
            args = [env[name] if name else None for name in inputs]
            while args and args[-1] is None:  # trailing optional inputs left out
                args.pop()
            out = OPS[op](*args, **attrs)
            if isinstance(out, tuple):
                env.update(zip(outputs, out, strict=False))
            else:
                env[outputs[0]] = out
        return env[self.output_name]
