"""LowProFool (Ballet, Renard, Aigrain, Laugel, Frossard & Detyniecki, 2019, "Imperceptible
Adversarial Attacks on Tabular Data", NeurIPS workshop, arXiv:1911.03274), batched.

On tabular data a change is perceptible when it touches a feature the expert looks at. The
attack therefore minimises, by gradient descent on the perturbation r,

    CE(f(x + r), t) + lam * || v * r ||_2

where t is the class to reach (the best other class at the clean point, i.e. the flipped
class for binary tasks; the target when the threat is targeted) and v the per-feature
importance: |Pearson correlation| of the feature with the label (for several classes, the
largest over the one-vs-rest indicators), normalised to sum 1 (`feature_importance`). After
every step the point is projected by the threat model, so the eps budget, the box and every
constraint of a `ConstrainedThreat` hold. Per sample the adversarial iterate with the
smallest weighted norm ||v * r||_2 is kept; a sample that never crosses the boundary returns
its last iterate (the harness re-verifies success).

With `importance=None` the importance is estimated from the attacked batch itself (its
inputs and labels; uniform when the batch holds one class). The paper estimates it on the
training data: pass `importance=tuple(feature_importance(train.x, train.y).tolist())`.
The step size and `lam` defaults are ours, tuned on inputs scaled to [0, 1].

Cost per attacked sample: `steps` forward and backward passes, plus two forward passes (the
start and the last iterate), plus the harness's final check. No early exit: later iterates
may find a smaller weighted norm.

Example::

    v = tuple(feature_importance(train.x, train.y).tolist())
    result = get_attack("lowprofool", ThreatModel(norm="l2", eps=1.0), importance=v)(model, x, y)
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.errors import BadInput, ShapeError, require
from adversa.losses import is_adversarial
from adversa.model import Model


def feature_importance(x: Tensor, y: Tensor) -> Tensor:
    """Per-feature importance (D,) of flat inputs x (N, D) for labels y (N,): |Pearson
    correlation| with the label indicator, the largest over classes, normalised to sum 1.
    Constant features get 0; if every feature does, the importance is uniform. Cost O(N*D*C)."""
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ShapeError(f"x must be (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    xd = x.double()
    onehot = F.one_hot(y.long(), int(y.max()) + 1).double()  # (N, C)
    xc = xd - xd.mean(0)
    yc = onehot - onehot.mean(0)
    cov = xc.T @ yc  # (D, C)
    denom = xc.norm(dim=0)[:, None] * yc.norm(dim=0)[None, :]
    corr = torch.where(denom > 0, cov / denom.clamp_min(1e-300), torch.zeros_like(cov))
    v = corr.abs().amax(1)
    total = v.sum()
    if not total > 0:
        return torch.full((x.shape[1],), 1.0 / x.shape[1], dtype=x.dtype, device=x.device)
    return (v / total).to(x.dtype)


@register_attack("lowprofool", aliases=("lpf",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class LowProFool(AttackBase):
    steps: int = 200  # gradient steps (no early exit: the weighted norm keeps improving)
    step_size: float = 0.02  # plain gradient-descent step on r
    lam: float = 2.0  # weight of the importance-weighted l2 norm in the loss
    importance: tuple[float, ...] | None = None  # v (D,); None: from the attacked batch

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.step_size > 0, f"step_size must be > 0, got {self.step_size}")
        require(self.lam >= 0, f"lam must be >= 0, got {self.lam}")
        if self.importance is not None:
            values = tuple(float(v) for v in self.importance)
            require(
                all(v >= 0 for v in values) and any(v > 0 for v in values),
                f"importance must be >= 0 with some entry > 0, got {list(values)[:10]}",
            )
            object.__setattr__(self, "importance", values)

    def _weights(self, x: Tensor, y: Tensor) -> Tensor:
        if self.importance is None:
            return feature_importance(x, y)
        if len(self.importance) != x.shape[1]:
            raise BadInput(
                f"importance has {len(self.importance)} values, the inputs {x.shape[1]} features"
            )
        return torch.tensor(self.importance, dtype=x.dtype, device=x.device)

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        if x.dim() != 2:
            raise ShapeError(f"lowprofool needs flat tabular inputs (B, D), got {tuple(x.shape)}")
        threat = self.threat
        v = self._weights(x, y)
        with torch.no_grad():
            logits = model(x)
        best_other = logits.scatter(1, y[:, None], -torch.inf).argmax(1)
        target = y if threat.targeted else best_other
        already = is_adversarial(logits, y, threat.targeted)
        best = x.clone()
        best_norm = torch.where(already, 0.0, torch.inf).to(x.dtype)
        x_adv = x.clone()
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            logits = model(x_adv)
            weighted = ((v * (x_adv - x)).square().sum(1) + 1e-12).sqrt()
            loss = F.cross_entropy(logits, target, reduction="none") + self.lam * weighted
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
            with torch.no_grad():
                fooled = is_adversarial(logits, y, threat.targeted)
                improved = fooled & (weighted < best_norm)
                best = torch.where(improved[:, None], x_adv, best)
                best_norm = torch.where(improved, weighted, best_norm)
                x_adv = threat.project(x_adv - self.step_size * grad, x)
        with torch.no_grad():
            logits = model(x_adv)
            weighted = (v * (x_adv - x)).norm(dim=1)
            improved = is_adversarial(logits, y, threat.targeted) & (weighted < best_norm)
            best = torch.where(improved[:, None], x_adv, best)
            best_norm = torch.where(improved, weighted, best_norm)
        return torch.where(torch.isinf(best_norm)[:, None], x_adv, best)
