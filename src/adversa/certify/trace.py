"""Any module as a bound graph, by `torch.fx` symbolic tracing.

The traced forward is run once on two rows (the sample and a seeded perturbation of it, in
eval mode) to learn every value; then each operation that depends on the input becomes an op
of `adversa.certify.ops` and is checked to reproduce the recorded value on both rows.
Functional calls and tensor methods map to the same ops as modules: `F.relu`, `torch.relu`,
`x.relu()`; `F.linear`, `F.conv1d/2d`, `F.conv_transpose2d` on parameters; `F.max_pool2d`,
`F.avg_pool2d`, `F.adaptive_avg_pool2d`; `F.leaky_relu`, sigmoid, tanh, `F.gelu`; `+`/`-` of
two branches (skip connections), and `+ - * /` with constants (normalisation inside the
model); view, reshape, flatten, squeeze/unsqueeze, permute/transpose; `torch.cat`; mean and
sum over per-sample dimensions; dropout, contiguous as the identity. Values computed only
from parameters and buffers are constants; sizes read from the input (`x.size(0)`) serve
shape operations only. Anything else raises `BadInput` naming the operation, the fx node
and, where known, the line of `forward` (or the module path of a layer).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from adversa.certify import layers as L
from adversa.certify.fx_ops import (
    FUNCTIONS,
    METHODS,
    SIGNATURES,
    Recorder,
    describe,
    location,
    trace_module,
)
from adversa.certify.ops import Add, Cat, Gelu, Graph, Node, Op, Relu, SShape, finish
from adversa.errors import BadInput
from adversa.rng import make_generator


@dataclasses.dataclass(frozen=True)
class _In:
    """An argument that is a node of the bound graph."""

    index: int


def trace_graph(module: nn.Module, sample: Tensor) -> Graph:
    """The bound graph of `module` for inputs shaped like `sample` (B, ...)."""
    modes = [(m, m.training) for m in module.modules()]
    for m, _ in modes:  # eval mode, set directly: torch.export's modules refuse .eval()
        m.training = False
    try:
        gm = module if isinstance(module, fx.GraphModule) else trace_module(module)
        row = sample[:1].detach()
        noise = torch.randn(row.shape, generator=make_generator(0, "cpu")).to(row)
        values = Recorder(gm).record(torch.cat([row, row + 0.01 * noise]), type(module).__name__)
        return _Translator(gm, values, type(module).__name__).run()
    finally:
        for m, mode in modes:
            m.training = mode


class _Translator:
    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, Any], name: str) -> None:
        self.gm, self.values, self.name = gm, values, name
        self.nodes: list[Node] = []
        self.recorded: list[Tensor] = []  # the value of each graph node on the two rows
        self.env: dict[fx.Node, Any] = {}  # _In, or ("const", v), or ("shape", v)

    def fail(self, node: fx.Node, what: str) -> BadInput:
        return BadInput(
            f"bounds: {what} at node {node.name!r}{location(node)} in {self.name}; "
            f"supported: {L.SUPPORTED}"
        )

    def run(self) -> Graph:
        out = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self._placeholder(node)
            elif node.op == "get_attr":
                target = functools.reduce(getattr, node.target.split("."), self.gm)
                self.env[node] = ("const", target)
            elif node.op == "output":
                result = node.args[0]
                if isinstance(result, tuple | list) and len(result) == 1:  # torch.export's
                    result = result[0]
                out = self.env.get(result) if isinstance(result, fx.Node) else None
                if not isinstance(out, _In):
                    raise self.fail(node, "the output must be one tensor computed from the input")
            else:
                self._call(node)
        return self._prune(out.index)

    def _placeholder(self, node: fx.Node) -> None:
        if not self.nodes:
            value = self.values[node]
            self.nodes.append(Node(None, (), tuple(value.shape[1:]), "input"))
            self.recorded.append(value)
            self.env[node] = _In(0)
        elif node.args:  # an argument with a default value
            self.env[node] = ("const", node.args[0])
        else:
            raise self.fail(node, f"a second input {node.target!r} without a default")

    def _resolve(self, a: Any) -> Any:
        return fx.node.map_aggregate(a, lambda v: self._entry(v) if isinstance(v, fx.Node) else v)

    def _entry(self, v: fx.Node) -> Any:
        e = self.env[v]
        return e if isinstance(e, _In) else e[1]

    def _call(self, node: fx.Node) -> None:
        deps = [self.env[n] for n in node.all_input_nodes]
        value = self.values[node]
        tainted = any(isinstance(d, _In) for d in deps)
        from_shape = any(isinstance(d, tuple) and d[0] == "shape" for d in deps)
        if (
            tainted
            and isinstance(value, tuple | list)
            and any(isinstance(v, Tensor) for v in value)
        ):
            raise self.fail(node, f"{describe(node)} returning several tensors")
        if not tainted or not isinstance(value, Tensor):
            self.env[node] = ("shape" if tainted or from_shape else "const", value)
            return
        if any(isinstance(d, tuple) and d[0] == "shape" for d in deps) and not self._shape_op(node):
            raise self.fail(node, "a tensor computed from the input's size")
        op, inputs, where = self._op(node)
        if op is None:
            self.env[node] = _In(inputs[0])
            return
        with torch.no_grad():
            got = op.forward(*(self.recorded[i] for i in inputs))
        scale = 1e-5 * (1 + float(value.detach().abs().max()))
        if got.shape != value.shape or not torch.allclose(
            got, value.detach(), rtol=1e-4, atol=scale
        ):
            raise self.fail(node, f"{where} could not be reproduced (unusual arguments?)")
        self.env[node] = _In(self._append(op, inputs, value, where))

    def _append(self, op: Op, inputs: list[int], value: Tensor, where: str) -> int:
        with torch.no_grad():
            value = op.forward(*(self.recorded[i] for i in inputs)) if value is None else value
        self.nodes.append(Node(op, tuple(inputs), tuple(value.shape[1:]), where))
        self.recorded.append(value.detach())
        return len(self.nodes) - 1

    def _shape_op(self, node: fx.Node) -> bool:
        canon = self._canonical(node)
        return canon in ("reshape", "permute", "transpose", "mean", "sum", "identity")

    def _canonical(self, node: fx.Node) -> str | None:
        if node.op == "call_method":
            return METHODS.get(node.target)
        if node.op == "call_function":
            return FUNCTIONS.get(node.target)
        return None

    def _op(self, node: fx.Node) -> tuple[Op | None, list[int], str]:
        """The op for `node`, the graph nodes it reads and a description."""
        if node.op == "call_module":
            m = self.gm.get_submodule(node.target)
            src = self._resolve(node.args[0]) if node.args else None
            if not isinstance(src, _In) or len(node.all_input_nodes) != 1:
                raise self.fail(node, f"{type(m).__name__} at {node.target!r} with extra inputs")
            where = f"{type(m).__name__} at {node.target!r}"
            op = L.leaf(m, self.nodes[src.index].shape, f"at {node.target!r}", self.recorded[0])
            return op, [src.index], where
        canon = self._canonical(node)
        if canon is None:
            raise self.fail(node, f"unsupported operation {describe(node)}")
        names = SIGNATURES.get(canon, ("input",))
        args = dict(zip(names, self._resolve(tuple(node.args)), strict=False))
        args |= {k: v for k, v in self._resolve(dict(node.kwargs)).items()}
        handler: Callable[..., tuple[Op | None, list[int]]] = getattr(self, f"_{canon}")
        op, inputs = handler(node, args)
        return op, inputs, f"{describe(node)}"

    def _src(self, node: fx.Node, args: dict[str, Any], key: str = "input") -> int:
        src = args.get(key)
        if not isinstance(src, _In):
            raise self.fail(
                node, f"{describe(node)} on a constant with an input-dependent argument"
            )
        return src.index

    def _shape(self, index: int) -> tuple[int, ...]:
        return self.nodes[index].shape

    def _out(self, node: fx.Node) -> tuple[int, ...]:
        value = self.values[node]
        if value.shape[0] != 2:
            raise self.fail(node, f"{describe(node)} mixing the batch dimension")
        return tuple(value.shape[1:])

    def _dims(self, node: fx.Node, dims: Any, ndim: int) -> tuple[int, ...]:
        """Per-sample dimensions (0 = the first after the batch) of tensor dims `dims`."""
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        out = tuple(d % (ndim + 1) - 1 for d in dims)
        if not dims or any(d < 0 for d in out):
            raise self.fail(node, f"{describe(node)} over the batch dimension")
        return out

    def _identity(self, node: fx.Node, args: dict[str, Any]) -> tuple[None, list[int]]:
        return None, [self._src(node, args)]

    def _relu(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        return Relu(), [self._src(node, args)]

    def _leaky_relu(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        return L.leaky(float(args.get("negative_slope", 0.01)), node.name), [self._src(node, args)]

    def _curved(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        name = self._canonical(node)
        op = Gelu(str(args.get("approximate", "none"))) if name == "gelu" else SShape(str(name))
        return op, [self._src(node, args)]

    _sigmoid = _tanh = _gelu = _curved

    def _max_pool2d(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        if args.get("return_indices"):
            raise self.fail(node, "max_pool2d returning indices")
        op = L.maxpool(
            args["kernel_size"], args.get("stride"), args.get("padding", 0),
            args.get("dilation", 1), bool(args.get("ceil_mode")), node.name,
        )  # fmt: skip
        return op, [self._src(node, args)]

    def _avg_pool2d(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        if args.get("ceil_mode") or args.get("divisor_override") is not None:
            raise self.fail(node, "avg_pool2d with ceil_mode or divisor_override")
        if args.get("padding", 0) not in (0, (0, 0), [0, 0]) and not args.get(
            "count_include_pad", True
        ):
            raise self.fail(node, "avg_pool2d with padding and count_include_pad=False")
        op = L.avgpool(
            self._shape(src), args["kernel_size"], args.get("stride"), args.get("padding", 0),
            self.recorded[0],
        )  # fmt: skip
        return op, [src]

    def _adaptive_avg_pool2d(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        op = L.adaptive_avgpool(self._shape(src), args["output_size"], node.name, self.recorded[0])
        return op, [src]

    def _batch_norm(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        if args.get("training") or args.get("running_mean") is None:
            raise self.fail(node, "batch norm in training mode (bounds are of eval mode)")
        op = L.batchnorm(
            self._shape(src), args["running_mean"], args["running_var"], args.get("weight"),
            args.get("bias"), float(args.get("eps", 1e-5)),
        )  # fmt: skip
        return op, [src]

    _aten_batch_norm = _batch_norm

    def _linear(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        return L.dense(args["weight"], args.get("bias"), self._shape(src), node.name), [src]

    def _conv(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src, w = self._src(node, args), args["weight"]
        geo = L.conv_geometry(
            tuple(w.shape[2:]), args.get("stride", 1), args.get("padding", 0),
            args.get("dilation", 1), node.name,
        )  # fmt: skip
        op = L.conv(w, args.get("bias"), self._shape(src), groups=args.get("groups", 1), **geo)
        return op, [src]

    def _convolution(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        return (self._conv_transpose if args.get("transposed") else self._conv)(node, args)

    def _conv_transpose(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src, geo = self._src(node, args), {k: v for k, v in args.items() if k in L.TRANSPOSED}
        op = L.conv_transpose(args["weight"], args.get("bias"), self._shape(src), node.name, **geo)
        return op, [src]

    def _constant(self, node: fx.Node, c: Any, shape: tuple[int, ...]) -> Tensor:
        ref = self.recorded[0]
        c = (
            torch.as_tensor(c, dtype=ref.dtype, device=ref.device)
            if not isinstance(c, Tensor)
            else c
        )
        if c.dim() == len(shape) + 1 and c.shape[0] == 1:
            c = c[0]
        if c.dim() > len(shape) or torch.broadcast_shapes(c.shape, shape) != shape:
            raise self.fail(node, f"{describe(node)} with a constant that changes the shape")
        return c

    def _add(self, node: fx.Node, args: dict[str, Any], sign: float = 1.0) -> tuple[Op, list[int]]:
        a, b, alpha = args.get("input"), args.get("other"), float(args.get("alpha", 1))
        if isinstance(a, _In) and isinstance(b, _In):
            out = self._out(node)
            return Add(sign * alpha), [
                self._broadcast(node, a.index, out),
                self._broadcast(node, b.index, out),
            ]
        if isinstance(a, _In):
            shape = self._shape(a.index)
            return L.scale_shift(shape, None, sign * alpha * self._constant(node, b, shape)), [
                a.index
            ]
        shape = self._shape(b.index)
        scale = torch.tensor(sign * alpha).to(self.recorded[0])
        return L.scale_shift(shape, scale, self._constant(node, a, shape)), [b.index]

    def _broadcast(self, node: fx.Node, index: int, shape: tuple[int, ...]) -> int:
        """`index`, or a node broadcasting it to `shape`."""
        if self._shape(index) == shape:
            return index
        op = L.expand(self._shape(index), shape)
        return self._append(op, [index], None, f"broadcast for {describe(node)}")

    def _sub(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        return self._add(node, args, -1.0)

    def _mul(
        self, node: fx.Node, args: dict[str, Any], divide: bool = False
    ) -> tuple[Op, list[int]]:
        a, b = args.get("input"), args.get("other")
        if isinstance(a, _In) == isinstance(b, _In) or (divide and not isinstance(a, _In)):
            raise self.fail(node, f"{describe(node)} of two input-dependent tensors")
        src, c = (a, b) if isinstance(a, _In) else (b, a)
        c = self._constant(node, c, self._shape(src.index))
        return L.scale_shift(self._shape(src.index), 1 / c if divide else c, None), [src.index]

    def _div(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        return self._mul(node, args, divide=True)

    def _neg(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        minus = torch.tensor(-1.0).to(self.recorded[0])
        return L.scale_shift(self._shape(src), minus, None), [src]

    def _reshape(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        return L.reshape(self._shape(src), self._out(node)), [src]

    def _permute(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        dims = list(node.args[1:]) if node.op == "call_method" else [node.args[1]]
        dims = [
            int(d) for d in (dims[0] if len(dims) == 1 and not isinstance(dims[0], int) else dims)
        ]
        full = [d % (len(self._shape(src)) + 1) for d in dims]
        if full[0] != 0:
            raise self.fail(node, f"{describe(node)} moving the batch dimension")
        return L.permute(self._shape(src), tuple(d - 1 for d in full[1:])), [src]

    def _transpose(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        shape = self._shape(src)
        d0, d1 = self._dims(node, (args["dim0"], args["dim1"]), len(shape))
        order = list(range(len(shape)))
        order[d0], order[d1] = d1, d0
        return L.permute(shape, tuple(order)), [src]

    def _cat(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        parts = args.get("tensors")
        if not isinstance(parts, list | tuple) or not all(isinstance(p, _In) for p in parts):
            raise self.fail(node, "torch.cat with a constant part")
        first = self._shape(parts[0].index)
        (dim,) = self._dims(node, args.get("dim", 0), len(first))
        sizes = tuple(self._shape(p.index)[dim] for p in parts)
        return Cat(dim, sizes), [p.index for p in parts]

    def _mean(
        self, node: fx.Node, args: dict[str, Any], divide: bool = True
    ) -> tuple[Op, list[int]]:
        src = self._src(node, args)
        shape = self._shape(src)
        dims = self._dims(node, args.get("dim"), len(shape))
        return L.mean(shape, dims, bool(args.get("keepdim", False)), divide), [src]

    def _sum(self, node: fx.Node, args: dict[str, Any]) -> tuple[Op, list[int]]:
        return self._mean(node, args, divide=False)

    def _prune(self, out: int) -> Graph:
        """Keep the nodes the output depends on, in order, the output last."""
        keep = {out}
        for k in range(out, 0, -1):
            if k in keep:
                keep.update(self.nodes[k].inputs)
        order = sorted(keep)
        index = {k: i for i, k in enumerate(order)}
        nodes = [
            dataclasses.replace(self.nodes[k], inputs=tuple(index[i] for i in self.nodes[k].inputs))
            for k in order
        ]
        if out == 0:  # the identity: the graph needs at least one op
            nodes.append(Node(L.reshape(nodes[0].shape, nodes[0].shape), (0,), nodes[0].shape))
        return finish(nodes)
