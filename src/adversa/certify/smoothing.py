"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, "Certified Adversarial Robustness via
Randomized Smoothing", arXiv:1902.02918).

The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) is certified in L2:
if the top class has probability pA > 1/2, g is constant on the ball of radius
sigma * Phi^-1(pA). `Smooth` implements the paper's two Monte Carlo procedures exactly:

- PREDICT: n noisy samples; the top two counts nA, nB; return the top class if the two-sided
  binomial test of nA against nA + nB at p = 1/2 has p-value <= alpha, else abstain. The
  answer differs from g(x) with probability at most alpha.
- CERTIFY: n0 samples choose the class cA; n fresh samples count nA; pA_lower is the one-sided
  Clopper-Pearson lower confidence bound at level 1 - alpha (the alpha quantile of
  Beta(nA, n - nA + 1)); if pA_lower > 1/2 return cA with radius sigma * Phi^-1(pA_lower),
  else abstain. A non-abstaining answer is wrong with probability at most alpha.

Noise is drawn on the model's device from a generator seeded with `seed`, in batches of
`batch_size` noisy inputs that span points and samples (no per-sample loop), and predictions
are tallied with one index_add per batch. Inputs are not clipped after adding noise, as in the
paper (the certificate is about f on all of R^d). Labels -1 mean abstain.

Cost: (n0 + n) forward passes per point for CERTIFY, n for PREDICT.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from adversa.attacks.gradient import Ascent, ascend
from adversa.checks import as_tensor
from adversa.errors import BadInput
from adversa.model import Model, as_model
from adversa.rng import make_generator
from adversa.threat import ThreatModel

ABSTAIN = -1
ProgressFn = Callable[[str, int, int], None]


class CertificationWarning(UserWarning):
    """The chosen n and alpha make certification impossible or nearly so."""


def lower_confidence_bound(count: Tensor, n: int, alpha: float) -> Tensor:
    """One-sided Clopper-Pearson lower bound on a binomial proportion at level 1 - alpha:
    the alpha quantile of Beta(count, n - count + 1), and 0 where count is 0."""
    k = count.detach().cpu().double().numpy()
    with np.errstate(invalid="ignore"):
        lower = np.where(k > 0, stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
    return torch.from_numpy(lower).to(count.device)


def certified_radius(pa_lower: Tensor, sigma: float) -> Tensor:
    """sigma * Phi^-1(pA_lower) where pA_lower > 1/2, else 0 (abstain)."""
    p = pa_lower.detach().cpu().double().numpy()
    radius = np.where(p > 0.5, sigma * stats.norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)
    return torch.from_numpy(radius).to(pa_lower.device)


def binomial_p_value(top: Tensor, total: Tensor) -> Tensor:
    """Two-sided p-value of `top` successes in `total` trials at p = 1/2 (scipy's binomtest,
    vectorised: the distribution is symmetric, so both tails are equal)."""
    k, n = top.detach().cpu().double().numpy(), total.detach().cpu().double().numpy()
    far = np.maximum(k, n - k)
    p = np.minimum(1.0, 2 * stats.binom.sf(far - 1, n, 0.5))
    return torch.from_numpy(p).to(top.device)


def min_n_to_certify(alpha: float) -> int:
    """The smallest n for which CERTIFY can return a class at level alpha: with all n samples
    on cA, pA_lower = alpha^(1/n) must exceed 1/2, i.e. 2^-n < alpha."""
    _check_alpha(alpha)
    return math.floor(math.log2(1 / alpha)) + 1


def min_n_to_predict(alpha: float) -> int:
    """The smallest n for which PREDICT can return a class: the smallest two-sided p-value,
    2 * 2^-n, must be <= alpha (n = 10 with alpha = 0.001 always abstains)."""
    _check_alpha(alpha)
    return math.ceil(math.log2(1 / alpha)) + 1


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return: sigma * Phi^-1(alpha^(1/n)), or 0."""
    p = alpha ** (1 / n)
    return float(sigma * stats.norm.ppf(p)) if p > 0.5 else 0.0


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise BadInput(f"alpha must be in (0, 1), got {alpha!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class CertResult:
    """CERTIFY's answer per point. `prediction` (B,) is -1 where it abstains; `radius` (B,) is
    the certified L2 radius (0 where abstaining); `pA_lower` (B,) the lower confidence bound;
    `counts` (B, classes) the n estimation counts, `counts0` the n0 selection counts."""

    prediction: Tensor
    radius: Tensor
    pA_lower: Tensor
    counts: Tensor
    counts0: Tensor
    sigma: float
    n0: int
    n: int
    alpha: float
    forward: int  # noisy forward passes, over all points
    seconds: float
    warnings: tuple[str, ...] = ()

    @property
    def abstained(self) -> Tensor:
        return self.prediction == ABSTAIN

    @property
    def abstention_rate(self) -> float:
        return float(self.abstained.float().mean())

    def certified(self, y: Tensor, radius: float) -> Tensor:
        """bool (B,): correct and certified at `radius` or more."""
        y = as_tensor(y, "y").to(self.prediction.device)
        return (self.prediction == y) & (self.radius >= radius)

    def certified_accuracy(self, y: Tensor, radius: float) -> float:
        return float(self.certified(y, radius).float().mean())


def attack_smoothed(
    model: Model | nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    sigma: float,
    *,
    eot: int = 16,
    steps: int = 40,
    seed: int = 0,
) -> Tensor:
    """L2 PGD with EOT on the smoothed soft classifier (Salman et al. 2019, "Provably Robust
    Deep Learning via Adversarially Trained Smoothed Classifiers", arXiv:1906.04584): ascend
    -log of the mean over `eot` fresh noise draws of softmax(f(x' + noise))_y, with steps of
    2.5 eps / steps projected by the threat model (the template `attacks.gradient.ascend`,
    with the noise drawn inside the objective). Every point takes every step and the last
    iterate is returned (no early stop: a point just across g's boundary is not one PREDICT
    would misclassify). Cost: eot * steps forward and backward passes per point."""
    if threat.norm != "l2":
        raise BadInput(f"smoothing certifies l2 balls, got a {threat.norm} threat model")
    model = as_model(model, threat.bounds)
    x, y = x.to(model.device, model.dtype), y.to(model.device).long()
    gen = make_generator(seed, model.device)
    plan = Ascent(
        steps=steps,
        step_size=2.5 * threat.eps / steps,
        random_start=False,
        early_stop=False,
        track_best=False,
    )

    def objective(x_rows: Tensor, _row: Tensor) -> tuple[Tensor, None]:
        draws = x_rows.repeat((eot,) + (1,) * (x.dim() - 1))
        noise = torch.randn(draws.shape, generator=gen, device=x.device, dtype=x.dtype)
        probs = F.softmax(model(draws + sigma * noise), 1).view(eot, x.shape[0], -1).mean(0)
        return -probs.gather(1, y[:, None]).clamp_min(1e-12).log()[:, 0], None

    with model.frozen():
        return ascend(objective, threat, x, plan)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Smooth:
    """PREDICT and CERTIFY of Cohen et al. (2019) for a base classifier and noise level."""

    sigma: float  # standard deviation of the Gaussian noise, in input units
    n0: int = 100  # selection samples (CERTIFY's choice of the top class)
    n: int = 10_000  # estimation samples
    alpha: float = 0.001  # failure probability of each answer
    batch_size: int = 1_000  # noisy inputs per forward pass
    seed: int = 0  # seeds the noise

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma, int | float) and math.isfinite(self.sigma)):
            raise BadInput(f"sigma must be a finite number > 0, got {self.sigma!r}")
        if self.sigma <= 0:
            raise BadInput(f"sigma must be > 0, got {self.sigma}")
        for name in ("n0", "n", "batch_size"):
            _check_count(name, getattr(self, name))
        _check_alpha(self.alpha)

    def diagnose(self, procedure: str = "certify") -> list[str]:
        """Why these n and alpha cannot (or can barely) give an answer."""
        if procedure == "predict":
            need = min_n_to_predict(self.alpha)
            if self.n < need:
                return [
                    f"PREDICT with n={self.n} and alpha={self.alpha:g} always abstains: the "
                    f"smallest two-sided p-value is 2^(1-n) = {2 ** (1 - self.n):.3g} > alpha; "
                    f"use n >= {need}"
                ]
            return []
        need = min_n_to_certify(self.alpha)
        if self.n < need:
            return [
                f"CERTIFY with n={self.n} and alpha={self.alpha:g} can never certify: even with "
                f"all n samples on one class pA_lower = alpha^(1/n) = "
                f"{self.alpha ** (1 / self.n):.4f} <= 1/2; every point abstains. Use n >= {need}"
            ]
        top = max_radius(self.sigma, self.n, self.alpha)
        if top < 0.5 * self.sigma:
            return [
                f"with n={self.n} and alpha={self.alpha:g} no certified radius can exceed "
                f"{top:.3g} ({top / self.sigma:.2g} sigma); use a larger n"
            ]
        return []

    def sample_counts(
        self,
        model: Model,
        x: Tensor,
        num: int,
        gen: torch.Generator,
        progress: ProgressFn | None = None,
    ) -> Tensor:
        """Class counts (B, classes) of the base classifier on `num` noisy copies of each
        point. One forward pass per `batch_size` noisy inputs."""
        total = x.shape[0] * num
        counts: Tensor | None = None
        for first in range(0, total, self.batch_size):
            point = torch.arange(first, min(total, first + self.batch_size), device=x.device) // num
            batch = x[point]
            noise = torch.randn(batch.shape, generator=gen, device=x.device, dtype=batch.dtype)
            logits = model(batch + self.sigma * noise)
            classes = logits.shape[1]
            if counts is None:
                counts = torch.zeros(x.shape[0], classes, dtype=torch.long, device=x.device)
            slot = point * classes + logits.argmax(1)
            counts.view(-1).index_add_(0, slot, torch.ones_like(slot))
            if progress is not None:
                progress("smoothing", min(total, first + self.batch_size), total)
        return counts

    def predict(self, model: Model | nn.Module, x: Tensor) -> Tensor:
        """PREDICT: labels (B,), -1 where the test cannot reject a tie at level alpha."""
        for message in self.diagnose("predict"):
            warnings.warn(message, CertificationWarning, stacklevel=2)
        model, x = self._setup(model, x)
        gen = make_generator(self.seed, model.device)
        with torch.no_grad(), model.eval_mode():
            counts = self.sample_counts(model, x, self.n, gen)
        top = counts.topk(min(2, counts.shape[1]), dim=1)
        n_a = top.values[:, 0]
        n_b = top.values[:, 1] if counts.shape[1] > 1 else torch.zeros_like(n_a)
        p_value = binomial_p_value(n_a, n_a + n_b)
        return torch.where(p_value <= self.alpha, top.indices[:, 0], ABSTAIN)

    def certify(
        self, model: Model | nn.Module, x: Tensor, progress: ProgressFn | None = None
    ) -> CertResult:
        """CERTIFY every point of `x`: n0 selection samples, then n estimation samples."""
        notes = self.diagnose("certify")
        for message in notes:
            warnings.warn(message, CertificationWarning, stacklevel=2)
        model, x = self._setup(model, x)
        start = time.perf_counter()
        gen = make_generator(self.seed, model.device)
        with torch.no_grad(), model.eval_mode(), model.counting() as counter:
            counts0 = self.sample_counts(model, x, self.n0, gen)
            counts = self.sample_counts(model, x, self.n, gen, progress)
        choice = counts0.argmax(1)
        pa_lower = lower_confidence_bound(
            counts.gather(1, choice[:, None])[:, 0], self.n, self.alpha
        )
        certified = pa_lower > 0.5
        return CertResult(
            prediction=torch.where(certified, choice, ABSTAIN),
            radius=certified_radius(pa_lower, self.sigma),
            pA_lower=pa_lower,
            counts=counts,
            counts0=counts0,
            sigma=float(self.sigma),
            n0=self.n0,
            n=self.n,
            alpha=float(self.alpha),
            forward=counter.forward,
            seconds=time.perf_counter() - start,
            warnings=tuple(notes),
        )

    def _setup(self, model: Model | nn.Module, x: Tensor) -> tuple[Model, Tensor]:
        model = as_model(model, getattr(model, "bounds", (0.0, 1.0)))
        x = as_tensor(x, "x")
        if not x.is_floating_point() or x.dim() < 2 or x.shape[0] == 0:
            raise BadInput(f"x must be a non-empty float batch (N, ...), got {tuple(x.shape)}")
        return model, x.to(model.device, model.dtype)
