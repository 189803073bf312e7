"""alpha-CROWN's final pass: the lower slopes of the ReLU relaxations optimised per neuron
and per specification row by projected gradient ascent on the bound (Xu, Zhang, Wang, Wang,
Jana, Lin & Hsieh 2021, "Fast and Complete: Enabling Complete Neural Network Verification
with Rapid and Massively Parallel Incomplete Verifiers", arXiv:2011.13824).

Any lower slope between the ReLU's (LeakyReLU's) negative slope and 1 gives a sound lower
line through 0, so every iterate is a valid bound; starting from CROWN's slopes and keeping
each row's best iterate makes the result tighter than or equal to CROWN's by construction.
Intermediate bounds are CROWN's (the paper also optimises those; we do not). Cost: CROWN plus
`STEPS` backward passes with gradients.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from adversa.certify.ops import Graph, Relu
from adversa.certify.relax import relax

STEPS = 20  # projected Adam steps on the slopes
LR = 0.1

Interval = tuple[Tensor, Tensor]


class _Backward(Protocol):
    graph: Graph

    def backward(
        self,
        start: int,
        a: Tensor,
        pre: dict[int, Interval],
        slopes: dict[int, Tensor] | None = None,
    ) -> Tensor: ...


def optimise_slopes(prop: _Backward, last: int, spec: Tensor, pre: dict[int, Interval]) -> Tensor:
    """Lower bounds (B, S) of spec . z_last, at least CROWN's (not differentiable with
    respect to the weights)."""
    pre = {k: (lower.detach(), upper.detach()) for k, (lower, upper) in pre.items()}
    with torch.no_grad():
        best = prop.backward(last, spec, pre)
    slopes, starts, floor, unstable = {}, {}, {}, {}
    rows = spec.shape[:2]
    for k, node in enumerate(prop.graph.nodes):
        if isinstance(node.op, Relu) and k <= last:
            lower, upper = (v.detach() for v in pre[node.inputs[0]])
            starts[k] = relax(node.op, lower, upper)[0].unsqueeze(1)
            slopes[k] = starts[k].expand(*rows, *node.shape).clone().requires_grad_(True)
            floor[k] = node.op.slope
            unstable[k] = ((lower < 0) & (upper > 0)).unsqueeze(1)
    if not slopes:
        return best

    def sound() -> dict[int, Tensor]:  # a stable neuron keeps its exact slope
        return {k: torch.where(unstable[k], v, starts[k]) for k, v in slopes.items()}

    opt = torch.optim.Adam(slopes.values(), lr=LR)
    with torch.enable_grad():
        for _ in range(STEPS):
            value = prop.backward(last, spec, pre, sound())
            best = torch.maximum(best, value.detach())
            opt.zero_grad()
            (-value.sum()).backward(inputs=list(slopes.values()))
            opt.step()
            with torch.no_grad():
                for k, v in slopes.items():
                    v.clamp_(floor[k], 1.0)
        with torch.no_grad():
            best = torch.maximum(best, prop.backward(last, spec, pre, sound()))
    return best
