"""What `adversa.certify.trace` recognises: fx call targets and tensor methods by canonical
name, the argument names of each, and the tracing and recording helpers."""

from __future__ import annotations

import inspect
import logging
import operator
import warnings
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from adversa.errors import BadInput

FUNCTIONS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", F.leaky_relu: "leaky_relu", torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid", torch.tanh: "tanh", F.tanh: "tanh", F.max_pool2d: "max_pool2d",
    F.avg_pool2d: "avg_pool2d", F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.linear: "linear", F.conv1d: "conv", F.conv2d: "conv", operator.add: "add",
    operator.iadd: "add", torch.add: "add", operator.sub: "sub", operator.isub: "sub",
    torch.sub: "sub", operator.mul: "mul", torch.mul: "mul", operator.truediv: "div",
    torch.div: "div", operator.neg: "neg", torch.neg: "neg", torch.flatten: "reshape",
    torch.reshape: "reshape", torch.squeeze: "reshape", torch.unsqueeze: "reshape",
    torch.permute: "permute", torch.transpose: "transpose", torch.cat: "cat",
    torch.concat: "cat", torch.mean: "mean", torch.sum: "sum", F.dropout: "identity",
    F.dropout1d: "identity", F.dropout2d: "identity", F.batch_norm: "batch_norm",
    F.gelu: "gelu", F.conv_transpose2d: "conv_transpose",
}  # fmt: skip
ATEN: dict[str, str] = {  # the core ATen ops of a torch.export graph
    "conv2d.default": "conv", "conv1d.default": "conv", "linear.default": "linear",
    "convolution.default": "convolution",
    "relu.default": "relu", "leaky_relu.default": "leaky_relu", "sigmoid.default": "sigmoid",
    "tanh.default": "tanh", "max_pool2d.default": "max_pool2d",
    "avg_pool2d.default": "avg_pool2d", "adaptive_avg_pool2d.default": "adaptive_avg_pool2d",
    "add.Tensor": "add", "sub.Tensor": "sub", "mul.Tensor": "mul", "div.Tensor": "div",
    "neg.default": "neg", "view.default": "reshape", "reshape.default": "reshape",
    "flatten.using_ints": "reshape", "squeeze.dim": "reshape", "unsqueeze.default": "reshape",
    "permute.default": "permute", "transpose.int": "transpose", "cat.default": "cat",
    "mean.dim": "mean", "sum.dim_IntList": "sum", "dropout.default": "identity",
    "clone.default": "identity", "batch_norm.default": "aten_batch_norm",
    "gelu.default": "gelu", "conv_transpose2d.input": "conv_transpose",
}  # fmt: skip
FUNCTIONS |= {
    getattr(getattr(torch.ops.aten, name.split(".")[0]), name.split(".")[1]): canon
    for name, canon in ATEN.items()
}
METHODS: dict[str, str] = {
    "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "add": "add", "sub": "sub",
    "mul": "mul", "div": "div", "neg": "neg", "view": "reshape", "reshape": "reshape",
    "flatten": "reshape", "unflatten": "reshape", "squeeze": "reshape", "unsqueeze": "reshape",
    "view_as": "reshape", "reshape_as": "reshape", "permute": "permute",
    "transpose": "transpose", "mean": "mean", "sum": "sum", "contiguous": "identity",
}  # fmt: skip
SIGNATURES: dict[str, tuple[str, ...]] = {
    "leaky_relu": ("input", "negative_slope"),
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                   "divisor_override"),
    "adaptive_avg_pool2d": ("input", "output_size"),
    "linear": ("input", "weight", "bias"),
    "conv": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv_transpose": ("input", "weight", "bias", "stride", "padding", "output_padding",
                       "groups", "dilation"),
    "gelu": ("input", "approximate"),
    "add": ("input", "other", "alpha"), "sub": ("input", "other", "alpha"),
    "mul": ("input", "other"), "div": ("input", "other"),
    "transpose": ("input", "dim0", "dim1"), "cat": ("tensors", "dim"),
    "mean": ("input", "dim", "keepdim"), "sum": ("input", "dim", "keepdim"),
    "convolution": ("input", "weight", "bias", "stride", "padding", "dilation", "transposed",
                    "output_padding", "groups"),
    "batch_norm": ("input", "running_mean", "running_var", "weight", "bias", "training",
                   "momentum", "eps"),
    "aten_batch_norm": ("input", "weight", "bias", "running_mean", "running_var", "training",
                        "momentum", "eps"),
}  # fmt: skip


class Recorder(fx.Interpreter):
    """Runs a graph and keeps every node's value. torch.export's shape guards are skipped:
    the graph runs on two rows whatever batch it was exported with, and any size it fixed
    fails at the operation that uses it."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        guard = n.op == "call_module" and n.target == "_guards_fn"
        out = None if guard else super().run_node(n)
        # a copy: a later in-place op (ReLU(inplace=True)) must not rewrite this value
        self.values[n] = out.clone() if isinstance(out, torch.Tensor) else out
        return out

    def record(self, x: torch.Tensor, name: str) -> dict[fx.Node, Any]:
        try:
            self.run(x)
        except Exception as exc:  # a graph that cannot run on this batch raises anything
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInput(
                f"bounds: {name} does not run on a batch of 2 inputs ({first[:200]}); export "
                "or trace it with a dynamic batch dimension"
            ) from None
        return self.values


class _Tracer(fx.Tracer):
    """fx's tracer, noting for each node the file and line of the user's code that made it
    (fx's own `record_stack_traces` takes seconds on its first use)."""

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        node = super().create_node(*args, **kwargs)
        frame = inspect.currentframe()
        while frame is not None and (
            "/torch/" in frame.f_code.co_filename or frame.f_code.co_filename == __file__
        ):
            frame = frame.f_back
        if frame is not None:
            name = frame.f_code.co_filename.replace("\\", "/").rsplit("/", 1)[-1]
            node.meta["adversa_where"] = f"{name}:{frame.f_lineno}"
        return node


def location(node: fx.Node) -> str:
    """ " (file.py:LINE)" of the code that made `node`, or "" when unknown."""
    where = node.meta.get("adversa_where")
    return f" ({where})" if where else ""


def describe(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"method .{node.target}()"
    name = getattr(node.target, "__name__", str(node.target))
    module = getattr(node.target, "__module__", None) or ""
    return f"{module + '.' if module and module != '_operator' else ''}{name}"


def trace_module(module: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(module)
    except Exception as exc:  # fx raises many types for code it cannot trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(
            f"bounds: {type(module).__name__} cannot be traced by torch.fx ({first}); write its "
            "forward without data-dependent control flow"
        ) from None
    return fx.GraphModule(tracer.root, graph)


def from_torchscript(module: torch.jit.ScriptModule, sample: torch.Tensor) -> fx.GraphModule:
    """A TorchScript module as a torch.export graph, through torch's TorchScript converter
    (`torch._export.converter`, a private API: anything it cannot convert is `BadInput`)."""
    quiet = logging.getLogger("torch._export")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch._export.converter import TS2EPConverter  # a slow import, needed here only

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = sample[:1].detach().expand(2, *sample.shape[1:]).contiguous()
            return TS2EPConverter(module, (rows,)).convert().module()
    except Exception as exc:  # the converter raises many types for what it cannot convert
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(
            f"bounds: this TorchScript module could not be converted to a graph ({first[:200]}); "
            "load the model from its Python definition (file.py:factory with --weights) or a "
            "torch.export archive (.pt2) instead"
        ) from None
    finally:
        quiet.setLevel(level)
