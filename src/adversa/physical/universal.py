"""Universal adversarial perturbations: one perturbation `v`, in an Linf or L2 ball, added to
every input of a distribution so that the model's prediction changes on most of them.

Two methods, registered in `UNIVERSAL_METHODS`:

- "uap" (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard 2017, "Universal adversarial
  perturbations", arXiv:1610.08401, Algorithm 1): passes over the training points; every point
  `x + v` does not fool yet gets the minimal DeepFool step `dv` that would fool it, and `v`
  moves by it, then is projected back onto the ball. Here the points come in mini-batches: the
  not-yet-fooled points of a batch get their DeepFool steps together (the repo's batched
  `deepfool` over the top `candidates` classes, `adversa.attacks.deepfool`), `v` moves by the
  mean step scaled by `step_scale`, then is projected. Passes stop once the fooling rate on the
  training points reaches `1 - delta`, or after `max_passes`. Cost per pass: one forward pass
  per training point, plus per not-yet-fooled point at most `deepfool_steps` DeepFool steps
  (one forward and `candidates - 1` backward passes each), plus one forward pass per training
  point for the pass's fooling rate.
- "sgd-uap" (Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein 2020, "Universal adversarial
  training", arXiv:1809.02786, Algorithm 1 with their clipped loss): minibatch stochastic
  gradient ascent on the mean cross-entropy of `x + v` against the clean predictions, each
  point's loss clipped at `loss_clip` (points already fooled far enough stop pulling), a
  signed step for Linf and a normalised one for L2, then the projection. Two choices of ours:
  `v` starts as a random perturbation at `random_start` times eps (the paper starts at 0;
  on mnist-cnn this made the result less dependent on the seed), and the step size falls
  linearly to 0 (`decay`); the `v` returned is the one with the best training fooling rate
  after an epoch. With `restarts` R > 1, R perturbations from different random starts are
  trained side by side in the same batches and the best one is kept (on mnist-cnn at linf 0.2
  the runs end in optima a few points apart). Cost per epoch and restart: one forward and one
  backward pass per training point, plus one forward pass per point for the epoch's fooling
  rate. The fast default.

Both measure fooling against the model's clean prediction (the papers' definition), so labels
are not needed to train. The ball projection is `ThreatModel.project` (a ball of the threat's
norm and eps around 0, within +/- the box width); `x + v` is clipped to the box by the
threat. With `transforms` (a callable `(x, gen, bounds) -> x`, e.g.
`adversa.physical.transforms.Transforms`), sgd-uap optimises the expectation over
transformation (Athalye et al. 2018, arXiv:1707.07397): each step sees a fresh random
transformation of every perturbed image.

Example::

    threat = ThreatModel(norm="linf", eps=0.2)
    result = UNIVERSAL_METHODS.get("sgd-uap", threat=threat, epochs=5, seed=0)(model, x_train)
    held_out = evaluate_universal(model, result.perturbation, x_test, y_test, threat=threat)
    held_out.fooling_rate
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import ClassVar, Protocol

import torch
from torch import Tensor
from torch.nn import functional as F

from adversa.attacks import get_attack
from adversa.checks import as_tensor, check_in_bounds
from adversa.errors import BadInput, ShapeError, describe, is_integer, is_real
from adversa.model import Cost, Model, as_model
from adversa.registry import Registry
from adversa.rng import make_generator
from adversa.threat import ThreatModel

UNIVERSAL_NORMS: tuple[str, ...] = ("linf", "l2")
Progress = Callable[[str, int, int], None]


class TransformFn(Protocol):
    """A random transformation of a batch: a fresh draw per image from `gen`, in `bounds`."""

    def __call__(self, x: Tensor, gen: torch.Generator, bounds: tuple[float, float]) -> Tensor: ...


@dataclasses.dataclass(frozen=True, slots=True)
class UniversalResult:
    """A trained universal perturbation: `perturbation` has the shape of one input and lies
    in the threat's ball; `history` is the fooling rate on the training points after each
    pass (epoch); `cost` counts the model's passes per sample."""

    method: str
    perturbation: Tensor
    train_fooling_rate: float
    passes: int
    history: list[float]
    cost: Cost
    seed: int

    @property
    def seconds(self) -> float:
        return self.cost.seconds


UNIVERSAL_METHODS: Registry[UniversalBase] = Registry("universal method")


@dataclasses.dataclass(frozen=True, kw_only=True)
class UniversalBase:
    """What both methods share: the threat (norm linf or l2, 0 < eps, untargeted), the seed,
    the mini-batch size, optional EOT transforms and the stopping rule (`delta`)."""

    name: ClassVar[str] = ""
    threat: ThreatModel
    seed: int = 0
    batch_size: int = 128
    delta: float = 0.0  # stop once the training fooling rate reaches 1 - delta
    transforms: TransformFn | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise BadInput(f"threat must be a ThreatModel, got {describe(self.threat)}")
        if self.threat.norm not in UNIVERSAL_NORMS:
            raise BadInput(f"--norm must be linf or l2 for {self.name}, got {self.threat.norm!r}")
        if not 0 < self.threat.eps < math.inf:
            raise BadInput(f"--eps must be a finite number > 0, got {self.threat.eps:g}")
        if self.threat.targeted:
            raise BadInput(f"{self.name} is untargeted; threat.targeted must be False")
        make_generator(self.seed)  # the seed's own checks
        _positive_int("batch_size", self.batch_size)
        if not is_real(self.delta) or not 0 <= self.delta < 1:
            raise BadInput(f"delta must be in [0, 1), got {describe(self.delta)}")
        if self.transforms is not None and not callable(self.transforms):
            raise BadInput(f"transforms must be callable or None, got {describe(self.transforms)}")

    def __call__(
        self, model: Model | torch.nn.Module, x: Tensor, progress: Progress | None = None
    ) -> UniversalResult:
        """Train a universal perturbation on the inputs `x` (N, ...) in the threat's bounds."""
        model = as_model(model, self.threat.bounds)
        x = as_tensor(x, "x").to(model.device)
        if not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
            raise ShapeError(f"x must be a non-empty float batch (N, ...), got {tuple(x.shape)}")
        check_in_bounds(x, self.threat.bounds)
        model.resolve_num_classes(x[:1])
        gen = make_generator(self.seed, model.device)
        start = time.perf_counter()
        with model.frozen(), model.counting() as counter:
            labels = predict(model, x, self.batch_size)
            v, history = self._train(model, x, labels, gen, progress or _quiet)
        return UniversalResult(
            method=self.name,
            perturbation=v.detach(),
            train_fooling_rate=max(history, default=0.0),
            passes=len(history),
            history=history,
            cost=counter.freeze(time.perf_counter() - start),
            seed=self.seed,
        )

    def _train(
        self, model: Model, x: Tensor, labels: Tensor, gen: torch.Generator, progress: Progress
    ) -> tuple[Tensor, list[float]]:
        raise NotImplementedError

    def project(self, v: Tensor) -> Tensor:
        """Perturbations `v` (R, ...) projected onto the threat's ball (around 0, within +/-
        the box width), each on its own."""
        lo, hi = self.threat.bounds
        ball = ThreatModel(norm=self.threat.norm, eps=self.threat.eps, bounds=(lo - hi, hi - lo))
        return ball.project(v, torch.zeros_like(v))

    def perturb(self, x: Tensor, v: Tensor, gen: torch.Generator) -> Tensor:
        """Every input `x` (B, ...) with every perturbation `v` (R, ...), restart-major
        (R * B, ...), clipped to the box, then (with `transforms`) freshly transformed."""
        out = self.threat.clip((x[None] + v[:, None]).flatten(0, 1))
        return out if self.transforms is None else self.transforms(out, gen, self.threat.bounds)

    def _fooling_rates(
        self, model: Model, x: Tensor, labels: Tensor, v: Tensor, gen: torch.Generator
    ) -> Tensor:
        """The fooling rate (R,) of each perturbation `v` (R, ...) on the points `x`."""
        fooled = [
            model(self.perturb(x[i : i + self.batch_size], v, gen)).argmax(1).view(v.shape[0], -1)
            != labels[None, i : i + self.batch_size]
            for i in range(0, x.shape[0], self.batch_size)
        ]
        return torch.cat(fooled, 1).double().mean(1)


@UNIVERSAL_METHODS.register("sgd-uap", aliases=("sgd",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class SGDUAP(UniversalBase):
    """Shafahi et al. 2020's stochastic-gradient universal perturbation (see the module)."""

    name: ClassVar[str] = "sgd-uap"
    epochs: int = 5
    step_size: float | None = None  # first step; None: eps / 2 (linf) or eps / 5 (l2)
    random_start: float = 0.5  # v starts as a random perturbation of this fraction of eps
    loss_clip: float = 2.0  # each point's cross-entropy is clipped at this value
    decay: bool = True  # the step size falls linearly to 0 over the run
    restarts: int = 1  # perturbations trained side by side (batched); the best one is kept

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("epochs", self.epochs)
        _positive_int("restarts", self.restarts)
        if self.step_size is not None and not (is_real(self.step_size) and self.step_size > 0):
            raise BadInput(f"step_size must be > 0 or None, got {describe(self.step_size)}")
        if not is_real(self.random_start) or not 0 <= self.random_start <= 1:
            raise BadInput(f"random_start must be in [0, 1], got {describe(self.random_start)}")
        if not is_real(self.loss_clip) or not self.loss_clip > 0:
            raise BadInput(f"loss_clip must be > 0, got {describe(self.loss_clip)}")

    def _train(
        self, model: Model, x: Tensor, labels: Tensor, gen: torch.Generator, progress: Progress
    ) -> tuple[Tensor, list[float]]:
        eps, restarts = self.threat.eps, self.restarts
        step = self.step_size or (eps / 2 if self.threat.norm == "linf" else eps / 5)
        v = torch.stack([random_perturbation(self.threat, x[0], gen) for _ in range(restarts)])
        v = best = v * self.random_start
        history: list[float] = []
        total = self.epochs * math.ceil(x.shape[0] / self.batch_size)
        t = 0
        for epoch in range(self.epochs):
            progress(self.name, epoch, self.epochs)
            order = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
            for idx in order.split(self.batch_size):
                rate = step * (1 - t / total) if self.decay else step
                t += 1
                v_var = v.clone().requires_grad_(True)
                logits = model(self.perturb(x[idx], v_var, gen))
                loss = F.cross_entropy(logits, labels[idx].repeat(restarts), reduction="none")
                loss = loss.clamp(max=self.loss_clip).view(restarts, -1).mean(1).sum()
                (grad,) = torch.autograd.grad(loss, v_var)  # (R, ...): one per restart
                if self.threat.norm == "linf":
                    v = v + rate * grad.sign()
                else:
                    norms = torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp_min(1e-12)
                    v = v + rate * grad / norms.view(-1, *[1] * (grad.dim() - 1))
                v = self.project(v.detach())
            with torch.no_grad():
                rates = self._fooling_rates(model, x, labels, v, gen)
            history.append(float(rates.max()))
            if history[-1] >= max(history):
                best = v[int(rates.argmax())][None]
            if history[-1] >= 1 - self.delta:
                break
        progress(self.name, self.epochs, self.epochs)
        return best[0], history


@UNIVERSAL_METHODS.register("uap", aliases=("deepfool-uap",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class UAP(UniversalBase):
    """Moosavi-Dezfooli et al. 2017's universal perturbation, batched (see the module)."""

    name: ClassVar[str] = "uap"
    delta: float = 0.2  # the paper's default: stop at an 80% fooling rate
    max_passes: int = 5
    deepfool_steps: int = 10
    candidates: int = 5  # DeepFool's classes: the top ones by logit, the current label included
    overshoot: float = 0.02
    step_scale: float = 1.0  # v moves by step_scale times the batch's mean DeepFool step

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.transforms is not None:
            raise BadInput("--transforms: uap does not support EOT; use --method sgd-uap")
        for field in ("max_passes", "deepfool_steps"):
            _positive_int(field, getattr(self, field))
        if not is_integer(self.candidates) or self.candidates < 2:
            raise BadInput(f"candidates must be an integer >= 2, got {describe(self.candidates)}")
        for field in ("overshoot", "step_scale"):
            value = getattr(self, field)
            if not is_real(value) or value < 0 or (field == "step_scale" and value == 0):
                raise BadInput(f"{field} must be a number > 0, got {describe(value)}")

    def _train(
        self, model: Model, x: Tensor, labels: Tensor, gen: torch.Generator, progress: Progress
    ) -> tuple[Tensor, list[float]]:
        unbounded = dataclasses.replace(self.threat, eps=math.inf)
        deepfool = get_attack(
            "deepfool",
            unbounded,
            steps=self.deepfool_steps,
            candidates=self.candidates,
            overshoot=self.overshoot,
            seed=self.seed,
        )
        v = best = torch.zeros_like(x[:1])  # (1, ...): one perturbation
        history: list[float] = []
        for done in range(self.max_passes):
            progress(self.name, done, self.max_passes)
            order = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
            for idx in order.split(self.batch_size):
                x_v = self.perturb(x[idx], v, gen)  # (B, ...)
                with torch.no_grad():
                    todo = model(x_v).argmax(1) == labels[idx]
                if not bool(todo.any()):
                    continue
                result = deepfool(model, x_v[todo], labels[idx][todo])
                step = (result.x_adv - x_v[todo]).mean(0, keepdim=True)
                v = self.project(v + self.step_scale * step)
            with torch.no_grad():
                history.append(float(self._fooling_rates(model, x, labels, v, gen)[0]))
            if history[-1] >= max(history):
                best = v
            if history[-1] >= 1 - self.delta:
                break
        progress(self.name, self.max_passes, self.max_passes)
        return best[0], history


def predict(model: Model, x: Tensor, batch_size: int) -> Tensor:
    """The model's labels (N,) for `x`, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)]
        )


def random_perturbation(threat: ThreatModel, like: Tensor, gen: torch.Generator) -> Tensor:
    """The control: a random perturbation of the same norm, shaped like `like`: uniform random
    signs times eps (Linf), or a uniformly random direction at radius eps (L2)."""
    if threat.norm == "linf":
        bits = torch.randint(0, 2, like.shape, generator=gen, device=gen.device)
        return ((2 * bits - 1) * threat.eps).to(like)
    direction = torch.randn(like.shape, generator=gen, device=gen.device).to(like)
    return direction * (threat.eps / torch.linalg.vector_norm(direction).clamp_min(1e-12))


def _positive_int(name: str, value: object) -> None:
    if not is_integer(value) or int(value) < 1:  # type: ignore[call-overload]
        raise BadInput(f"{name} must be an integer >= 1, got {describe(value)}")


def _quiet(description: str, completed: int, total: int) -> None:
    return None
