"""Adversarial training with a multi-step adversary: PGD-AT, TRADES and MART.

Each trains on points an adversary found inside a ball around the batch (`BallDefense`: a
`threat: ThreatModel` and an optional linear eps ramp over the first `eps_ramp` share of the
run). The adversary is `objectives.inner_max` (the papers' PGD: every point, every step, eval
mode, the threat model's projection), started from draws of `ctx.gen` taken through
`ctx.draw`, so a resumed run draws the same starts and K data-parallel processes draw those
of one.
The single-step variants are in `fast.py` (FGSM-RS) and `free.py` (free adversarial training).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.defenses.base import DEFENSES, BatchMetrics, DefenseBase, StepContext
from adversa.defenses.objectives import (
    ce_value,
    check_finite,
    check_share,
    correct,
    inner_max,
    ramped,
    step,
    train_on_adversarial,
    unwrap,
)
from adversa.errors import describe, require
from adversa.model import Model
from adversa.threat import NORMS, ThreatModel


@dataclasses.dataclass(frozen=True, kw_only=True)
class BallDefense(DefenseBase):
    """Fields shared by the defenses that train against an eps-ball adversary."""

    name: ClassVar[str] = "ball"
    norms: ClassVar[tuple[str, ...]] = NORMS

    threat: ThreatModel  # the ball the adversary searches (eps after the ramp), and the box
    eps_ramp: float = 0.0  # share of the run over which eps grows linearly from ~0 to eps

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.threat, ThreatModel),
            f"defense {self.name!r}: threat must be a ThreatModel, got {describe(self.threat)}",
        )
        require(
            self.threat.norm in self.norms,
            f"defense {self.name!r} supports norms {', '.join(self.norms)}, "
            f"got {self.threat.norm!r}",
        )
        require(not self.threat.targeted, f"defense {self.name!r} trains untargeted")
        check_finite("eps", self.threat.eps)
        check_share("eps_ramp", self.eps_ramp)

    def ball(self) -> ThreatModel:
        return self.threat

    def threat_at(self, ctx: StepContext) -> ThreatModel:
        """The threat model at this step: eps after the ramp."""
        if self.eps_ramp == 0:
            return self.threat
        return self.threat.with_eps(ramped(self.threat.eps, self.eps_ramp, ctx))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Iterative(BallDefense):
    steps: int = 10  # steps of the inner maximisation
    step_size: float | None = None  # None: 2.5 * eps / steps, eps after the ramp

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.steps, int) and self.steps >= 1, f"steps must be >= 1, got {self.steps}"
        )
        if self.step_size is not None:
            check_finite("step_size", self.step_size, positive=True)

    def size(self, threat: ThreatModel) -> float:
        return self.step_size if self.step_size is not None else 2.5 * threat.eps / self.steps


@dataclasses.dataclass(frozen=True, kw_only=True)
class _KLWeighted(_Iterative):
    """TRADES and MART: a clean term plus `beta` times a KL robustness term."""

    beta: float = 6.0  # weight of the KL term (TRADES: 1/lambda; MART: misclassification-aware)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_finite("beta", self.beta, positive=True)


def _small_noise(x: Tensor, gen: torch.Generator) -> Tensor:
    """x + 0.001 N(0, 1): the start of the TRADES and MART adversaries."""
    return x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def ce_objective(y: Tensor):
    return lambda logits: F.cross_entropy(logits, y, reduction="none")


@DEFENSES.register("pgd-at", aliases=("madry",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class PGDAT(_Iterative):
    """PGD adversarial training: train on the PGD adversary's points only.

    Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", arXiv:1706.06083. Minimises CE(f(x'), y) over the weights, x' from
    `steps` steps of PGD on the cross-entropy from a uniform random start in the ball. Clean
    metrics come from one extra forward pass in eval mode.

    Cost per batch: `steps` + 1 forward and backward passes, plus one forward pass.
    """

    name: ClassVar[str] = "pgd-at"

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        threat = self.threat_at(ctx)
        start = ctx.draw(x, lambda batch: threat.random_start(batch, ctx.gen))
        x_adv = inner_max(
            module,
            threat,
            x,
            ce_objective(y),
            start=start,
            steps=self.steps,
            step_size=self.size(threat),
        )
        return train_on_adversarial(module, optimizer, x, x_adv, y)


def _kl(p: Tensor, log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-sample KL(p || q) from p, log p and log q (B, K) -> (B,)."""
    return (p * (log_p - log_q)).sum(1)


@DEFENSES.register("trades")
@dataclasses.dataclass(frozen=True, kw_only=True)
class TRADES(_KLWeighted):
    """TRADES: clean cross-entropy plus beta times the KL to the worst point in the ball.

    Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019, "Theoretically Principled Trade-off
    between Robustness and Accuracy", arXiv:1901.08573.

        loss = CE(f(x), y) + beta * KL(p(x) || p(x'))

    x' maximises that KL in the ball: `steps` steps of PGD on the KL from x + 0.001 N(0, 1),
    with p(x) fixed from one eval-mode pass. The clean and adversarial batches go through the
    module in one forward pass (a single graph, which DistributedDataParallel needs; with
    BatchNorm the batch statistics then span both halves).

    Cost per batch: `steps` forward and backward passes and one forward pass for the adversary,
    then one forward and backward pass on the 2B clean and adversarial points.
    """

    name: ClassVar[str] = "trades"

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        threat = self.threat_at(ctx)
        inner = Model(unwrap(module))
        with torch.no_grad(), inner.eval_mode():
            p_clean = F.softmax(inner(x), dim=1)
        log_clean = p_clean.clamp_min(1e-12).log()
        x_adv = inner_max(
            module,
            threat,
            x,
            lambda logits: _kl(p_clean, log_clean, F.log_softmax(logits, dim=1)),
            start=ctx.draw(x, lambda batch: _small_noise(batch, ctx.gen)),
            steps=self.steps,
            step_size=self.size(threat),
        )
        logits_clean, logits_adv = module(torch.cat([x, x_adv])).split(len(x))
        clean_loss = F.cross_entropy(logits_clean, y)
        log_p = F.log_softmax(logits_clean, dim=1)
        robust = _kl(log_p.exp(), log_p, F.log_softmax(logits_adv, dim=1)).mean()
        loss = clean_loss + self.beta * robust
        step(optimizer, loss)
        return BatchMetrics(
            loss=float(loss.detach()),
            clean_loss=float(clean_loss.detach()),
            clean_correct=correct(logits_clean, y),
            adv_loss=ce_value(logits_adv, y),
            adv_correct=correct(logits_adv, y),
        )


@DEFENSES.register("mart")
@dataclasses.dataclass(frozen=True, kw_only=True)
class MART(_KLWeighted):
    """MART: boosted cross-entropy on x' plus a KL term weighted toward misclassified points.

    Wang, Zou, Yi, Bailey, Ma & Gu 2020, "Improving Adversarial Robustness Requires
    Revisiting Misclassified Examples", ICLR.

        loss = BCE(p(x'), y) + beta * mean(KL(p(x) || p(x')) * (1 - p_y(x)))

    with the boosted cross-entropy BCE = -log p_y(x') - log(1 - max_{k != y} p_k(x')), and x'
    from `steps` steps of PGD on the cross-entropy from x + 0.001 N(0, 1), as in the reference
    code. Clean and adversarial batches share one forward pass, as in TRADES.

    Cost per batch: `steps` forward and backward passes for the adversary, then one forward and
    backward pass on the 2B clean and adversarial points.
    """

    name: ClassVar[str] = "mart"

    def train_batch(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: Tensor,
        y: Tensor,
        ctx: StepContext,
    ) -> BatchMetrics:
        threat = self.threat_at(ctx)
        x_adv = inner_max(
            module,
            threat,
            x,
            ce_objective(y),
            start=ctx.draw(x, lambda batch: _small_noise(batch, ctx.gen)),
            steps=self.steps,
            step_size=self.size(threat),
        )
        logits_clean, logits_adv = module(torch.cat([x, x_adv])).split(len(x))
        p_adv = F.softmax(logits_adv, dim=1)
        top2 = p_adv.topk(2, dim=1).indices
        runner_up = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
        boosted = F.cross_entropy(logits_adv, y) + F.nll_loss(
            (1.0001 - p_adv + 1e-12).log(), runner_up
        )
        p_clean = F.softmax(logits_clean, dim=1)
        true_prob = p_clean.gather(1, y[:, None]).squeeze(1)
        kl = _kl(p_clean, (p_clean + 1e-12).log(), (p_adv + 1e-12).log())
        loss = boosted + self.beta * (kl * (1.0000001 - true_prob)).mean()
        step(optimizer, loss)
        return BatchMetrics(
            loss=float(loss.detach()),
            clean_loss=ce_value(logits_clean, y),
            clean_correct=correct(logits_clean, y),
            adv_loss=ce_value(logits_adv, y),
            adv_correct=correct(logits_adv, y),
        )
