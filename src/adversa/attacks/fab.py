"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, 2020, "Minimally distorted Adversarial
Examples with a Fast Adaptive Boundary Attack", ICML, arXiv:1907.02044), Linf, L2 and L1.

A minimum-norm attack. At the current iterate `x1` the classifier is linearised: for each
class k other than the label y, `f_k = Z_k - Z_y` and its gradient `w_k` define the hyperplane
`f_k + w_k . (z - x1) = 0`; the closest one, the k minimising `|f_k| / ||w_k||_q` (q the dual
norm), is kept. Both `x1` and the original point `x0` are projected onto that hyperplane
intersected with the box (`adversa.attacks.fab_projection`), giving steps `d1` and `d0`, and

    alpha = min(||d1|| / (||d1|| + ||d0||), alpha_max)
    x1 <- clip((1 - alpha) (x1 + eta d1) + alpha (x0 + eta d0))

the step biased toward `x0` that keeps FAB close to the original point. Once `x1` fools the
model, it is recorded if closer than the best so far and pulled back,
`x1 <- x0 + beta (x1 - x0)`. Restart 0 starts at `x0`; further restarts run as one batch from
random points at distance `min(eps, best distance) / 2` (with no adversarial yet and an eps
that holds the whole box: a quarter of the box's diameter). At the end, the final search of
the authors' code runs `final_search_steps` steps of a linear-interpolation line search
between `x0` (right) and the best adversarial (wrong), which moves the latter along the
segment toward the boundary, so distances only shrink.

Registered as "fab" (the `candidates` classes the clean logits rank highest, label included:
all K - 1 other classes on a 10-class problem, 9 of 1,000 on ImageNet, so the cost and the
memory grow with `candidates`, never with K) and "fab-t" (the targeted version of
AutoAttack, Croce & Hein 2020, arXiv:2003.01690: the linearisation uses only `Z_t - Z_y` for
a target t, tried for the `n_target_classes` classes the clean logits rank highest after y,
one target after another). Both are untargeted from the user's side: `threat.targeted` must
be False and success is misclassification.

Which points each run (restart, target) attacks: with a finite eps, as in AutoAttack, only
the points not yet fooled within eps; with an eps-ball that holds the whole box (`eps=inf`,
or Linf eps >= the box width), every point, so that the runs keep lowering the distance.

Per sample, the smallest-distance adversarial found is returned (a sample never fooled comes
back unchanged); the harness projects it onto the eps-ball, so under a finite eps a point
fooled only beyond eps is shrunk and usually fails.

Cost per step and attacked row: two forward passes (the linearisation and the check after the
step) and min(candidates, K) - 1 backward passes ("fab") or one ("fab-t"), for `steps` steps
per restart (and
per target class for "fab-t"); plus one clean forward pass, `final_search_steps + 2` forward
passes for the final search and the harness's verification.

Example::

    threat = ThreatModel(norm="l2", eps=math.inf)              # unbounded: report distortion
    result = get_attack("fab", threat, steps=100)(model, x, y)
    result.distance                                              # (B,) L2 distances
    get_attack("fab-t", ThreatModel(norm="linf", eps=8 / 255))(model, x, y)
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.attacks.fab_projection import project_onto_hyperplane
from adversa.errors import require
from adversa.model import Model

_DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf}


@register_attack("fab")
@dataclasses.dataclass(frozen=True, kw_only=True)
class FAB(AttackBase):
    steps: int = 100  # linearisation steps per restart (and per target class, fab-t)
    restarts: int = 1  # restart 0 from x0; the others from random points, as one batch
    alpha_max: float = 0.1  # the largest weight of the step from x0
    eta: float = 1.05  # overshoot of the projection steps
    beta: float = 0.9  # backward step toward x0 after each success
    final_search_steps: int = 3  # line-search steps between x0 and the best adversarial
    candidates: int = 10  # "fab": classes linearised, the top ones by clean logit, label included

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            not self.threat.targeted,
            f"{self.name} is untargeted; threat.targeted must be False, got True",
        )
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}")
        require(0 <= self.alpha_max <= 1, f"alpha_max must be in [0, 1], got {self.alpha_max}")
        require(self.eta >= 1, f"eta must be >= 1, got {self.eta}")
        require(0 < self.beta < 1, f"beta must be in (0, 1), got {self.beta}")
        require(self.candidates >= 2, f"candidates must be >= 2, got {self.candidates}")
        require(
            self.final_search_steps >= 0,
            f"final_search_steps must be >= 0, got {self.final_search_steps}",
        )

    def _targets(self, logits: Tensor, y: Tensor) -> list[Tensor]:
        """The classes linearised per run, (B, m) each: one run over the `candidates - 1`
        classes the clean logits rank highest after the label (untargeted FAB)."""
        k = min(self.candidates, logits.shape[1]) - 1
        return [logits.scatter(1, y[:, None], -math.inf).topk(k, dim=1).indices]

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        threat = self.threat
        flat = x.flatten(1)
        with torch.no_grad():
            logits = model(x)
        attacked = logits.argmax(1) == y
        unbounded = threat.eps >= threat.max_eps(flat.shape[1])  # the ball holds the box
        best = flat.clone()
        best_dist = torch.full_like(flat[:, 0], math.inf)
        for target in self._targets(logits, y):
            for copies, random in ((1, False), (self.restarts - 1, True)):
                # Unbounded, every run refines every point; else only the ones still robust.
                todo = attacked if unbounded else attacked & (best_dist > threat.eps)
                idx = torch.nonzero(todo).squeeze(1)
                if copies == 0 or idx.numel() == 0:
                    continue
                rows = idx.repeat(copies)
                x0 = flat[rows]
                start = self._random_start(x0, best_dist[rows], gen) if random else x0
                x_run, d_run = self._run(model, x.shape[1:], x0, y[rows], target[rows], start)
                d_run, pick = d_run.view(copies, -1).min(0)
                cols = torch.arange(idx.numel(), device=x.device)
                x_run = x_run.view(copies, idx.numel(), -1)[pick, cols]
                better = d_run < best_dist[idx]
                best[idx[better]] = x_run[better]
                best_dist[idx[better]] = d_run[better]
        found = torch.nonzero(best_dist.isfinite()).squeeze(1)
        if found.numel() and self.final_search_steps:
            best[found] = self._final_search(model, x.shape[1:], flat[found], y[found], best[found])
        return best.reshape_as(x)

    def _run(
        self,
        model: Model,
        shape: torch.Size,
        x0: Tensor,
        y: Tensor,
        classes: Tensor,
        x1: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One FAB run per row; returns the closest adversarial per row and its distance (inf
        where none was found)."""
        threat, n = self.threat, x0.shape[0]
        lo, hi = threat.bounds
        best = x0.clone()
        best_dist = torch.full_like(x0[:, 0], math.inf)
        for _ in range(self.steps):
            f, w = self._linearise(model, shape, x1, y, classes)
            b = f - (w * x1).sum(1)
            steps = project_onto_hyperplane(
                torch.cat([x1, x0]), torch.cat([w, w]), torch.cat([b, b]), threat.norm, (lo, hi)
            )
            size = torch.linalg.vector_norm(steps, ord=threat.ord, dim=1).clamp_min(1e-8)
            alpha = (size[:n] / (size[:n] + size[n:])).clamp(0, self.alpha_max)[:, None]
            d1, d0 = steps[:n], steps[n:]
            x1 = ((1 - alpha) * (x1 + self.eta * d1) + alpha * (x0 + self.eta * d0)).clamp(lo, hi)
            with torch.no_grad():
                fooled = model(x1.reshape(-1, *shape)).argmax(1) != y
            dist = torch.linalg.vector_norm(x1 - x0, ord=threat.ord, dim=1)
            better = fooled & (dist < best_dist)
            best = torch.where(better[:, None], x1, best)
            best_dist = torch.where(better, dist, best_dist)
            x1 = torch.where(fooled[:, None], x0 + self.beta * (x1 - x0), x1)
        return best, best_dist

    def _linearise(
        self, model: Model, shape: torch.Size, x1: Tensor, y: Tensor, classes: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`f = Z_k - Z_y` (n,) at `x1` and its gradient (n, d) for the closest boundary k
        among `classes` (n, m): one backward pass per column."""
        x_in = x1.detach().reshape(-1, *shape).requires_grad_(True)
        with torch.enable_grad():
            logits = model(x_in)
            f = logits.gather(1, classes) - logits.gather(1, y[:, None])
            last = f.shape[1] - 1
            grads = torch.stack(
                [
                    torch.autograd.grad(f[:, j].sum(), x_in, retain_graph=j < last)[0].flatten(1)
                    for j in range(f.shape[1])
                ],
                dim=1,
            )
        f = f.detach()
        dual = torch.linalg.vector_norm(grads, ord=_DUAL[self.threat.norm], dim=2)
        k = (f.abs() / (dual + 1e-12)).argmin(1)
        rows = torch.arange(f.shape[0], device=f.device)
        return f[rows, k], grads[rows, k]

    def _random_start(self, x0: Tensor, best_dist: Tensor, gen: torch.Generator) -> Tensor:
        """x0 plus a random direction of norm min(eps, best distance) / 2, clipped to the box."""
        threat = self.threat
        fallback = 0.25 * threat.max_eps(x0.shape[1])
        radius = torch.clamp(best_dist, max=threat.eps)
        radius = torch.where(radius.isfinite(), radius, torch.full_like(radius, fallback))
        if threat.norm == "linf":
            noise = 2 * torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype) - 1
        else:
            noise = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        unit = noise / torch.linalg.vector_norm(noise, ord=threat.ord, dim=1, keepdim=True)
        return threat.clip(x0 + 0.5 * radius[:, None] * unit)

    def _final_search(
        self, model: Model, shape: torch.Size, x0: Tensor, y: Tensor, adv: Tensor
    ) -> Tensor:
        """Regula falsi on the segment [x0, adv] (the authors' linear approximation search).

        Interpolate where the linearised margin `Z_y - Z_l` (l the adversarial class) reaches
        -0.001 times its value at x0, minus 100 ulps of the logits: a margin that survives the
        rounding of other batch sizes. The right end moves in when the interpolant is still
        classified y, the wrong end otherwise; where the interpolation leaves the segment, the
        step bisects. Returns the wrong end."""
        with torch.no_grad():
            inner, outer = x0, adv
            z_in, z_out = model(inner.reshape(-1, *shape)), model(outer.reshape(-1, *shape))
            z_y = z_in.gather(1, y[:, None])
            margin = z_y - z_in.scatter(1, y[:, None], -math.inf).amax(1, keepdim=True)
            rounding = 100 * torch.finfo(z_in.dtype).eps * z_in.abs().amax(1, keepdim=True)
            slack = 1e-3 * margin + rounding
            for _ in range(self.final_search_steps):
                label = z_out.argmax(1, keepdim=True)
                m_in = z_in.gather(1, y[:, None]) - z_in.gather(1, label)
                m_out = z_out.gather(1, y[:, None]) - z_out.gather(1, label)
                t = (m_in + slack) / (m_in - m_out)
                t = torch.where((t > 0) & (t < 1), t, torch.full_like(t, 0.5))
                mid = inner + t * (outer - inner)
                z_mid = model(mid.reshape(-1, *shape))
                fooled = (z_mid.argmax(1) != y)[:, None]
                inner = torch.where(fooled, inner, mid)
                z_in = torch.where(fooled, z_in, z_mid)
                outer = torch.where(fooled, mid, outer)
                z_out = torch.where(fooled, z_mid, z_out)
        return outer


@register_attack("fab-t")
@dataclasses.dataclass(frozen=True, kw_only=True)
class FABT(FAB):
    n_target_classes: int = 9  # classes tried, by clean logit rank after the label

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.n_target_classes >= 1,
            f"n_target_classes must be >= 1, got {self.n_target_classes}",
        )

    def _targets(self, logits: Tensor, y: Tensor) -> list[Tensor]:
        n = min(self.n_target_classes, logits.shape[1] - 1)
        ranked = logits.scatter(1, y[:, None], -math.inf).topk(n, dim=1).indices
        return [ranked[:, rank : rank + 1] for rank in range(n)]
