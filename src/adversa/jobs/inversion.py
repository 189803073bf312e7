"""`invert` (model inversion) as one library call: a frozen `InversionPlan` and
`plan.run(model, train)`.

MIFace (Fredrikson et al. 2015) reconstructs what each class looks like to the model. The
plan's defaults are the recipe that gave recognisable digits on MNIST (docs/privacy.md): the
-log p_y objective, 200 normalised L2 steps (Santurkar et al. 2019) from the training mean
image and from 7 noisy copies of it, averaged, and no TV prior (Mahendran and
Vedaldi 2015; `tv`, `tv_beta` turn it on). The reconstructions are judged by the attacked
model, by an independently trained model (given, or an MLP of another architecture and seed
trained here on the same split) and by the class mean they correlate with most. `run`
returns an `InversionRun` whose `report` is `inversion.json` and whose `write` also renders
`inversion.html`.

Example::

    train, _, source = adversa.jobs.privacy.training_splits("digits-mlp")
    run = InversionPlan(steps=200, inits=("zeros",)).run(model, train)
    run.report["measures"], run.write("out")
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adversa.data.dataset import Dataset
from adversa.errors import BadInput, describe, is_integer
from adversa.model import Model, check_model_accepts
from adversa.privacy.inversion import (
    DEFAULT_STEP_SIZE,
    InversionResult,
    MIFace,
    class_means,
    inversion_measures,
)
from adversa.privacy.report import inversion_report, write_inversion_reports
from adversa.privacy.stacked import StackedTraining, train_stacked

Progress = Any  # the library's progress(description, completed, total) callback
INDEPENDENT_HIDDEN = 64  # width of the independent MLP trained when none is given
INDEPENDENT_STEPS = 200  # its training steps
INDEPENDENT_SEED_OFFSET = 1000  # its seed: the plan's plus this


@dataclasses.dataclass(frozen=True, kw_only=True)
class InversionPlan:
    """MIFace's options and the classes to invert; validated on construction."""

    classes: tuple[int, ...] | None = None  # classes to invert; None: all
    inits: tuple[str, ...] = ("mean",)  # starting points, each inverted
    restarts: int = 8  # starts per init (noisy copies of it), combined by `combine`
    combine: str = "mean"  # "mean": average the restarts' results; "best": lowest cost
    update: str = "l2"  # "l2": normalised steps (Santurkar et al.); "plain": the paper's
    steps: int = 200  # gradient steps
    step_size: float | None = None  # None: 0.02 (l2, RMS share of the range) or 0.1 (plain)
    tv: float = 0.0  # total-variation prior weight
    tv_beta: float = 1.0  # its exponent: 1 = total variation, 2 = smoothness
    gamma: float = 1.0  # stop a sample at this confidence (1: run every step)
    noise: float = 0.1  # restarts' Gaussian noise, as a share of the range
    objective: str = "log"  # "confidence" (1 - p_y, the paper's) or "log" (-log p_y)
    seed: int = 0  # seeds the random init and restarts (and the independent model's training)
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        if self.classes is not None:
            if isinstance(self.classes, str) or not isinstance(self.classes, tuple | list):
                raise BadInput(f"classes must be a tuple of integers, got {describe(self.classes)}")
            if not self.classes or not all(is_integer(c) for c in self.classes):
                raise BadInput(f"classes must be a non-empty tuple of integers, got {self.classes}")
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        object.__setattr__(self, "inits", tuple(self.inits))
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")
        self.attack()  # MIFace's own checks

    def attack(self) -> MIFace:
        return MIFace(
            steps=self.steps,
            step_size=self.step_size,
            update=self.update,
            gamma=self.gamma,
            tv_weight=self.tv,
            tv_beta=self.tv_beta,
            objective=self.objective,
            inits=self.inits,  # type: ignore[arg-type]
            restarts=self.restarts,
            combine=self.combine,
            noise=self.noise,
            seed=self.seed,
        )

    def class_tensor(self, num_classes: int) -> Tensor | None:
        """The classes to invert, checked against the model's `num_classes`."""
        if self.classes is None:
            return None
        if not all(0 <= c < num_classes for c in self.classes):
            raise BadInput(f"classes must lie in [0, {num_classes}), got {list(self.classes)}")
        return torch.tensor(self.classes)

    def run(
        self,
        model: Model,
        train: Dataset,
        independent: Model | None = None,
        progress: Progress | None = None,
        *,
        source: str = "",
        independent_name: str | None = None,
    ) -> InversionRun:
        """Invert `model`, whose training split is `train` (described by `source`), and
        judge the reconstructions with `independent` (None: train an MLP here)."""
        start = time.perf_counter()
        classes = self.class_tensor(train.num_classes)
        what = f"--data {self.provenance.get('data') or train.name}"
        check_model_accepts(model, train.x, data=what)
        if independent is not None:
            check_model_accepts(independent, train.x, data=what)
        result = self.attack()(model, train.input_shape, classes, mean_image=train.x.mean(0))
        if independent is None:  # an MLP of another architecture and seed, on the same split
            independent = independent_mlp(train, self.seed + INDEPENDENT_SEED_OFFSET, progress)
            independent_name = (
                f"MLP ({INDEPENDENT_HIDDEN} hidden) trained by adversa on the same split"
            )
        measures = inversion_measures(result, model, train.x, train.y, independent)
        config = {
            **self.provenance,
            "reference_data": source,
            "classes": result.classes.tolist(),
            "inits": list(self.inits),
            "restarts": self.restarts,
            "combine": self.combine,
            "update": self.update,
            "steps": self.steps,
            "step_size": self.attack().step_size or DEFAULT_STEP_SIZE[self.update],
            "tv": self.tv,
            "tv_beta": self.tv_beta,
            "gamma": self.gamma,
            "noise": self.noise,
            "objective": self.objective,
            "independent": independent_name,
            "seed": self.seed,
        }
        report = inversion_report(
            result, measures, config=config, seed=self.seed, seconds=time.perf_counter() - start
        )
        return InversionRun(report, result, measures, train)


def independent_mlp(train: Dataset, seed: int, progress: Progress | None = None) -> Model:
    """An MLP trained on all of `train` with `seed`: a second opinion on reconstructions."""
    masks = torch.ones(1, len(train), dtype=torch.bool)
    recipe = StackedTraining(hidden=(INDEPENDENT_HIDDEN,), steps=INDEPENDENT_STEPS, seed=seed)
    net = train_stacked(
        train.x, train.y, masks, recipe, train.num_classes, progress, "independent model"
    )
    return Model(net.member(0), num_classes=train.num_classes, name="mlp")


@dataclasses.dataclass(frozen=True, eq=False)
class InversionRun:
    """The report of an inversion, its reconstructions and measures, and the split."""

    report: dict[str, Any]
    result: InversionResult
    measures: dict[str, Any]
    train: Dataset

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write `out/inversion.json` and `out/inversion.html` (reconstructions beside the
        real class means); both paths."""
        train = self.train
        means = class_means(train.x, train.y, train.num_classes)
        names = list(train.class_names) if train.class_names else None
        return write_inversion_reports(
            out, self.report, self.result, means, tuple(train.bounds), names
        )
