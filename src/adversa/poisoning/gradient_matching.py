"""Gradient matching for a targeted misclassification (Geiping et al. 2021, "Witches' Brew:
Industrial Scale Data Poisoning via Gradient Matching", arXiv:2009.02276).

The attacker wants the test instance `target_x` classified as `target_class`. Training on
that pair would step the parameters along g_adv = grad_theta L(f(target_x), target_class).
Gradient matching perturbs a budget of `n_poisons` training images of `target_class` (labels
unchanged, each within an Linf ball of radius `eps`) so that the gradient of their training
loss, g_p = grad_theta sum_i L(f(x_i + delta_i), y_i), points the same way:

    min_delta 1 - cos(g_p(delta), g_adv),  ||delta_i||_inf <= eps,  x_i + delta_i in bounds

so ordinary training on the poisoned set performs the adversarial step for the attacker. The
gradients are taken with respect to the parameters the victim trains: `params="last"` for the
last `nn.Linear` (transfer learning: frozen features, retrained head) or `"all"`.

The optimiser is the paper's: signed Adam on delta, step `step_size * eps`, decayed tenfold
at 3/8, 5/8 and 7/8 of `steps`, with a projection after each step. The `restarts` random
starts run together in one batch (`torch.func.vmap` over the parameter gradient), and each
poison set keeps the restart of lowest final alignment loss.

Cost: `steps` double-backward passes (gradient of a parameter gradient) over
`restarts * n_poisons` images, plus one backward pass for g_adv.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from adversa.data.dataset import Dataset
from adversa.errors import BadInput
from adversa.model.wrapped import eval_mode
from adversa.poisoning.base import POISONS, PoisonedSet, settings
from adversa.poisoning.detect import last_linear
from adversa.poisoning.feature_collision import _model_check, check_instance, choose_bases
from adversa.rng import make_generator

__all__ = ["GradientMatching"]

PARAMS: tuple[str, ...] = ("last", "all")


def _split_params(model: nn.Module, which: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(trained, fixed): detached parameters by name; `which` "last" trains the head only."""
    named = dict(model.named_parameters())
    if which == "all":
        trained = set(named)
    else:
        head = last_linear(model)
        ids = {id(p) for p in head.parameters()}
        trained = {n for n, p in named.items() if id(p) in ids}
    params = {n: p.detach() for n, p in named.items()}
    return (
        {n: p for n, p in params.items() if n in trained},
        {n: p for n, p in params.items() if n not in trained},
    )


@POISONS.register("gradient-matching", aliases=("witches-brew",))
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class GradientMatching:
    """Witches' Brew (Geiping et al. 2021): `n_poisons` target-class images perturbed within
    Linf `eps` so their training gradient aligns with the adversarial gradient of
    `target_x` -> `target_class` under `model`; labels unchanged."""

    name = "gradient-matching"
    model: nn.Module | None = dataclasses.field(default=None, repr=False)  # the surrogate
    target_x: Tensor | None = dataclasses.field(default=None, repr=False)  # the test instance
    target_class: int = 0  # the class the target instance should be classified as
    n_poisons: int = 20
    eps: float = 16 / 255  # Linf radius of each poison's perturbation (the paper's CIFAR budget)
    steps: int = 100
    step_size: float = 0.1  # initial signed step, as a share of eps
    restarts: int = 4
    params: str = "last"  # "last": the head only (transfer learning); "all": every parameter

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise BadInput(f"eps must be > 0, got {self.eps}")
        if self.steps < 1 or self.restarts < 1:
            raise BadInput(f"steps and restarts must be >= 1, got {self.steps} and {self.restarts}")
        if not self.step_size > 0:
            raise BadInput(f"step_size must be > 0, got {self.step_size}")
        if self.params not in PARAMS:
            raise BadInput(f"params must be one of {', '.join(PARAMS)}, got {self.params!r}")

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet:
        model = _model_check(self.model)
        target = check_instance(self.target_x, dataset)
        idx = choose_bases(dataset, self.target_class, self.n_poisons, seed)
        base, labels = dataset.x[idx], dataset.y[idx]
        lo, hi = dataset.bounds
        trained, fixed = _split_params(model, self.params)

        def loss(theta: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            logits = functional_call(model, {**fixed, **theta}, (x,))
            return F.cross_entropy(logits, y, reduction="sum")

        def flat(g: dict[str, Tensor]) -> Tensor:
            return torch.cat([g[n].flatten() for n in trained])

        with eval_mode(model):
            g_adv = flat(
                grad(loss)(trained, target, torch.tensor([self.target_class], device=base.device))
            )

            def alignment(delta: Tensor) -> Tensor:  # delta: one restart's (n, ...) batch
                g_p = flat(grad(loss)(trained, (base + delta).clamp(lo, hi), labels))
                return 1 - F.cosine_similarity(g_p, g_adv, dim=0)

            def total(deltas: Tensor) -> tuple[Tensor, Tensor]:
                values = vmap(alignment)(deltas)
                return values.sum(), values

            gen = make_generator(seed, base.device)
            shape = (self.restarts, *base.shape)
            deltas = (torch.rand(shape, generator=gen, device=base.device) * 2 - 1) * self.eps
            deltas = ((base + deltas).clamp(lo, hi) - base).requires_grad_(True)
            opt = torch.optim.Adam([deltas], lr=self.step_size * self.eps)
            milestones = [round(self.steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
            for _ in range(self.steps):
                d_grad, _ = grad(total, has_aux=True)(deltas.detach())
                opt.zero_grad()
                deltas.grad = d_grad.sign()
                opt.step()
                sched.step()
                with torch.no_grad():
                    deltas.copy_(((base + deltas.clamp(-self.eps, self.eps)).clamp(lo, hi)) - base)
            with torch.no_grad():
                _, final = total(deltas.detach())
        best = int(final.argmin())
        x = dataset.x.clone()
        x[idx] = (base + deltas.detach()[best]).clamp(lo, hi)
        meta = {
            "attack": self.name,
            **settings(self),
            "seed": seed,
            "alignment_loss": final.tolist(),
            "best_restart": best,
        }
        return PoisonedSet(x, dataset.y.clone(), idx, None, self.target_class, meta)
