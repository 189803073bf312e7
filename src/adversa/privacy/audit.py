"""One membership-inference audit: run the chosen attacks on the same candidates (known
members and non-members of the target's training set) and return their scores, always with
the global loss-threshold baseline (Yeom et al. 2018) first.

Attacks: "threshold" (Yeom et al. 2018), "shadow" (Shokri et al. 2017; needs a shadow pool
disjoint from the candidates), "lira" (Carlini et al. 2022; online and offline from the same
reference models, which train on random halves of the candidates), "boundary" (label-only
distance to the decision boundary, Choquette-Choo et al. 2021), "all".

Cost: one target forward pass per candidate per attack; `num_shadows` shadow models (shadow)
and `num_shadows` reference models (lira), each trained as one batched stack (MLPs, or the
target's architecture with an `ArchTraining`); the boundary attack's evasion cost per
candidate (see `BoundaryDistance`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.errors import BadInput
from adversa.model.wrapped import Model
from adversa.privacy.arch_stack import ArchTraining
from adversa.privacy.boundary import BoundaryDistance
from adversa.privacy.lira import LiRA
from adversa.privacy.membership import MembershipResult, ThresholdAttack, check_candidates
from adversa.privacy.shadow import ShadowAttack
from adversa.privacy.stacked import DEFAULT_TRAINING, Progress, StackedTraining

MEMBERSHIP_ATTACKS: tuple[str, ...] = ("threshold", "shadow", "lira", "boundary", "all")
DEFAULT_BOUNDARY = BoundaryDistance()


def parse_membership_attacks(text: str) -> tuple[str, ...]:
    """'lira' or 'threshold,shadow' or 'all' -> a tuple of attack names (validated)."""
    names = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    bad = [n for n in names if n not in MEMBERSHIP_ATTACKS]
    if not names or bad:
        raise BadInput(
            f"attack must be one or more of {', '.join(MEMBERSHIP_ATTACKS)}, got {text!r}"
        )
    if "all" in names:
        return MEMBERSHIP_ATTACKS[:-1]
    return tuple(dict.fromkeys(names))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MembershipAudit:
    """Which attacks to run and how their shadow / reference models train."""

    attacks: tuple[str, ...] = ("threshold", "lira")
    num_shadows: int = 16  # shadow models (shadow) and reference models (lira)
    training: StackedTraining | ArchTraining = DEFAULT_TRAINING  # shadow / reference recipe
    fixed_variance: bool = False  # LiRA: one pooled std (better with few references)
    boundary: BoundaryDistance = DEFAULT_BOUNDARY  # how the boundary attack measures
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [a for a in self.attacks if a not in MEMBERSHIP_ATTACKS[:-1]]
        if not self.attacks or bad:
            raise BadInput(
                f"attacks must be among {', '.join(MEMBERSHIP_ATTACKS[:-1])}; got {self.attacks}"
            )
        if self.num_shadows < 1:
            raise BadInput(f"shadows must be >= 1, got {self.num_shadows}")
        if "lira" in self.attacks:  # fail before any training: too few for online LiRA
            LiRA(num_references=self.num_shadows, fixed_variance=self.fixed_variance)

    def __call__(
        self,
        model: Model,
        members: tuple[Tensor, Tensor],
        nonmembers: tuple[Tensor, Tensor],
        shadow_pool: tuple[Tensor, Tensor] | None = None,
        progress: Progress | None = None,
    ) -> tuple[list[MembershipResult], Tensor]:
        """(results, is_member): the baseline first, then each attack; `is_member` (N,) bool
        labels the candidates cat(members, nonmembers)."""
        check_candidates(*members)
        check_candidates(*nonmembers)
        if "shadow" in self.attacks and shadow_pool is None:
            raise BadInput(
                "the shadow attack needs a shadow pool disjoint from the candidates "
                "(fewer candidates, or --shadow-data)"
            )
        x = torch.cat([members[0], nonmembers[0]])
        y = torch.cat([members[1], nonmembers[1]])
        is_member = torch.arange(len(y)) < len(members[1])
        results = [ThresholdAttack()(model, x, y)]
        if "shadow" in self.attacks and shadow_pool is not None:
            attack = ShadowAttack(
                num_shadows=self.num_shadows, training=self.training, seed=self.seed
            )
            results.append(attack(model, x, y, *shadow_pool, progress=progress))
        if "lira" in self.attacks:
            online = LiRA(
                num_references=self.num_shadows,
                training=self.training,
                fixed_variance=self.fixed_variance,
                seed=self.seed,
            )
            refs = online.references(x, y, model.num_classes, progress)
            results.append(online(model, x, y, refs))
            offline = dataclasses.replace(online, online=False)
            results.append(offline(model, x, y, refs))
        if "boundary" in self.attacks:
            results.append(self.boundary(model, x, y))
        return results, is_member
