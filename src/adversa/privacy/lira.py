"""The Likelihood Ratio Attack, LiRA (Carlini et al. 2022, "Membership Inference Attacks
From First Principles", arXiv:2112.03570).

M reference models each train on a random half of a pool that contains the candidates, so
each candidate is IN for about M/2 of them and OUT for the rest. For every candidate LiRA
fits Gaussians to the reference models' logit-scaled confidence log(p_y / (1 - p_y)):

- online: N(mu_in, s_in) from the IN models and N(mu_out, s_out) from the OUT models; the
  score is the log likelihood ratio log N(c; mu_in, s_in) - log N(c; mu_out, s_out) of the
  target model's confidence c.
- offline: only the OUT fit; the one-sided test Pr[Z < c], Z ~ N(mu_out, s_out), reported
  as its z-score (c - mu_out) / s_out, which ranks identically and does not saturate.
- fixed variance: one pooled standard deviation for all candidates (IN and OUT separately)
  instead of per-example ones; the paper's choice with few reference models.

The reference models train together as one batch: MLPs (`StackedTraining`, see
`adversa.privacy.stacked`) or, as the paper does, the target's own architecture and recipe
(`ArchTraining`, see `adversa.privacy.arch_stack`). With a mismatched architecture the attack
still works, only less sharply (the IN fit of online LiRA suffers most). Augmented queries
(the paper's flips and shifts) are not implemented.

Cost: M reference trainings (batched; see `train_models`), then one forward pass of the
target and of each reference model per candidate.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from adversa.errors import BadInput, ShapeError
from adversa.model.wrapped import Model
from adversa.privacy.arch_stack import ArchStack, ArchTraining, train_models
from adversa.privacy.membership import (
    MembershipResult,
    check_candidates,
    logit_confidence,
    model_logits,
)
from adversa.privacy.stacked import (
    DEFAULT_TRAINING,
    Progress,
    StackedMLP,
    StackedTraining,
    random_halves,
)

MIN_ONLINE_REFERENCES = 4
_EPS = 1e-6


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class References:
    """Reference models and which candidates each trained on: masks[m, i] = candidate i was
    in model m's training half."""

    net: StackedMLP | ArchStack
    masks: Tensor  # (M, N) bool

    def confidences(self, x: Tensor, y: Tensor) -> Tensor:
        """Logit-scaled confidences (M, N) of every reference model on the candidates."""
        return logit_confidence(self.net.logits(x), y)


def train_references(
    x: Tensor,
    y: Tensor,
    num_models: int,
    training: StackedTraining | ArchTraining = DEFAULT_TRAINING,
    seed: int = 0,
    num_classes: int | None = None,
    progress: Progress | None = None,
) -> References:
    """Train `num_models` models at once (MLPs, or the architecture of an `ArchTraining`),
    each on a random half of the pool (x, y) drawn with `seed`; returns them with their
    membership masks."""
    check_candidates(x, y)
    masks = random_halves(num_models, x.shape[0], seed)
    net = train_models(
        x,
        y,
        masks,
        dataclasses.replace(training, seed=seed + 1),
        num_classes,
        progress,
        f"{num_models} reference models",
    )
    return References(net=net, masks=masks)


def _fit(conf: Tensor, mask: Tensor, fixed_variance: bool) -> tuple[Tensor, Tensor]:
    """Per-candidate mean and std of `conf` (M, N) over the models where `mask` holds."""
    w = mask.to(conf.dtype)
    count = w.sum(0)
    mean = (w * conf).sum(0) / count.clamp_min(1)
    sq = w * (conf - mean) ** 2
    if fixed_variance:
        std = (sq.sum() / (w.sum() - 1).clamp_min(1)).sqrt().expand_as(mean)
    else:
        std = (sq.sum(0) / (count - 1).clamp_min(1)).sqrt()
    return mean, std.clamp_min(_EPS)


def lira_scores(
    target: Tensor,
    reference: Tensor,
    in_mask: Tensor,
    *,
    online: bool = True,
    fixed_variance: bool = False,
) -> Tensor:
    """LiRA scores (N,) from the target's confidences (N,), the reference confidences (M, N)
    and `in_mask` (M, N) (True where the reference model trained on the candidate)."""
    if (
        reference.dim() != 2
        or reference.shape != in_mask.shape
        or target.shape != (reference.shape[1],)
    ):
        raise ShapeError(
            f"need target (N,), reference (M, N) and in_mask (M, N); got {tuple(target.shape)}, "
            f"{tuple(reference.shape)}, {tuple(in_mask.shape)}"
        )
    reference, target = reference.double(), target.double()
    out_mask = ~in_mask.bool()
    need = 1 if fixed_variance else 2
    n_out = int(out_mask.sum(0).min())
    if n_out < need:
        raise BadInput(
            f"LiRA needs >= {need} OUT reference models per candidate, a candidate has {n_out}; "
            "train more reference models or use fixed_variance=True"
        )
    mu_out, sd_out = _fit(reference, out_mask, fixed_variance)
    z_out = (target - mu_out) / sd_out
    if not online:
        return z_out.float()
    n_in = int(in_mask.sum(0).min())
    if n_in < need:
        raise BadInput(
            f"LiRA online needs >= {need} IN reference models per candidate, a candidate has "
            f"{n_in}; train more reference models (e.g. 16) or use fixed_variance=True"
        )
    mu_in, sd_in = _fit(reference, in_mask.bool(), fixed_variance)
    z_in = (target - mu_in) / sd_in
    return (0.5 * (z_out**2 - z_in**2) + sd_out.log() - sd_in.log()).float()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LiRA:
    """Configuration of LiRA; `LiRA(...)(model, x, y)` scores the candidates (x, y).

    The candidates double as the reference pool unless `references` are passed to the call
    (their masks must then index the same candidates)."""

    num_references: int = 16  # reference (shadow) models M
    online: bool = True  # online (IN and OUT fits) or offline (OUT only)
    fixed_variance: bool = False  # one pooled std instead of per-example ones
    training: StackedTraining | ArchTraining = DEFAULT_TRAINING  # how reference models train
    seed: int = 0  # draws the halves and the initialisations

    def __post_init__(self) -> None:
        least = MIN_ONLINE_REFERENCES if self.online else 2
        if self.num_references < least:
            raise BadInput(
                f"num_references must be >= {least} for LiRA "
                f"{'online' if self.online else 'offline'} (each candidate needs enough IN and "
                f"OUT models for a Gaussian fit), got {self.num_references}"
            )

    @property
    def name(self) -> str:
        return (
            "lira-"
            + ("online" if self.online else "offline")
            + ("-fixed" if self.fixed_variance else "")
        )

    def references(
        self,
        x: Tensor,
        y: Tensor,
        num_classes: int | None = None,
        progress: Progress | None = None,
    ) -> References:
        """Train this configuration's reference models on random halves of (x, y)."""
        return train_references(
            x, y, self.num_references, self.training, self.seed, num_classes, progress
        )

    def __call__(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        references: References | None = None,
        progress: Progress | None = None,
    ) -> MembershipResult:
        check_candidates(x, y)
        if references is None:
            references = self.references(x, y, model.num_classes, progress)
        if references.masks.shape != (references.net.num_models, x.shape[0]):
            raise ShapeError(
                f"reference masks {tuple(references.masks.shape)} do not match "
                f"{references.net.num_models} models and {x.shape[0]} candidates"
            )
        with model.counting() as counter:
            target = logit_confidence(model_logits(model, x), y.to(model.device)).cpu()
        scores = lira_scores(
            target,
            references.confidences(x, y),
            references.masks,
            online=self.online,
            fixed_variance=self.fixed_variance,
        )
        return MembershipResult(name=self.name, scores=scores, cost=counter.freeze())
