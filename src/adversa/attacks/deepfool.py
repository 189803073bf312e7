"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, 2016, "DeepFool: a simple and accurate
method to fool deep neural networks", arXiv:1511.04599), L2 and Linf, untargeted.

A minimum-norm attack. At each step the classifier is linearised around the current point;
for each candidate class k (the `candidates` classes with the highest clean logits, minus
the label y) the boundary between y and k is the hyperplane `f_k + w_k . r = 0` with
`f_k = Z_k - Z_y` and `w_k` its gradient. The closest hyperplane, the k minimising
`|f_k| / ||w_k||_q` with q the dual norm (2 for L2, 1 for Linf), is stepped onto:

    L2:   r = |f_k| / ||w_k||_2^2 * w_k          Linf:   r = |f_k| / ||w_k||_1 * sign(w_k)

The steps accumulate into `r_total`; the current point is `clip(x + (1 + overshoot) *
r_total)`. A sample leaves the batch as soon as the model gets it wrong, so the point
returned is the first one found to fool the model; samples never fooled return their last
point. The attack ignores `eps` while it runs; the harness then projects the result onto the
eps-ball.

Cost per step and attacked sample: one forward pass and `candidates - 1` backward passes
(one per candidate logit difference), for at most `steps` steps, plus one forward pass for
the clean check and the harness's verification.

Example::

    threat = ThreatModel(norm="l2", eps=math.inf)          # unbounded: report distortion
    result = get_attack("deepfool", threat, candidates=10)(model, x, y)
    result.distance                                          # (B,) L2 distances
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.errors import require
from adversa.losses import is_adversarial
from adversa.model import Model


@register_attack("deepfool")
@dataclasses.dataclass(frozen=True, kw_only=True)
class DeepFool(AttackBase):
    norms = ("linf", "l2")

    steps: int = 50  # maximum linearisation steps
    candidates: int = 10  # classes considered: the top ones by clean logit, label included
    overshoot: float = 0.02  # the accumulated step is scaled by (1 + overshoot)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            not self.threat.targeted,
            "deepfool is untargeted; threat.targeted must be False, got True",
        )
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.candidates >= 2, f"candidates must be >= 2, got {self.candidates}")
        require(self.overshoot >= 0, f"overshoot must be >= 0, got {self.overshoot}")

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        lo, hi = self.threat.bounds
        with torch.no_grad():
            logits = model(x)
        k = min(self.candidates, logits.shape[1])
        # Wherever we attack, the label is the top-1 class, so the others are the next k - 1.
        others = logits.topk(k, dim=1).indices[:, 1:]
        active = torch.nonzero(~is_adversarial(logits, y, False)).squeeze(1)
        r_total = torch.zeros_like(x)
        scale = 1.0 + self.overshoot

        for _ in range(self.steps):
            if active.numel() == 0:
                break
            x_cur = (x[active] + scale * r_total[active]).clamp(lo, hi).requires_grad_(True)
            logits = model(x_cur)
            fooled = is_adversarial(logits.detach(), y[active], False)
            if bool(fooled.all()):
                break
            step = self._closest_boundary_step(x_cur, logits, y[active], others[active])
            # A fooled row keeps the point it was fooled at; only the others move on.
            keep = ~fooled
            r_total[active[keep]] += step[keep]
            active = active[keep]
        return (x + scale * r_total).clamp(lo, hi)

    def _closest_boundary_step(
        self, x_cur: Tensor, logits: Tensor, y: Tensor, others: Tensor
    ) -> Tensor:
        """The step onto the nearest linearised boundary (eq. 8 and 11 of the paper)."""
        f = logits.gather(1, others) - logits.gather(1, y[:, None])  # (n, k - 1), < 0
        last = f.shape[1] - 1
        grads = torch.stack(
            [
                torch.autograd.grad(f[:, j].sum(), x_cur, retain_graph=j < last)[0].flatten(1)
                for j in range(f.shape[1])
            ],
            dim=1,
        )  # (n, k - 1, d)
        dual = 2.0 if self.threat.norm == "l2" else 1.0
        w_norm = torch.linalg.vector_norm(grads, ord=dual, dim=2).clamp_min(1e-12)
        # 1e-4 nudges the step past the boundary, as in the authors' implementation.
        f_abs = f.detach().abs() + 1e-4
        best = (f_abs / w_norm).argmin(1)
        rows = torch.arange(f.shape[0], device=f.device)
        w, f_best, norm_best = grads[rows, best], f_abs[rows, best], w_norm[rows, best]
        if self.threat.norm == "l2":
            r = (f_best / norm_best.square())[:, None] * w
        else:
            r = (f_best / norm_best)[:, None] * w.sign()
        return r.view_as(x_cur)
