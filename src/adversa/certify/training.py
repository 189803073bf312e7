"""Certified training, registered as training-time defenses in `adversa.defenses.DEFENSES`:

- "ibp": interval bound propagation training (Gowal et al. 2018, "On the Effectiveness of
  Interval Bound Propagation for Training Verifiably Robust Models", arXiv:1810.12715).
  loss = kappa * CE(z(x), y) + (1 - kappa) * CE(z_hat, y), where z_hat_j = -m_j is an upper
  bound of z_j - z_y over the eps-ball (m the IBP lower bounds of the margins z_y - z_j, with
  the last layer elided), so z_hat is the worst-case logit vector. After a `warmup` share of
  the run on clean data, eps grows linearly from 0 to `eps` and kappa moves from
  `kappa_start` to `kappa_end` over the next `eps_ramp` share. Cost per batch: one forward pass
  plus IBP (about two forward passes), one backward pass through both.
- "crown-ibp": CROWN-IBP (Zhang et al. 2020, "Towards Stable and Efficient Training of
  Verifiably Robust Neural Networks", arXiv:1906.06316): the margins are
  beta * m_CROWN-IBP + (1 - beta) * m_IBP, beta going from `beta_start` (1) to `beta_end` (0)
  over the ramp; CROWN-IBP's bound is CROWN's backward pass from the margin specification on
  IBP's pre-activation bounds. Extra cost: one backward bound pass with one row per class.
- "gaussian": Gaussian data augmentation for randomized smoothing (Cohen, Rosenfeld & Kolter
  2019, arXiv:1902.02918): CE on x + N(0, sigma^2 I), fresh noise for every batch from the
  batch's seeded generator, no clipping (as the smoothed classifier sees it). Cost per batch:
  one forward and backward pass, plus one forward pass for the clean metrics.

For "ibp" and "crown-ibp", `adv_loss` is CE(z_hat, y) and `adv_correct` the number of points
verified at the current eps. The clean forward pass goes through the module as given (a
DistributedDataParallel wrapper included), and the bounds through its inner module; both
terms enter one backward pass, so DDP reduces the summed gradient. Bounds use BatchNorm's
running statistics (see `adversa.certify.bounds`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.certify.bounds import margins
from adversa.defenses.base import DEFENSES, BatchMetrics, DefenseBase, StepContext
from adversa.defenses.objectives import unwrap
from adversa.errors import BadInput, describe
from adversa.model import Model
from adversa.threat import ThreatModel


def _share(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and 0 <= value <= 1):
        raise BadInput(f"{name} must be in [0, 1], got {value!r}")


def _step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _correct(logits: Tensor, y: Tensor) -> int:
    return int((logits.detach().argmax(1) == y).sum())


@DEFENSES.register("ibp")
@dataclasses.dataclass(frozen=True, kw_only=True)
class IBPTraining(DefenseBase):
    """IBP certified training with Gowal et al.'s eps and kappa schedules."""

    name: ClassVar[str] = "ibp"
    methods: ClassVar[tuple[str, ...]] = ("ibp",)

    threat: ThreatModel  # "linf" or "l2" ball (eps reached at the end of the ramp) and box
    warmup: float = 0.0  # share of the run trained on clean data only (eps = 0)
    eps_ramp: float = 0.5  # share of the run, after warmup, over which eps and kappa move
    kappa_start: float = 1.0  # weight of the clean loss before the ramp
    kappa_end: float = 0.5  # weight of the clean loss after the ramp (Gowal et al.: 0.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.threat, ThreatModel):
            raise BadInput(f"threat must be a ThreatModel, got {describe(self.threat)}")
        if self.threat.norm not in ("linf", "l2"):
            raise BadInput(
                f"defense {self.name!r} supports norms linf, l2, got {self.threat.norm!r}"
            )
        if not math.isfinite(self.threat.eps):
            raise BadInput(f"eps must be a finite number >= 0, got {self.threat.eps!r}")
        for name in ("warmup", "eps_ramp", "kappa_start", "kappa_end"):
            _share(name, getattr(self, name))

    def ball(self) -> ThreatModel:
        return self.threat

    def progress(self, ctx: StepContext) -> float:
        """Where the ramp is, in [0, 1], after this step."""
        done = (ctx.step + 1) / max(1, ctx.total)
        if self.eps_ramp == 0:
            return float(done > self.warmup)
        return min(1.0, max(0.0, (done - self.warmup) / self.eps_ramp))

    def schedule(self, ctx: StepContext) -> dict[str, float]:
        """eps and kappa (and beta for CROWN-IBP) at this step."""
        t = self.progress(ctx)
        kappa = self.kappa_start + (self.kappa_end - self.kappa_start) * t
        return {"eps": self.threat.eps * t, "kappa": kappa}

    def mix(self, found: dict[str, Tensor], schedule: dict[str, float]) -> Tensor:
        return found["ibp"]

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        schedule = self.schedule(ctx)
        kappa = schedule["kappa"]
        logits = module(x)
        clean = F.cross_entropy(logits, y)
        if kappa >= 1:
            _step(optimizer, clean)
            value = float(clean.detach())
            return BatchMetrics(value, value, _correct(logits, y))
        threat = self.threat.with_eps(schedule["eps"])
        methods = tuple(m for m in self.methods if m == "ibp" or schedule.get("beta", 0) > 0)
        margin = self.mix(margins(unwrap(module), x, y, threat, methods), schedule)
        robust = F.cross_entropy(-margin, y)
        loss = kappa * clean + (1 - kappa) * robust
        _step(optimizer, loss)
        worst = margin.detach().scatter(1, y[:, None], math.inf).min(1).values
        return BatchMetrics(
            loss=float(loss.detach()),
            clean_loss=float(clean.detach()),
            clean_correct=_correct(logits, y),
            adv_loss=float(robust.detach()),
            adv_correct=int((worst > 0).sum()),
        )


@DEFENSES.register("crown-ibp")
@dataclasses.dataclass(frozen=True, kw_only=True)
class CROWNIBPTraining(IBPTraining):
    """CROWN-IBP certified training: IBP's schedules plus the beta mixing of the bounds."""

    name: ClassVar[str] = "crown-ibp"
    methods: ClassVar[tuple[str, ...]] = ("ibp", "crown-ibp")

    kappa_end: float = 0.0  # Zhang et al. 2020 end with the robust loss only
    beta_start: float = 1.0  # weight of the CROWN-IBP bound before the ramp
    beta_end: float = 0.0  # weight of the CROWN-IBP bound after the ramp

    def __post_init__(self) -> None:
        super().__post_init__()
        _share("beta_start", self.beta_start)
        _share("beta_end", self.beta_end)

    def schedule(self, ctx: StepContext) -> dict[str, float]:
        out = super().schedule(ctx)
        out["beta"] = self.beta_start + (self.beta_end - self.beta_start) * self.progress(ctx)
        return out

    def mix(self, found: dict[str, Tensor], schedule: dict[str, float]) -> Tensor:
        beta = schedule["beta"]
        if beta <= 0:
            return found["ibp"]
        return beta * found["crown-ibp"] + (1 - beta) * found["ibp"]


@DEFENSES.register("gaussian", aliases=("gaussian-augmentation",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussianAugmentation(DefenseBase):
    """Training on Gaussian-noise copies of each batch, for randomized smoothing."""

    name: ClassVar[str] = "gaussian"

    sigma: float  # noise standard deviation, in input units; certify with the same sigma

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = isinstance(self.sigma, int | float) and math.isfinite(self.sigma)
        if not ok or self.sigma <= 0:
            raise BadInput(f"sigma must be a finite number > 0, got {self.sigma!r}")

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        noise = ctx.draw(
            x,
            lambda batch: torch.randn(
                batch.shape, generator=ctx.gen, device=batch.device, dtype=batch.dtype
            ),
        )
        logits = module(x + self.sigma * noise)
        loss = F.cross_entropy(logits, y)
        _step(optimizer, loss)
        inner = Model(unwrap(module))
        with torch.no_grad(), inner.eval_mode():
            clean_logits = inner(x)
        return BatchMetrics(
            loss=float(loss.detach()),
            clean_loss=float(F.cross_entropy(clean_logits, y)),
            clean_correct=_correct(clean_logits, y),
            adv_loss=float(loss.detach()),
            adv_correct=_correct(logits, y),
        )
