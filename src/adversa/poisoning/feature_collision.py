"""Feature-collision clean-label poisons (Shafahi et al. 2018, "Poison Frogs! Targeted
Clean-Label Poisoning Attacks on Neural Networks", arXiv:1804.00792).

The attacker wants one test instance `target_x` classified as `target_class`. It takes
`n_poisons` base images of `target_class` from the training set and moves each one, while it
keeps looking like itself (and keeps its correct label), until its penultimate-layer features
sit on those of `target_x`:

    p = argmin_p ||f(p) - f(target_x)||^2 + beta ||p - b||^2

solved by forward-backward splitting (the paper's Algorithm 1): a gradient step of size
`step_size` on the feature term, then the proximal step of the input term,
`p <- (p + step_size * beta * b) / (1 + step_size * beta)`, and a clip to the data bounds. A
poison whose objective grew takes back its step and halves its step size, as in the paper's
code. `beta` is `beta0 * (feature_dim / input_dim)^2` with `beta0 = 0.25`, the paper's
scaling (they use 2048 features, InceptionV3's penultimate layer, as the reference).

When a victim retrains only its last layer on frozen features (transfer learning) the
poisons, labelled `target_class`, pull the decision boundary over the target's features.
All poisons are optimised together, one batched forward and backward pass per step.

Cost: `steps` forward and backward passes over the `n_poisons` images, plus one forward
pass for the target.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from adversa.data.dataset import Dataset
from adversa.errors import BadInput, ShapeError
from adversa.model.wrapped import frozen
from adversa.poisoning.base import POISONS, PoisonedSet, check_target, settings
from adversa.poisoning.detect import penultimate
from adversa.rng import make_generator

__all__ = ["FeatureCollision", "check_instance", "choose_bases"]


def choose_bases(dataset: Dataset, target_class: int, n_poisons: int, seed: int) -> Tensor:
    """`n_poisons` random (seeded) indices of training samples of `target_class`, sorted."""
    check_target(target_class, dataset)
    if n_poisons < 1:
        raise BadInput(f"n_poisons must be >= 1, got {n_poisons}")
    pool = torch.nonzero(dataset.y == target_class).flatten()
    if n_poisons > pool.numel():
        raise BadInput(
            f"n_poisons {n_poisons} exceeds the {pool.numel()} samples of class {target_class}"
        )
    pick = torch.randperm(pool.numel(), generator=make_generator(seed))[:n_poisons]
    return pool[pick].sort().values


def check_instance(target_x: Tensor | None, dataset: Dataset) -> Tensor:
    """The target instance as a (1, ...) batch of the dataset's sample shape."""
    if target_x is None:
        raise BadInput("target_x (the test instance to misclassify) is required")
    if tuple(target_x.shape[-len(dataset.input_shape) :]) != dataset.input_shape or (
        target_x.dim() == len(dataset.input_shape) + 1 and target_x.shape[0] != 1
    ):
        raise ShapeError(
            f"target_x must have the sample shape {dataset.input_shape}, got "
            f"{tuple(target_x.shape)}"
        )
    return target_x.reshape(1, *dataset.input_shape).to(dataset.x.dtype)


def _model_check(model: object) -> nn.Module:
    """`model` itself, once it is known to be a torch.nn.Module."""
    if not isinstance(model, nn.Module):
        raise BadInput(
            f"model (the feature extractor) must be a torch.nn.Module, got {type(model).__name__}"
        )
    return model


@POISONS.register("feature-collision", aliases=("poison-frogs",))
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class FeatureCollision:
    """Poison Frogs (Shafahi et al. 2018): `n_poisons` target-class images whose features
    collide with `target_x` under `model`'s penultimate layer; labels unchanged."""

    name = "feature-collision"
    model: nn.Module | None = dataclasses.field(default=None, repr=False)  # feature extractor
    target_x: Tensor | None = dataclasses.field(default=None, repr=False)  # the test instance
    target_class: int = 0  # the class the target instance should be classified as
    n_poisons: int = 10
    beta0: float = 0.25  # the paper's beta0; beta = beta0 * (feature_dim / input_dim)^2
    steps: int = 300
    step_size: float = 0.1  # initial step size of the forward (gradient) step, per poison

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise BadInput(f"steps must be >= 1, got {self.steps}")
        if not self.beta0 >= 0:
            raise BadInput(f"beta0 must be >= 0, got {self.beta0}")
        if not self.step_size > 0:
            raise BadInput(f"step_size must be > 0, got {self.step_size}")

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet:
        model = _model_check(self.model)
        target = check_instance(self.target_x, dataset)
        idx = choose_bases(dataset, self.target_class, self.n_poisons, seed)
        base = dataset.x[idx]
        lo, hi = dataset.bounds
        with frozen(model):
            goal = penultimate(model, target).detach()
            beta = self.beta0 * (goal.shape[1] / math.prod(dataset.input_shape)) ** 2

            def objective(p: Tensor) -> tuple[Tensor, Tensor]:
                collide = (penultimate(model, p) - goal).square().sum(1)
                return collide, collide + beta * (p - base).flatten(1).square().sum(1)

            shape = (-1,) + (1,) * (base.dim() - 1)
            lam = torch.full((len(idx),), float(self.step_size))
            poison = base.clone()
            _, best = objective(poison)
            best = best.detach()
            for _ in range(self.steps):
                poison.requires_grad_(True)
                collide, _ = objective(poison)
                (grad,) = torch.autograd.grad(collide.sum(), poison)
                step = poison.detach() - lam.view(shape) * grad  # forward step
                step = (step + lam.view(shape) * beta * base) / (1 + lam.view(shape) * beta)
                step = step.clamp(lo, hi)  # backward (proximal) step, then the box
                with torch.no_grad():
                    _, value = objective(step)
                better = value <= best
                poison = torch.where(better.view(shape), step, poison.detach())
                best = torch.where(better, value, best)
                lam = torch.where(better, lam, lam / 2)
            with torch.no_grad():
                collide, _ = objective(poison)
        x = dataset.x.clone()
        x[idx] = poison.detach()
        meta = {
            "attack": self.name,
            **settings(self),
            "seed": seed,
            "beta": beta,
            "feature_distance": collide.sqrt().tolist(),
        }
        return PoisonedSet(x, dataset.y.clone(), idx, None, self.target_class, meta)
