"""Clean-label backdoor with adversarial perturbations (Turner, Tsipras & Madry 2019,
"Label-Consistent Backdoor Attacks", arXiv:1912.02771).

A dirty-label backdoor relabels its poisons, which an inspector sees. Here the poisons are
images of the target class that keep their (correct) label. On their own they teach nothing:
the model classifies them by their content. Turner et al. first make them hard to classify
with a bounded adversarial perturbation (PGD on a surrogate model, maximising the loss of
their true label), then stamp the trigger; to fit them the network leans on the trigger.

Turner et al. perturb within an Linf ball (8/255, 16/255 on CIFAR-10). On MNIST an Linf
perturbation lights up the black background of every poison, a cue the victim learns instead
of the trigger (measured: ASR 0.05 with Linf 0.3 against 0.6-0.7 with L2 4.0, 100 poisons of
2,000 images), so the default is an L2 ball; `norm="linf"` gives the paper's setting. The
default patch is 5x5 (a 3x3 patch reached ASR about 0.4 at the same budget).

The surrogate is `model` when given (any `nn.Module` mapping the data's bounds to logits),
otherwise a small network trained on the clean data (`surrogate.fit_classifier`). The trigger
is the BadNets patch, so `apply_trigger` and `attack_success_rate` apply as for BadNets.

Cost: `steps` forward and backward passes over the poisons, plus `surrogate_epochs` passes
over the data when the surrogate is trained here.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adversa.attacks.gradient import Ascent, ascend
from adversa.checks import check_config_types
from adversa.data.dataset import Dataset
from adversa.errors import BadInput, describe
from adversa.model.wrapped import frozen
from adversa.poisoning.backdoor import CORNERS, badnets_trigger
from adversa.poisoning.base import (
    POISONS,
    PoisonedSet,
    apply_trigger,
    check_rate,
    check_target,
    in_data_box,
    settings,
)
from adversa.poisoning.surrogate import fit_classifier
from adversa.rng import make_generator
from adversa.threat import ThreatModel

__all__ = ["CleanLabel", "pgd_away"]

L2_BALL = ThreatModel(norm="l2", eps=4.0)  # clean-label's default ball (see the notes on MNIST)


def pgd_away(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    steps: int,
    step_size: float,
    gen: torch.Generator | None = None,
    batch_size: int = 256,
) -> Tensor:
    """PGD that maximises the cross-entropy of `y` under `model` (frozen, eval mode) within
    `threat`: the template `attacks.gradient.ascend` with the threat model's steepest step
    (Linf: signed steps; L2: normalised-gradient steps), the last iterate of every point, from
    a random start drawn from `gen` when given, else from `x`. Batched; returns a detached
    tensor."""
    plan = Ascent(
        steps=steps,
        step_size=step_size,
        random_start=gen is not None,
        early_stop=False,
        track_best=False,
    )
    out = []
    with frozen(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]

            def away(x_rows: Tensor, _row: Tensor, yb: Tensor = yb) -> tuple[Tensor, None]:
                return F.cross_entropy(model(x_rows), yb, reduction="none"), None

            out.append(ascend(away, threat, xb, plan, gen=gen))
    return torch.cat(out)


@POISONS.register("clean-label", aliases=("label-consistent", "turner"))
@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class CleanLabel:
    """Label-consistent backdoor (Turner et al. 2019): `rate` * N target-class images,
    pushed away from their class by PGD inside `threat` (its eps in the data's units, its box
    the data's), then stamped with a BadNets patch. Labels are never changed; `rate` * N must
    not exceed the target class's size."""

    name = "clean-label"
    rate: float = 0.05  # share of the whole training set; every poison is a target-class image
    target_class: int = 0
    threat: ThreatModel = L2_BALL  # the perturbation's ball, "l2" or "linf" (module notes)
    steps: int = 40  # PGD steps on the surrogate
    step_size: float | None = None  # None: 2.5 * eps / steps
    patch_size: int = 5
    corner: str = "bottom-right"
    margin: int = 1
    model: nn.Module | None = dataclasses.field(default=None, repr=False)  # surrogate
    surrogate_epochs: int = 4  # training passes when no model is given
    random_start: bool = False  # start PGD at a random point of the ball instead of the image

    def __post_init__(self) -> None:
        check_config_types(self, f"poisoning attack {self.name!r}")
        if not isinstance(self.threat, ThreatModel):
            raise BadInput(f"threat must be a ThreatModel, got {describe(self.threat)}")
        check_rate(self.rate)
        if self.threat.norm not in ("l2", "linf"):
            raise BadInput(f"norm must be 'l2' or 'linf', got {self.threat.norm!r}")
        if self.steps < 1 or self.surrogate_epochs < 1:
            raise BadInput(
                f"steps and surrogate_epochs must be >= 1, got {self.steps} and "
                f"{self.surrogate_epochs}"
            )
        if self.step_size is not None and not self.step_size > 0:
            raise BadInput(f"step_size must be > 0, got {self.step_size}")
        if self.corner not in CORNERS:
            raise BadInput(f"corner must be one of {', '.join(CORNERS)}, got {self.corner!r}")
        if self.model is not None and not isinstance(self.model, nn.Module):
            raise BadInput(f"model must be a torch.nn.Module, got {type(self.model).__name__}")

    def __call__(self, dataset: Dataset, seed: int = 0) -> PoisonedSet:
        check_target(self.target_class, dataset)
        trigger = badnets_trigger(
            dataset.input_shape, self.patch_size, self.corner, self.margin, dataset.bounds
        )
        pool = torch.nonzero(dataset.y == self.target_class).flatten()
        k = round(self.rate * len(dataset))
        if k < 1:
            raise BadInput(f"rate {self.rate} poisons no sample of {len(dataset)}")
        if k > pool.numel():
            raise BadInput(
                f"rate {self.rate} asks for {k} poisons, class {self.target_class} has only "
                f"{pool.numel()} samples (clean-label poisons come from the target class)"
            )
        gen = make_generator(seed)
        idx = pool[torch.randperm(pool.numel(), generator=gen)[:k]].sort().values
        model = self.model
        if model is None:
            model = fit_classifier(
                dataset.x, dataset.y, dataset.num_classes, epochs=self.surrogate_epochs, seed=seed
            )
        threat = in_data_box(self.threat, dataset)
        step_size = self.step_size or 2.5 * threat.eps / self.steps
        start = gen if self.random_start else None
        x_adv = pgd_away(
            model, dataset.x[idx], dataset.y[idx], threat, self.steps, step_size, start
        )
        x = dataset.x.clone()
        x[idx] = apply_trigger(x_adv, trigger).clamp(*dataset.bounds)
        meta = {"attack": self.name, **settings(self), "seed": seed}
        return PoisonedSet(x, dataset.y.clone(), idx, trigger, self.target_class, meta)
