"""Gradient matching for a targeted misclassification (Geiping et al. 2021, "Witches' Brew:
Industrial Scale Data Poisoning via Gradient Matching", arXiv:2009.02276).

The attacker wants the test instance `target_x` classified as `target_class`. Training on
that pair would step the parameters along g_adv = grad_theta L(f(target_x), target_class).
Gradient matching perturbs a budget of `n_poisons` training images of `target_class` (labels
unchanged, each within an Linf ball of radius `eps`) so that the gradient of their training
loss, g_p = grad_theta sum_i L(f(x_i + delta_i), y_i), points the same way:

    min_delta 1/M sum_m [1 - cos(g_p(delta; theta_m), g_adv(theta_m))],
    ||delta_i||_inf <= eps,  x_i + delta_i in bounds

so ordinary training on the poisoned set performs the adversarial step for the attacker. The
gradients are taken with respect to the parameters the victim trains: `params="last"` for the
last `nn.Linear` (transfer learning: frozen features, retrained head; the logits are taken to
be that layer applied to its input, as for the victim) or `"all"`.

The parameter draws theta_1..theta_M are the surrogate with its last `nn.Linear` replaced by
each of M heads: its own head (`surrogate_head`) and `ensemble * snapshots` heads trained
on its frozen penultimate features of the clean data, `ensemble` seeded initialisations each
kept at `snapshots` evenly spaced points of its first `head_steps` Adam steps (the paper's
model ensembles and its retraining during crafting, cheap here because a head trains in
milliseconds). A victim that retrains its head from scratch passes through none of the
surrogate's parameters; matching along the early part of head training is what moves its
targets (docs/poisoning.md has the ablation: on MNIST with 40 poisons in Linf 0.3, 2/10
targets at the surrogate's head alone, 9/10 with these draws and gradient-norm bases).

Poison bases are the `n_poisons` images of `target_class` with the largest training
gradient norm (mean over the draws), the paper's choice, or with `bases="random"` a seeded
random draw.

The optimiser is the paper's: signed Adam on delta, step `step_size * eps`, decayed tenfold
at 3/8, 5/8 and 7/8 of `steps`, with a projection after each step. The `restarts` random
starts run together in one batch (`torch.func.vmap` over the parameter gradient, and over
the draws), and each poison set keeps the restart of lowest final alignment loss.

Cost: `steps` double-backward passes (gradient of a parameter gradient) over
`restarts * n_poisons` images: through the network once per step with `params="last"` (the
M heads act on the features) or M times with `"all"`; one backward pass per draw for
g_adv; one forward pass over the data for the features and `head_steps` full-batch steps
of `ensemble` stacked linear layers; `bases="gradient-norm"` adds one per-sample gradient
(at the M draws) over the target class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from adversa.checks import check_config_types
from adversa.data.dataset import Dataset
from adversa.errors import BadInput, describe
from adversa.model.wrapped import frozen
from adversa.poisoning.base import POISONS, PoisonedSet, check_target, in_data_box, settings
from adversa.poisoning.detect import last_linear, penultimate, penultimate_features
from adversa.poisoning.feature_collision import _model_check, check_instance, choose_bases
from adversa.rng import make_generator
from adversa.threat import ThreatModel

__all__ = ["GradientMatching", "head_ensemble"]

PARAMS: tuple[str, ...] = ("last", "all")
BASES: tuple[str, ...] = ("random", "gradient-norm")
CIFAR_BALL = ThreatModel(norm="linf", eps=16 / 255)  # the paper's CIFAR budget

# (embed, gradients): embed maps a (B, ...) input batch to what the trained parameters see
# (the penultimate features with params="last", the input itself with "all"), batched
# outside vmap; gradients maps an embedded batch and its labels to the (M, P) flattened
# training gradients, one row per parameter draw
GradFns = tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]


def _head_names(model: nn.Module) -> tuple[str, str | None]:
    """The names of the last `nn.Linear`'s weight and bias (None without one)."""
    head = last_linear(model)
    names = {id(p): n for n, p in model.named_parameters()}
    return names[id(head.weight)], None if head.bias is None else names[id(head.bias)]


def head_ensemble(
    features: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    heads: int,
    snapshots: int,
    steps: int = 300,
    lr: float = 1e-2,
    seed: int = 0,
    with_bias: bool = True,
) -> tuple[Tensor, Tensor]:
    """`heads` linear layers (d -> K) trained together by full-batch Adam on fixed `features`
    (N, d) from seeded random initialisations (as `surrogate.fit_linear_head`), each kept at
    `snapshots` evenly spaced points of its `steps` steps (the last one at the end):
    weights (heads * snapshots, K, d) and biases (heads * snapshots, K) (zeros, untrained,
    when `with_bias` is False).

    The heads are stacked in one tensor; Adam is elementwise, so this equals training each
    alone. Cost: `steps` (heads, N, d) x (d, K) products and their backward passes."""
    if heads < 1 or snapshots < 1 or steps < snapshots:
        raise BadInput(
            f"heads and snapshots must be >= 1 and head_steps >= snapshots, got {heads}, "
            f"{snapshots} and {steps}"
        )
    gen = make_generator(seed)
    d = features.shape[1]
    init_w, init_b = [], []
    for _ in range(heads):  # seeded_init's draws (weight, then bias), from `gen` only
        init_w.append(torch.randn((num_classes, d), generator=gen) * d**-0.5)
        init_b.append(torch.randn((num_classes,), generator=gen) * 0.0)
    weight = torch.stack(init_w).to(features).requires_grad_(True)
    bias = torch.stack(init_b).to(features).requires_grad_(with_bias)
    opt = torch.optim.Adam([weight, bias] if with_bias else [weight], lr)
    keep = {round(steps * (j + 1) / snapshots) for j in range(snapshots)}
    weights, biases = [], []
    features = features.detach()
    for step in range(1, steps + 1):
        opt.zero_grad()
        logits = torch.einsum("nd,hkd->hnk", features, weight) + bias[:, None]
        # mean over samples per head, summed over heads: each head gets its own mean loss
        F.cross_entropy(logits.flatten(0, 1), y.repeat(heads), reduction="sum").div(
            len(y)
        ).backward()
        opt.step()
        if step in keep:
            weights.append(weight.detach().clone())
            biases.append(bias.detach().clone())
    return torch.stack(weights, 1).flatten(0, 1), torch.stack(biases, 1).flatten(0, 1)


@POISONS.register("gradient-matching", aliases=("witches-brew",))
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class GradientMatching:
    """Witches' Brew (Geiping et al. 2021): `n_poisons` target-class images perturbed within
    Linf `eps` so their training gradient aligns with the adversarial gradient of
    `target_x` -> `target_class` under `model` (and, with `params="last"`, under an ensemble
    of heads retrained on its frozen features); labels unchanged."""

    name = "gradient-matching"
    model: nn.Module | None = dataclasses.field(default=None, repr=False)  # the surrogate
    target_x: Tensor | None = dataclasses.field(default=None, repr=False)  # the test instance
    target_class: int = 0  # the class the target instance should be classified as
    n_poisons: int = 20
    threat: ThreatModel = CIFAR_BALL  # each poison's Linf ball (its box: the data's)
    steps: int = 100
    step_size: float = 0.1  # initial signed step, as a share of eps
    restarts: int = 4
    params: str = "last"  # "last": the head only (transfer learning); "all": every parameter
    ensemble: int = 4  # heads retrained from scratch (seeded) on the frozen clean features
    snapshots: int = 6  # points of each ensemble head's training at which it is matched
    head_steps: int = 60  # full-batch Adam steps (lr 1e-2) of each ensemble head
    surrogate_head: bool = True  # match at the surrogate's own head too
    bases: str = "gradient-norm"  # or "random" (seeded); the paper picks by gradient norm

    def __post_init__(self) -> None:
        check_config_types(self, f"poisoning attack {self.name!r}")
        if not isinstance(self.threat, ThreatModel):
            raise BadInput(f"threat must be a ThreatModel, got {describe(self.threat)}")
        if self.threat.norm != "linf":
            raise BadInput(f"norm must be 'linf' (signed steps), got {self.threat.norm!r}")
        if not self.threat.eps > 0:
            raise BadInput(f"eps must be > 0, got {self.threat.eps}")
        if self.steps < 1 or self.restarts < 1:
            raise BadInput(f"steps and restarts must be >= 1, got {self.steps} and {self.restarts}")
        if not self.step_size > 0:
            raise BadInput(f"step_size must be > 0, got {self.step_size}")
        if self.params not in PARAMS:
            raise BadInput(f"params must be one of {', '.join(PARAMS)}, got {self.params!r}")
        if self.bases not in BASES:
            raise BadInput(f"bases must be one of {', '.join(BASES)}, got {self.bases!r}")
        if self.ensemble < 0 or self.snapshots < 1 or self.head_steps < self.snapshots:
            raise BadInput(
                f"ensemble must be >= 0, snapshots >= 1 and head_steps >= snapshots, got "
                f"{self.ensemble}, {self.snapshots} and {self.head_steps}"
            )
        if not self.ensemble and not self.surrogate_head:
            raise BadInput("surrogate_head=False needs ensemble >= 1 (no parameters to match)")

    def _draws(self, model: nn.Module, dataset: Dataset, seed: int) -> tuple[Tensor, Tensor]:
        """The heads to match at, stacked: weights (M, K, d) and biases (M, K): the surrogate's
        own head and the `ensemble * snapshots` retrained ones."""
        head = last_linear(model)
        weight = head.weight.detach()
        bias = torch.zeros_like(weight[:, 0]) if head.bias is None else head.bias.detach()
        weights, biases = ([weight[None]], [bias[None]]) if self.surrogate_head else ([], [])
        if self.ensemble:
            w, b = head_ensemble(
                penultimate_features(model, dataset.x),
                dataset.y,
                dataset.num_classes,
                heads=self.ensemble,
                snapshots=self.snapshots,
                steps=self.head_steps,
                seed=seed,
                with_bias=head.bias is not None,
            )
            weights.append(w.to(weight))
            biases.append(b.to(bias))
        return torch.cat(weights), torch.cat(biases)

    def _gradients(self, model: nn.Module, dataset: Dataset, seed: int) -> GradFns:
        """(embed, gradients) for the training gradients of a batch at each parameter draw:
        the model with its head replaced by each of `_draws`; P counts the head's parameters
        (`"last"`) or all of them (`"all"`)."""
        weight, bias = self._draws(model, dataset, seed)
        w_name, b_name = _head_names(model)
        if self.params == "last":

            def heads(feats: Tensor, y: Tensor) -> Tensor:
                # cross-entropy of a linear layer, in closed form for all draws at once:
                # d/dW = (softmax - onehot)^T feats, d/db = sum(softmax - onehot)
                logits = torch.einsum("nd,mkd->mnk", feats, weight) + bias[:, None]
                residual = logits.softmax(-1) - F.one_hot(y, weight.shape[1]).to(logits)
                g_w = torch.einsum("mnk,nd->mkd", residual, feats)
                return torch.cat([g_w.flatten(1)] + ([residual.sum(1)] if b_name else []), 1)

            return (lambda x: penultimate(model, x)), heads
        body = {n: p.detach() for n, p in model.named_parameters() if n not in (w_name, b_name)}

        def loss(theta: dict[str, Tensor], w: Tensor, b: Tensor, x: Tensor, y: Tensor) -> Tensor:
            params = {**theta, w_name: w, **({b_name: b} if b_name else {})}
            return F.cross_entropy(functional_call(model, params, (x,)), y, reduction="sum")

        per_model = vmap(grad(loss, argnums=(0, 1, 2)), in_dims=(None, 0, 0, None, None))

        def whole(x: Tensor, y: Tensor) -> Tensor:
            g_body, g_w, g_b = per_model(body, weight, bias, x, y)
            parts = [g_body[n].flatten(1) for n in body] + [g_w.flatten(1)]
            return torch.cat(parts + ([g_b] if b_name else []), 1)

        return (lambda x: x), whole

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet:
        model = _model_check(self.model)
        target = check_instance(self.target_x, dataset)
        check_target(self.target_class, dataset)
        threat = in_data_box(self.threat, dataset)
        lo, hi = threat.bounds
        with frozen(model):
            embed, gradients = self._gradients(model, dataset, seed)
            if self.bases == "random":
                idx = choose_bases(dataset, self.target_class, self.n_poisons, seed)
            else:
                idx = self._largest_gradients(embed, gradients, dataset)
            base, labels = dataset.x[idx], dataset.y[idx]
            goal = torch.tensor([self.target_class], device=base.device)
            g_adv = gradients(embed(target), goal).detach()  # (M, P)

            def alignment(z: Tensor) -> Tensor:  # z: one restart's embedded (n, ...) batch
                g_p = gradients(z, labels)
                return (1 - F.cosine_similarity(g_p, g_adv, dim=1)).mean()

            def total(deltas: Tensor) -> Tensor:  # (restarts,) alignment losses
                z = embed((base + deltas).clamp(lo, hi).flatten(0, 1))  # restarts in one batch
                return vmap(alignment)(z.unflatten(0, deltas.shape[:2]))

            gen = make_generator(seed, base.device)
            shape = (self.restarts, *base.shape)
            deltas = (torch.rand(shape, generator=gen, device=base.device) * 2 - 1) * threat.eps
            deltas = (threat.clip(base + deltas) - base).requires_grad_(True)
            opt = torch.optim.Adam([deltas], lr=self.step_size * threat.eps)
            milestones = [round(self.steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
            for _ in range(self.steps):
                (d_grad,) = torch.autograd.grad(total(deltas).sum(), deltas)
                deltas.grad = d_grad.sign()
                opt.step()
                sched.step()
                with torch.no_grad():
                    deltas.copy_(threat.project(base + deltas, base) - base)
            with torch.no_grad():
                final = total(deltas.detach())
        best = int(final.argmin())
        x = dataset.x.clone()
        x[idx] = (base + deltas.detach()[best]).clamp(lo, hi)
        meta = {
            "attack": self.name,
            **settings(self),
            "seed": seed,
            "draws": int(g_adv.shape[0]),
            "alignment_loss": final.tolist(),
            "best_restart": best,
        }
        return PoisonedSet(x, dataset.y.clone(), idx, None, self.target_class, meta)

    def _largest_gradients(
        self,
        embed: Callable[[Tensor], Tensor],
        gradients: Callable[[Tensor, Tensor], Tensor],
        dataset: Dataset,
    ) -> Tensor:
        """Indices (sorted) of the `n_poisons` target-class samples whose training gradient
        has the largest norm, averaged over the parameter draws; per-sample gradients by
        `vmap`, in chunks."""
        pool = torch.nonzero(dataset.y == self.target_class).flatten()
        if self.n_poisons < 1 or self.n_poisons > pool.numel():
            choose_bases(dataset, self.target_class, self.n_poisons, 0)  # raises the message
        chunk = 256 if self.params == "last" else 8
        per_sample = vmap(
            lambda z, y: gradients(z[None], y[None]).norm(dim=1).mean(), chunk_size=chunk
        )
        with torch.no_grad():
            z = torch.cat([embed(dataset.x[part]) for part in pool.split(512)])
            norms = per_sample(z, dataset.y[pool])
        return pool[norms.topk(self.n_poisons).indices].sort().values
