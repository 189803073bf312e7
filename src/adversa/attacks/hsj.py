"""HopSkipJump (Chen, Jordan & Wainwright, 2020, "HopSkipJumpAttack: A Query-Efficient
Decision-Based Attack", arXiv:1904.02144), L2 and Linf, decision-based.

A minimum-distance attack that sees only predicted labels. Each sample starts from uniform
noise that the model already gets wrong (up to `init_trials` draws; failing that, the nearest
input of the batch whose clean prediction is adversarial for it), which a binary search pulls
to the decision boundary. Each iteration t then

1. estimates the boundary's normal at the current point from `init_num_evals * sqrt(t)`
   (at most `max_num_evals`) label queries at random points at radius delta (0.1 of the box
   at t = 1, then `sqrt(d) * theta * dist` for L2 and `d * theta * dist` for Linf), with the
   paper's baseline subtraction;
2. steps along it (its sign for Linf) by `dist / sqrt(t)`, halving the step until the point
   is adversarial again (at most `step_trials` tries; the geometric progression);
3. binary-searches back to the boundary between the clean input and that point, to a
   tolerance theta = gamma / d^1.5 (L2) or gamma / d^2 (Linf, relative to the distance),
   a fixed `ceil(log2(1 / theta))` queries.

Batched: all samples still running make their probes in one model call per stage, so the
number of calls does not grow with the batch (the peer implementation that runs one image at
a time needs minutes per image). The probes are uniform across samples (the schedule depends
on t only); memory peaks at about three tensors of `num_evals x batch x input` values.

A sample stops when its next iteration could exceed `max_queries` (the clean check and the
start search included), after `steps` iterations, or, for a finite eps, as soon as it is
fooled within eps. Returned per sample: the closest adversarial point found (it lies within
eps if any found does); the harness projects it onto the eps-ball and re-verifies. Given a
full `Model`, the attack queries it through a labels-only view: no backward pass.

Cost per attacked sample: at most `max_queries` label queries, plus the harness's final
verification. Defaults: 40 iterations and at most 5000 queries, which in practice stops
a sample after 15-17 iterations; on one CPU thread about 6 s for 400 8x8 digits (MLP) and
0.45 s per 28x28 MNIST image (small CNN).

Example::

    threat = ThreatModel(norm="l2", eps=math.inf)         # unbounded: report distortion
    result = get_attack("hsj", threat, max_queries=2000)(model.labels_only(), x, y)
    result.distance                                         # (B,) L2 distances
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.errors import require
from adversa.losses import is_adversarial
from adversa.model import Access, Model

Oracle = Callable[[Tensor, Tensor], Tensor]  # (points, labels) -> adversarial? (B,) bool


@register_attack("hsj", aliases=("hopskipjump",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class HSJ(AttackBase):
    access = Access.LABELS
    norms = ("l2", "linf")

    steps: int = 40  # iterations: gradient estimate, step-size search, binary search
    max_queries: int = 5000  # per sample, the clean check and the start search included
    init_num_evals: int = 100  # boundary probes at iteration t: init_num_evals * sqrt(t)
    max_num_evals: int = 10000  # cap on the boundary probes per iteration
    gamma: float = 1.0  # binary-search tolerance: gamma / d^1.5 (L2), gamma / d^2 (Linf)
    init_trials: int = 10  # uniform-noise draws per sample to find an adversarial start
    step_trials: int = 10  # step-size proposals per iteration (the step halves each time)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        require(self.init_num_evals >= 1, f"init_num_evals must be >= 1, got {self.init_num_evals}")
        require(
            self.max_num_evals >= self.init_num_evals,
            f"max_num_evals must be >= init_num_evals ({self.init_num_evals}), "
            f"got {self.max_num_evals}",
        )
        require(self.gamma > 0, f"gamma must be > 0, got {self.gamma}")
        require(self.init_trials >= 1, f"init_trials must be >= 1, got {self.init_trials}")
        require(self.step_trials >= 1, f"step_trials must be >= 1, got {self.step_trials}")
        require(
            self.max_queries > self.init_trials,
            f"max_queries must be > init_trials ({self.init_trials}), got {self.max_queries}",
        )

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        threat = self.threat
        lo, hi = threat.bounds
        oracle = model  # the harness passes a labels-only view

        def adversarial(z: Tensor, labels: Tensor) -> Tensor:
            return is_adversarial(oracle(z), labels, threat.targeted)

        clean = oracle(x)
        clean_pred = clean.argmax(1)
        idx = torch.nonzero(~is_adversarial(clean, y, threat.targeted)).squeeze(1)
        if idx.numel() == 0:
            return x
        x0, y0 = x[idx], y[idx]
        used = torch.ones(idx.numel(), dtype=torch.long, device=x.device)  # the clean check

        cur, found = self._start(x, x0, y0, clean_pred, used, adversarial, gen)
        d = x[0].numel()
        theta = self.gamma / (d**1.5 if threat.norm == "l2" else d**2)
        search_steps = max(1, math.ceil(math.log2(1.0 / theta)))
        alive = found & (used + search_steps <= self.max_queries)
        rows = torch.nonzero(alive).squeeze(1)
        cur[rows] = self._boundary(x0[rows], cur[rows], y0[rows], search_steps, adversarial)
        used[rows] += search_steps
        dist = torch.where(found, threat.distance(cur, x0), torch.inf)
        best, best_dist = cur.clone(), dist.clone()

        for t in range(1, self.steps + 1):
            num_evals = min(int(self.init_num_evals * math.sqrt(t)), self.max_num_evals)
            alive &= used + num_evals + self.step_trials + search_steps <= self.max_queries
            if math.isfinite(threat.eps):
                alive &= best_dist > threat.eps
            rows = torch.nonzero(alive).squeeze(1)
            if rows.numel() == 0:
                break
            xa, xc, labels, dd = x0[rows], cur[rows], y0[rows], dist[rows]
            if t == 1:
                delta = torch.full_like(dd, 0.1 * (hi - lo))
            else:
                delta = (math.sqrt(d) if threat.norm == "l2" else d) * theta * dd
            grad = self._gradient(xc, labels, delta, num_evals, adversarial, gen)
            update = grad if threat.norm == "l2" else grad.sign()
            moved, tries = self._step(xc, labels, update, dd / math.sqrt(t), adversarial)
            new = self._boundary(xa, moved, labels, search_steps, adversarial)
            used[rows] += num_evals + tries + search_steps
            cur[rows] = new
            dist[rows] = threat.distance(new, xa)
            better = torch.zeros_like(alive)
            better[rows] = dist[rows] < best_dist[rows]
            best = torch.where(_expand(better, x.dim()), cur, best)
            best_dist = torch.where(better, dist, best_dist)

        out = x.clone()
        out[idx] = best
        return out

    def _start(
        self,
        x: Tensor,
        x0: Tensor,
        y0: Tensor,
        clean_pred: Tensor,
        used: Tensor,
        adversarial: Oracle,
        gen: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        """Adversarial starting points: uniform noise, else the nearest batch input whose
        clean prediction is adversarial for the sample. Returns (points, found)."""
        lo, hi = self.threat.bounds
        start = x0.clone()
        found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        for _ in range(self.init_trials):
            miss = torch.nonzero(~found).squeeze(1)
            if miss.numel() == 0:
                break
            noise = lo + (hi - lo) * torch.rand(
                x0[miss].shape, generator=gen, device=x0.device, dtype=x0.dtype
            )
            ok = adversarial(noise, y0[miss])
            used[miss] += 1
            start[miss[ok]] = noise[ok]
            found[miss[ok]] = True
        miss = torch.nonzero(~found).squeeze(1)
        if miss.numel():
            labels = y0[miss, None]
            fits = clean_pred[None, :] == labels if self.threat.targeted else clean_pred != labels
            gaps = torch.cdist(x0[miss].flatten(1), x.flatten(1), p=self.threat.ord)
            nearest_gap, nearest = gaps.masked_fill(~fits, torch.inf).min(1)
            has = torch.isfinite(nearest_gap)
            start[miss[has]] = x[nearest[has]]
            found[miss[has]] = True
        return start, found

    def _boundary(
        self, x0: Tensor, x_adv: Tensor, labels: Tensor, steps: int, adversarial: Oracle
    ) -> Tensor:
        """Binary search on the segment (L2) or the Linf box (Linf) between x0 and the
        adversarial x_adv; returns the adversarial end of the final bracket."""
        if self.threat.norm == "l2":
            high = torch.ones(x0.shape[0], device=x0.device, dtype=x0.dtype)

            def point(a: Tensor) -> Tensor:
                return torch.lerp(x0, x_adv, _expand(a, x0.dim()))  # exact at a = 0 and 1
        else:
            high = self.threat.distance(x_adv, x0)

            def point(a: Tensor) -> Tensor:
                a = _expand(a, x0.dim())
                return torch.clamp(x_adv, x0 - a, x0 + a)

        low = torch.zeros_like(high)
        for _ in range(steps):
            mid = (low + high) / 2
            adv = adversarial(point(mid), labels)
            high = torch.where(adv, mid, high)
            low = torch.where(adv, low, mid)
        return point(high)

    def _gradient(
        self,
        xc: Tensor,
        labels: Tensor,
        delta: Tensor,
        num_evals: int,
        adversarial: Oracle,
        gen: torch.Generator,
    ) -> Tensor:
        """Monte-Carlo estimate of the boundary normal at xc (the paper's eq. 9 with baseline
        subtraction), unit L2 norm; all samples' probes go in one model call."""
        lo, hi = self.threat.bounds
        m = xc.shape[0]
        shape = (num_evals, *xc.shape)
        if self.threat.norm == "l2":
            rv = torch.randn(shape, generator=gen, device=xc.device, dtype=xc.dtype)
        else:
            rv = 2 * torch.rand(shape, generator=gen, device=xc.device, dtype=xc.dtype) - 1
        rv = rv / _expand(torch.linalg.vector_norm(rv.flatten(2), dim=2), rv.dim())
        scale = _expand(delta, xc.dim()).unsqueeze(0)
        probes = (xc.unsqueeze(0) + scale * rv).clamp(lo, hi)
        rv = (probes - xc.unsqueeze(0)) / scale
        decisions = adversarial(probes.flatten(0, 1), labels.repeat(num_evals)).view(num_evals, m)
        fval = 2 * decisions.to(xc.dtype) - 1
        mean = fval.mean(0, keepdim=True)
        fval = torch.where(mean.abs() == 1, fval, fval - mean)
        grad = (_expand(fval, rv.dim()) * rv).mean(0)
        norms = torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp_min(1e-12)
        return grad / _expand(norms, grad.dim())

    def _step(
        self, xc: Tensor, labels: Tensor, update: Tensor, step: Tensor, adversarial: Oracle
    ) -> tuple[Tensor, Tensor]:
        """Geometric step-size search: try xc + step * update, halving the step until the
        point is adversarial. Returns the points (xc where every try failed) and the number
        of queries each sample made."""
        lo, hi = self.threat.bounds
        moved = xc.clone()
        tries = torch.zeros(xc.shape[0], dtype=torch.long, device=xc.device)
        pending = torch.arange(xc.shape[0], device=xc.device)
        step = step.clone()
        for _ in range(self.step_trials):
            if pending.numel() == 0:
                break
            proposal = xc[pending] + _expand(step[pending], xc.dim()) * update[pending]
            proposal = proposal.clamp(lo, hi)
            ok = adversarial(proposal, labels[pending])
            tries[pending] += 1
            moved[pending[ok]] = proposal[ok]
            pending = pending[~ok]
            step[pending] /= 2
        return moved, tries


def _expand(v: Tensor, ndim: int) -> Tensor:
    """`v` with trailing singleton dimensions, to broadcast against an ndim-D tensor."""
    return v.view(*v.shape, *[1] * (ndim - v.dim()))
