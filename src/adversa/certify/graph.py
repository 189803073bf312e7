"""A network as a graph of bound-propagation ops (`adversa.certify.ops`).

`build_graph(module, x)` reads any module: `nn.Sequential` stacks (nested ones too) of
torch.nn layers and `Residual` blocks are walked directly; anything else (a module whose
`forward` calls `F.relu`, `F.max_pool2d`, `x.flatten(1)`, adds a skip connection, ...) is
traced with `torch.fx` (`adversa.certify.trace`); a torch.export graph is read as it is, and
a TorchScript module is first converted to one by torch's converter. Identity and Dropout
are dropped (bounds are always those of the network in eval mode). Anything that cannot be
bounded raises `BadInput` naming the layer or operation and where it sits, never a looser or
wrong graph.

Ops hold the module's own parameters (not copies), so bounds computed from a graph are
differentiable with respect to the weights, which certified training needs; building a graph
costs one forward pass on one sample (to learn the shapes; two when traced).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adversa.certify.fx_ops import from_torchscript
from adversa.certify.layers import SUPPORTED, leaf
from adversa.certify.ops import Add, Graph, Node, Op, finish
from adversa.certify.trace import trace_graph
from adversa.errors import BadInput

__all__ = ["SUPPORTED", "Graph", "Node", "Residual", "build_graph", "finish"]


class Residual(nn.Module):
    """`x + body(x)`: a residual block that bound propagation understands. The body (a
    sequence of supported layers) must keep the shape of its input."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _walkable(m: nn.Module) -> bool:
    """Only Sequential stacks, Residual blocks and torch.nn layers (walked without tracing)."""
    if isinstance(m, nn.Sequential):
        return type(m).forward is nn.Sequential.forward and all(map(_walkable, m.children()))
    if isinstance(m, Residual):
        return _walkable(m.body)
    return type(m).__module__.startswith("torch.nn.") and not list(m.children())


def build_graph(module: nn.Module, sample: Tensor) -> Graph:
    """The graph of `module` for inputs shaped like `sample` (B, ...); B may be 1."""
    if isinstance(module, torch.jit.ScriptModule):
        module = from_torchscript(module, sample)
    if not _walkable(module):
        return trace_graph(module, sample)
    nodes = [Node(None, (), tuple(sample.shape[1:]))]
    values = [sample[:1].detach()]

    def add(op: Op, inputs: tuple[int, ...], where: str) -> int:
        with torch.no_grad():
            values.append(op.forward(*(values[i] for i in inputs)))
        nodes.append(Node(op, inputs, tuple(values[-1].shape[1:]), where))
        return len(nodes) - 1

    def walk(m: nn.Module, cur: int, path: str) -> int:
        where = f"at {path!r}" if path else "as the top module"
        if isinstance(m, nn.Sequential):
            # by position, not named_children(), which skips a layer used twice
            for i, child in enumerate(m):
                cur = walk(child, cur, f"{path}.{i}" if path else str(i))
            return cur
        if isinstance(m, Residual):
            out = walk(m.body, cur, f"{path}.body" if path else "body")
            if nodes[out].shape != nodes[cur].shape:
                raise BadInput(f"bounds: Residual {where} changes the shape")
            return add(Add(), (cur, out), where)
        op = leaf(m, nodes[cur].shape, where, values[0])
        return cur if op is None else add(op, (cur,), where)

    walk(module, 0, "")
    return finish(nodes)
