"""Certified bounds on a network's outputs over an input ball: IBP and CROWN.

The input set is the Linf or L2 ball of radius eps around each x intersected with the box
[lo, hi] of the threat model. Three methods:

- "ibp": interval bound propagation (Gowal et al. 2018, "On the Effectiveness of Interval
  Bound Propagation for Training Verifiably Robust Models", arXiv:1810.12715). Intervals
  pushed layer by layer in centre/radius form. For L2, the first mixing layer's bounds are
  W x + b -/+ eps * ||W_i||_2, intersected with the interval bounds of the box
  [max(x - eps, lo), min(x + eps, hi)], which every point of the set also satisfies.
  Margins use the paper's elision of the last layer: the specification matrix C is folded
  into the trailing affine layers before the interval is applied. Cost: about two forward
  passes.
- "crown": CROWN (Zhang, Weng, Chen, Hsieh & Daniel 2018, "Efficient Neural Network
  Robustness Certification with General Activation Functions", arXiv:1811.00866): linear
  bounds propagated backwards from a specification through linear relaxations of each ReLU
  (upper line through (l, 0) and (u, u); lower line of slope 1 if u > -l else 0, CROWN's
  adaptive choice), concretised over the input set with the dual norm (Linf ball: ||a||_1
  through the box; L2: ||a||_2, and the box bound where tighter). The pre-activation bounds
  of every ReLU are themselves computed by CROWN. Cost: for each ReLU layer of width m, a
  backward pass of 2m rows through the layers before it (quadratic in depth), chunked to
  bound memory; the final pass has one row per class. Rows on a convolution reached from
  the input through convolutions and activations only are kept as patches of their
  receptive fields (`adversa.certify.patches`), not as dense tensors the size of each layer.
- "alpha-crown": CROWN with the lower slopes of the final pass's ReLU relaxations optimised
  per neuron and per output by projected gradient ascent (Xu et al. 2021, arXiv:2011.13824;
  `adversa.certify.alpha`); tighter than or equal to CROWN. Cost: CROWN plus 20 passes.
- "crown-ibp": CROWN's final backward pass on IBP's pre-activation bounds (Zhang et al. 2020,
  "Towards Stable and Efficient Training of Verifiably Robust Neural Networks",
  arXiv:1906.06316). Cost: IBP plus one backward pass of one row per class.

Nodes that are affine in the input through at most one mixing layer (the first Linear or
Conv2d, with any Flatten/BatchNorm around it) get exact interval bounds, which is what CROWN
computes there too. Bounds are those of the network in eval mode (BatchNorm with running
statistics, Dropout off) and are differentiable with respect to the weights.

Example::

    lower, upper = bounds(model, x, ThreatModel(norm="linf", eps=0.1), method="crown")
    ok = verified(model, x, y, ThreatModel(norm="l2", eps=0.5), method="crown")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from adversa.certify import patches
from adversa.certify.alpha import optimise_slopes
from adversa.certify.graph import build_graph
from adversa.certify.ops import CURVED, ELEMENTWISE, Add, Affine, Cat, Graph, MaxPool, Relu
from adversa.certify.relax import interval, maxpool_backward, relax
from adversa.checks import as_tensor, check_batch
from adversa.errors import BadInput
from adversa.model import Model
from adversa.threat import ThreatModel

Method = Literal["ibp", "crown", "crown-ibp", "alpha-crown"]
METHODS: tuple[str, ...] = ("ibp", "crown", "crown-ibp", "alpha-crown")
_BUDGET = 2**24  # elements per (points x rows x features) tensor in a chunked backward pass

Interval = tuple[Tensor, Tensor]


class _Propagation:
    """One bound computation: the graph, the batch, its input set and the IBP bounds."""

    def __init__(self, graph: Graph, x: Tensor, threat: ThreatModel) -> None:
        self.graph, self.x, self.threat = graph, x, threat
        lo, hi = threat.bounds
        eps = threat.eps
        self.box = ((x - eps).clamp_min(lo), (x + eps).clamp_max(hi))
        self.ball = threat.norm == "l2" and math.isfinite(eps)
        self.ibp = self._ibp()
        self.bounded = self._bounded()

    def _bounded(self) -> set[int]:
        """Nodes whose bound values (not only their signs) a relaxation may read: the inputs
        of max pooling, S-shaped ops and GELU and, through `crown_bounds`' elementwise rules,
        what those are computed from."""
        nodes, out = self.graph.nodes, set()
        for k in range(len(nodes) - 1, 0, -1):
            op = nodes[k].op
            if isinstance(op, (*CURVED, MaxPool)):
                out.update(nodes[k].inputs)
            elementwise = isinstance(op, (*ELEMENTWISE, MaxPool, Cat))
            if k in out and (elementwise or (isinstance(op, Affine) and not op.mixing)):
                out.update(nodes[k].inputs)
        return out

    def _ibp(self) -> list[Interval]:
        nodes, eps = self.graph.nodes, self.threat.eps
        out: list[Interval] = [self.box]
        centre = {0: self.x}  # l2 only: exact values and squared row sums of input-affine nodes
        sq = {0: torch.ones_like(self.x[:1])}
        for k, node in enumerate(nodes[1:], 1):
            ins = [out[i] for i in node.inputs]
            op = node.op
            if isinstance(op, (*ELEMENTWISE, MaxPool)):  # exact
                out.append(interval(op, *ins[0]))
            elif isinstance(op, Add):
                out.append(_add_interval(op.alpha, *ins))
            elif isinstance(op, Cat):
                out.append((op.forward(*(i[0] for i in ins)), op.forward(*(i[1] for i in ins))))
            else:
                lower, upper = _affine_interval(op, *ins[0])
                if self.ball and self.graph.input_affine[k]:
                    src = node.inputs[0]
                    centre[k], sq[k] = op.forward(centre[src]), op.fn(sq[src], "sq")
                    radius = eps * sq[k].clamp_min(0).sqrt()
                    lower = torch.maximum(lower, centre[k] - radius)
                    upper = torch.minimum(upper, centre[k] + radius)
                out.append((lower, upper))
        return out

    def concretize(self, a: Tensor) -> Tensor:
        """min of a . x0 over the input set, per row: (B, S, *input) -> (B, S)."""
        value = _interval_min(a, *self.box)
        if self.ball and self.threat.eps > 0:
            flat = a.flatten(2)
            ball = (flat @ self.x.flatten(1).unsqueeze(2)).squeeze(2)
            value = torch.maximum(value, ball - self.threat.eps * flat.norm(dim=2))
        return value

    def backward(
        self,
        start: int,
        a: Tensor,
        pre: dict[int, Interval],
        slopes: dict[int, Tensor] | None = None,
    ) -> Tensor:
        """Lower bound of a . z_start over the input set (B, S); `a` is (B, S, *shape) or
        (1, S, *shape) for rows shared by the batch, `pre` holds the bounds of every ReLU
        input upstream of `start`. `slopes[k]` (B, S, *shape), if given, replaces the lower
        slopes of ReLU node k per row (alpha-CROWN; they must lie between its slope and 1)."""
        nodes = self.graph.nodes
        pending = {start: a}
        total = torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)
        for k in range(start, 0, -1):
            a = pending.pop(k, None)
            if a is None:
                continue
            node, op = nodes[k], nodes[k].op
            if isinstance(op, ELEMENTWISE):
                lo_slope, lo_bias, up_slope, up_bias = relax(op, *pre[node.inputs[0]])
                lo_rows = lo_slope.unsqueeze(1) if slopes is None or k not in slopes else slopes[k]
                neg = a.clamp_max(0)
                pos = a - neg
                total = total + _rows_dot(neg, up_bias)
                if lo_bias is not None:
                    total = total + _rows_dot(pos, lo_bias)
                rows = torch.addcmul(neg * up_slope.unsqueeze(1), pos, lo_rows)
                _push(pending, node.inputs[0], rows)
            elif isinstance(op, MaxPool):
                a_in, bias = maxpool_backward(op, a, *pre[node.inputs[0]])
                total = total + bias
                _push(pending, node.inputs[0], a_in)
            elif isinstance(op, Add):
                _push(pending, node.inputs[0], a)
                _push(pending, node.inputs[1], a if op.alpha == 1 else op.alpha * a)
            elif isinstance(op, Cat):
                parts = a.split(op.sizes, op.dim + 2)
                for src, part in zip(node.inputs, parts, strict=True):
                    _push(pending, src, part)
            else:
                bias = op.bias_term(a)
                total = total if bias is None else total + bias
                _push(pending, node.inputs[0], op.transpose(a))
        return total + self.concretize(pending[0])

    def crown_bounds(self, k: int, known: dict[int, Interval]) -> Interval:
        """CROWN bounds of node k (memoised in `known`): exact intervals where the node is
        affine in the input or an elementwise map of a bounded node, else a chunked backward
        pass of +I and -I rows."""
        if k in known:
            return known[k]
        node = self.graph.nodes[k]
        if self.graph.input_affine[k]:
            result = self.ibp[k]
        elif isinstance(node.op, Affine) and not node.op.mixing:
            result = _affine_interval(node.op, *self.crown_bounds(node.inputs[0], known))
        elif isinstance(node.op, (*ELEMENTWISE, MaxPool)):
            result = interval(node.op, *self.crown_bounds(node.inputs[0], known))
        elif isinstance(node.op, Cat):
            parts = [self.crown_bounds(i, known) for i in node.inputs]
            result = (
                node.op.forward(*(p[0] for p in parts)),
                node.op.forward(*(p[1] for p in parts)),
            )
        else:
            result = self._identity_pass(k, known)
        known[k] = result
        return result

    def _identity_pass(self, k: int, known: dict[int, Interval]) -> Interval:
        """CROWN bounds of node k by backward passes of +I and -I rows, in chunks. When every
        op reading node k is a (leaky) ReLU, whose relaxation of a neuron that IBP already
        proves stable is the same whatever its bounds, and no relaxation reads its bounds
        through them (`bounded`), only IBP-unstable neurons (in any point of the batch) get
        rows; the others keep IBP's bounds."""
        shape = self.graph.nodes[k].shape
        m, b = math.prod(shape), self.x.shape[0]
        lower, upper = (v.flatten(1) for v in self.ibp[k])
        todo = torch.arange(m, device=self.x.device)
        readers = [n.op for n in self.graph.nodes if k in n.inputs]
        if k not in self.bounded and readers and all(isinstance(op, Relu) for op in readers):
            todo = torch.nonzero(((lower < 0) & (upper > 0)).any(0)).squeeze(1)
            lower, upper = lower.clone(), upper.clone()
        convs = patches.chain(self.graph, k)
        rows_of = todo
        if convs is None:
            width = max(math.prod(n.shape) for n in self.graph.nodes[: k + 1])
        else:  # whole channels share their patches' relaxations: all rows beat most rows
            width = patches.row_size(self.graph, convs)
            rows_of = todo if 2 * len(todo) < m else torch.arange(m, device=self.x.device)
        rows = max(1, _BUDGET // (2 * b * width))
        if len(rows_of) == m and convs is not None:
            rows = max(m // shape[0], rows // (m // shape[0]) * (m // shape[0]))
        lowers, uppers = [], []
        for first in range(0, len(rows_of), rows):
            idx = rows_of[first : first + rows]
            if convs is not None:  # rows kept as patches of their receptive fields
                out = patches.lower_bounds(self, convs, idx, known).expand(b, -1)
            else:
                eye = torch.zeros(len(idx), m, dtype=self.x.dtype, device=self.x.device)
                eye[torch.arange(len(idx)), idx] = 1
                # No batch dimension until the first ReLU: the affine layers above it
                # transpose the rows once for the whole batch.
                spec = torch.cat([eye, -eye]).view(1, 2 * len(idx), *shape)
                out = self.backward(k, spec, known).expand(b, -1)
            lowers.append(out[:, : len(idx)])
            uppers.append(-out[:, len(idx) :])
        if len(todo) == m:
            return torch.cat(lowers, 1).view(b, *shape), torch.cat(uppers, 1).view(b, *shape)
        if lowers:
            picked = todo if len(rows_of) == m else slice(None)
            lower[:, todo] = torch.cat(lowers, 1)[:, picked]
            upper[:, todo] = torch.cat(uppers, 1)[:, picked]
        return lower.view(b, *shape), upper.view(b, *shape)

    def pre_activation(self, method: str) -> dict[int, Interval]:
        """Bounds of every nonlinear op's input: IBP's ("crown-ibp") or CROWN's ("crown")."""
        known: dict[int, Interval] = {}
        for node in self.graph.nodes:
            if isinstance(node.op, (*ELEMENTWISE, MaxPool)):
                src = node.inputs[0]
                known[src] = (
                    self.ibp[src] if method == "crown-ibp" else self.crown_bounds(src, known)
                )
        return known

    def spec_lower(self, spec: Tensor, method: str) -> Tensor:
        """Lower bounds of spec . logits (B, S) for spec (B, S, classes)."""
        last = len(self.graph.nodes) - 1
        if method == "alpha-crown":
            return optimise_slopes(self, last, spec, self.pre_activation("crown"))
        if method != "ibp":
            return self.backward(last, spec, self.pre_activation(method))
        k, a = last, spec  # Gowal et al.'s elision: fold spec into the trailing affine layers
        total = torch.zeros(spec.shape[:2], dtype=spec.dtype, device=spec.device)
        while k > 0 and isinstance(self.graph.nodes[k].op, Affine):
            op = self.graph.nodes[k].op
            bias = op.bias_term(a)
            total = total if bias is None else total + bias
            a, k = op.transpose(a), self.graph.nodes[k].inputs[0]
        return total + (self.concretize(a) if k == 0 else _interval_min(a, *self.ibp[k]))


def _rows_dot(a: Tensor, v: Tensor) -> Tensor:
    """sum over features of a (B or 1, S, *shape) times v (B, *shape): (B, S), one product."""
    return (a.flatten(2) @ v.flatten(1).unsqueeze(2)).squeeze(2)


def _push(pending: dict[int, Tensor], k: int, a: Tensor) -> None:
    pending[k] = a if k not in pending else pending[k] + a


def _affine_interval(op: Affine, lower: Tensor, upper: Tensor) -> Interval:
    mid = op.forward((upper + lower) / 2)
    rad = op.fn((upper - lower) / 2, "abs")
    return mid - rad, mid + rad


def _interval_min(a: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """min of a . z over lower <= z <= upper, per row: (B, S, *shape) -> (B, S)."""
    flat = a.flatten(2)
    mid = ((upper + lower) / 2).flatten(1).unsqueeze(2)
    rad = ((upper - lower) / 2).flatten(1).unsqueeze(2)
    return (flat @ mid - flat.abs() @ rad).squeeze(2)


def _add_interval(alpha: float, a: Interval, b: Interval) -> Interval:
    """Bounds of a + alpha * b."""
    if alpha == 1:
        return a[0] + b[0], a[1] + b[1]
    low, high = (b[0], b[1]) if alpha >= 0 else (b[1], b[0])
    return a[0] + alpha * low, a[1] + alpha * high


def _prepare(
    model: Model | nn.Module, x: Tensor, y: Tensor | None, threat: ThreatModel, method: str
) -> tuple[_Propagation, Tensor | None]:
    if method not in METHODS:
        raise BadInput(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not isinstance(threat, ThreatModel):
        raise BadInput(f"threat must be a ThreatModel, got {type(threat).__name__}")
    if threat.norm not in ("linf", "l2"):
        raise BadInput(f"bounds support the linf and l2 norms, not {threat.norm!r}")
    module = model.module if isinstance(model, Model) else model
    if not isinstance(module, nn.Module):
        raise BadInput(f"model must be an adversa Model or a torch.nn.Module, got {type(model)}")
    ref = next(module.parameters(), None)
    x = as_tensor(x, "x")
    if ref is not None:
        x = x.to(device=ref.device, dtype=ref.dtype)
    labels = torch.zeros(x.shape[0], dtype=torch.long) if y is None else as_tensor(y, "y")
    check_batch(x, labels, threat, None)
    graph = build_graph(module, x)
    if y is not None:
        classes = graph.nodes[-1].shape
        if len(classes) != 1:
            raise BadInput(f"the model must return logits (N, classes), got shape {classes}")
        check_batch(x, labels, threat, classes[0])
        y = labels.long().to(x.device)
    return _Propagation(graph, x, threat), y


def bounds(
    model: Model | nn.Module, x: Tensor, threat: ThreatModel, method: Method = "crown"
) -> Interval:
    """Elementwise lower and upper bounds (B, classes) on the logits over the input set."""
    prop, _ = _prepare(model, x, None, threat, method)
    if method == "ibp":
        return prop.ibp[-1]
    out_shape = prop.graph.nodes[-1].shape
    k = math.prod(out_shape)
    eye = torch.eye(k, dtype=prop.x.dtype, device=prop.x.device)
    spec = torch.cat([eye, -eye]).view(1, 2 * k, *out_shape).expand(prop.x.shape[0], -1, *out_shape)
    out = prop.spec_lower(spec, method)
    return out[:, :k].view(-1, *out_shape), -out[:, k:].view(-1, *out_shape)


def margin_spec(y: Tensor, classes: int, dtype: torch.dtype) -> Tensor:
    """The specification C (B, classes, classes): row j is e_y - e_j (row y is zero)."""
    eye = torch.eye(classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def margins(
    model: Model | nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    methods: Sequence[Method] = ("ibp",),
) -> dict[str, Tensor]:
    """`margin_bounds` for several methods sharing one IBP pass (certified training uses
    "ibp" and "crown-ibp" together)."""
    if not methods:
        raise BadInput("methods must name at least one method")
    for method in methods[1:]:
        if method not in METHODS:
            raise BadInput(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    prop, y = _prepare(model, x, y, threat, methods[0])
    spec = margin_spec(y, prop.graph.nodes[-1].shape[0], prop.x.dtype)
    return {m: prop.spec_lower(spec, m) for m in methods}


def margin_bounds(
    model: Model | nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, method: Method = "crown"
) -> Tensor:
    """Lower bounds (B, classes) of z_y - z_j over the input set, with 0 at j = y, computed
    with the specification matrix C (much tighter under CROWN than subtracting logit bounds)."""
    return margins(model, x, y, threat, (method,))[method]


def verified(
    model: Model | nn.Module, x: Tensor, y: Tensor, threat: ThreatModel, method: Method = "crown"
) -> Tensor:
    """bool (B,): the lower bound of z_y - z_j is positive for every j != y, so no point of
    the input set is classified as anything but y."""
    with torch.no_grad():
        margin = margin_bounds(model, x, y, threat, method)
    y = as_tensor(y, "y").long().to(margin.device)
    margin = margin.scatter(1, y[:, None], math.inf)
    return margin.min(1).values > 0
