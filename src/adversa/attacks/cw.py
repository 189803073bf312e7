"""Carlini & Wagner's L2 attack (Carlini & Wagner, 2017, "Towards Evaluating the Robustness of
Neural Networks", arXiv:1608.04644).

A minimum-norm attack. Each input is reparametrised as `x' = lo + (hi - lo) * (tanh(w) + 1) / 2`
so that it never leaves the box `[lo, hi]`, and Adam on `w` minimises

    ||x' - x||_2^2 + c * max(-margin(x'), -confidence)

where `margin` is the best wrong logit minus the true one (untargeted) or the target logit
minus the best other one (targeted), positive once the model is fooled. The constant `c` is
set per sample by a batched binary search: multiplied by 10 while the sample has not been
fooled, bisected once it has. Per sample, the smallest-L2 point that fools the model with
`margin >= confidence` is kept across all searches; a sample never fooled is returned as it
is. The attack ignores `eps` while it runs; the harness then projects the result onto the
eps-ball, so under a finite eps a sample whose smallest adversarial lies farther than eps is
shrunk onto the ball and is usually no longer adversarial.

Defaults differ from the paper (`initial_const=1e-3`, learning rate 1e-2, up to 10,000 steps
per search) so that an MNIST-sized model is attacked in seconds: `initial_const=1e-2`, 100
steps per search, 9 searches and `lr=0.1`. The larger rate matters: a pixel at a bound sits at
|w| ~ 7 in tanh space, which 100 steps of 0.01 cannot leave (on the digits MLP, lr=0.01 ends
44% farther than lr=0.1, which matches 1,000 steps of 0.01). Raise `steps` on harder models.

Cost per attacked sample: one forward and one backward pass per Adam step, that is at most
`binary_search_steps * steps` of each (fewer with `abort_early`), plus one forward pass for
the clean check and the harness's verification.

Example::

    threat = ThreatModel(norm="l2", eps=math.inf)          # unbounded: report distortion
    result = get_attack("cw", threat, steps=200)(model, x, y)
    result.distance                                          # (B,) L2 distances
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import Tensor

from adversa.attacks.base import AttackBase, register_attack
from adversa.attacks.const_search import NO_UPPER, check_search_options, next_const, on_unbroken
from adversa.losses import get_loss
from adversa.model import Model


@register_attack("cw", aliases=("cw-l2",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class CW(AttackBase):
    norms = ("l2",)

    steps: int = 100  # Adam steps per binary-search step
    binary_search_steps: int = 9  # searches over the trade-off constant c, batched per sample
    initial_const: float = 1e-2  # c at the first search (the paper uses 1e-3)
    lr: float = 0.1  # Adam learning rate on the tanh variable w
    confidence: float = 0.0  # kappa: required logit margin of a successful adversarial
    abort_early: bool = True  # end a search once the batch's objective stops falling (10 checks)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_search_options(
            self.steps, self.binary_search_steps, self.initial_const, self.lr, self.confidence
        )

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        search = functools.partial(self._search, model)
        return on_unbroken(model, x, y, self.threat.targeted, search)

    def _search(self, model: Model, x: Tensor, y: Tensor) -> Tensor:
        """The binary search over c for a batch the model does not yet get wrong."""
        lo, hi = self.threat.bounds
        margin_fn = get_loss("margin", self.threat.targeted)
        n = x.shape[0]
        kwargs = {"device": x.device, "dtype": x.dtype}
        w_start = _to_tanh_space(x, lo, hi)
        const = torch.full((n,), self.initial_const, **kwargs)
        lower = torch.zeros(n, **kwargs)
        upper = torch.full((n,), NO_UPPER, **kwargs)
        best_l2 = torch.full((n,), torch.inf, **kwargs)
        best_x = x.clone()
        check_every = max(1, self.steps // 10)

        for _ in range(self.binary_search_steps):
            w = w_start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            fooled_now = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = torch.inf
            for step in range(self.steps):
                x_new = _from_tanh_space(w, lo, hi)
                l2_sq = (x_new - x).flatten(1).pow(2).sum(1)
                margin = margin_fn(model(x_new), y)
                loss = l2_sq + const * (-margin).clamp_min(-self.confidence)
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                with torch.no_grad():
                    fooled = (margin > 0) & (margin >= self.confidence)
                    better = fooled & (l2_sq < best_l2)
                    best_l2 = torch.where(better, l2_sq, best_l2)
                    best_x[better] = x_new[better].detach()
                    fooled_now |= fooled
                optimizer.step()
                if self.abort_early and (step + 1) % check_every == 0:
                    total = float(loss.detach().sum())
                    if total > previous * 0.9999:
                        break
                    previous = total

            const, lower, upper = next_const(const, lower, upper, fooled_now)
        return best_x


def _to_tanh_space(x: Tensor, lo: float, hi: float) -> Tensor:
    """The w with `_from_tanh_space(w) == x`, up to the clamp that keeps atanh finite."""
    unit = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
    return torch.atanh(unit)


def _from_tanh_space(w: Tensor, lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * (torch.tanh(w) + 1) / 2
