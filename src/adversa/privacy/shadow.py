"""Shadow-model membership inference (Shokri et al. 2017, "Membership Inference Attacks
Against Machine Learning Models", arXiv:1610.05820).

M shadow models train (together, as a `StackedMLP`, or with the target's architecture and
recipe as an `ArchStack` when `training` is an `ArchTraining`) on random halves of a shadow
pool drawn from the target's data distribution but disjoint from the candidates. Their
outputs on the pool, labelled IN or OUT by the halves, train one attack classifier per class
(again one stack, one small MLP per class) on the log-softmax vector; a candidate (x, y) is
scored by class y's attack model as logit(IN) - logit(OUT) of the target's output on x.

Cost: M shadow trainings and C attack trainings (both batched), one target forward pass per
candidate.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.errors import BadInput
from adversa.model.wrapped import Model
from adversa.privacy.arch_stack import ArchTraining, train_models
from adversa.privacy.membership import MembershipResult, check_candidates, model_logits
from adversa.privacy.stacked import (
    DEFAULT_TRAINING,
    Progress,
    StackedTraining,
    random_halves,
    train_stacked,
)

ATTACK_TRAINING = StackedTraining(hidden=(64,), steps=300, lr=1e-2)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ShadowAttack:
    """Configuration of the shadow-model attack; call with the target, the candidates and a
    disjoint shadow pool (x_shadow, y_shadow)."""

    num_shadows: int = 16  # shadow models
    training: StackedTraining | ArchTraining = DEFAULT_TRAINING  # how shadow models train
    attack_training: StackedTraining = ATTACK_TRAINING
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_shadows < 1:
            raise BadInput(f"num_shadows must be >= 1, got {self.num_shadows}")

    name = "shadow"

    def __call__(
        self,
        model: Model,
        x: Tensor,
        y: Tensor,
        x_shadow: Tensor,
        y_shadow: Tensor,
        progress: Progress | None = None,
    ) -> MembershipResult:
        check_candidates(x, y)
        check_candidates(x_shadow, y_shadow)
        num_classes = int(model.num_classes or int(torch.cat([y, y_shadow]).max()) + 1)
        masks = random_halves(self.num_shadows, x_shadow.shape[0], self.seed)
        shadows = train_models(
            x_shadow,
            y_shadow,
            masks,
            dataclasses.replace(self.training, seed=self.seed + 1),
            num_classes,
            progress,
            f"{self.num_shadows} shadow models",
        )
        features = torch.log_softmax(shadows.logits(x_shadow), -1).flatten(0, 1)  # (M*N, C)
        labels = masks.flatten().long()  # IN = 1
        classes = y_shadow.repeat(self.num_shadows)
        per_class = classes.unsqueeze(0) == torch.arange(num_classes).unsqueeze(1)
        if bool((per_class.sum(1) == 0).any()):
            raise BadInput("the shadow pool must hold every class at least once")
        attack = train_stacked(
            features,
            labels,
            per_class,
            dataclasses.replace(self.attack_training, seed=self.seed + 2),
            2,
            progress,
            "attack models",
        )
        with model.counting() as counter:
            target = torch.log_softmax(model_logits(model, x), -1).cpu()
        out = attack.logits(target)  # (C, N, 2)
        mine = out.gather(0, y.cpu().view(1, -1, 1).expand(1, -1, 2)).squeeze(0)
        return MembershipResult(
            name=self.name, scores=mine[:, 1] - mine[:, 0], cost=counter.freeze()
        )
