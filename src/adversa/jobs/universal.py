"""`universal` as one library call: a frozen `UniversalPlan` and `plan.run(model, train, test)`
-> a `UniversalOutcome` (the content of report.json, the perturbation and example images).

A universal perturbation (`adversa.physical.universal`, method "sgd-uap" or "uap") is
trained on `n` points of the training split and measured on `n_eval` held-out points: the
fooling rate (prediction changed from the clean prediction), the accuracy drop, both per true
class, and a random perturbation of the same norm as the control. With `transforms` (an EOT
spec such as "rotate=10,noise=0.02"), sgd-uap trains under random transformations and the
held-out points are seen under fresh draws.

Example::

    plan = UniversalPlan(norm="linf", eps=0.2, method="sgd-uap", n=2000)
    outcome = plan.run(model, load_data("mnist", split="train"), load_data("mnist"))
    outcome.report["fooling_rate"]
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from adversa.data.dataset import Dataset
from adversa.errors import BadInput, ShapeError, describe, is_integer, is_real
from adversa.model import Model
from adversa.physical.transforms import Transforms
from adversa.physical.universal import UNIVERSAL_METHODS, UNIVERSAL_NORMS, UniversalBase
from adversa.physical.universal_eval import evaluate_universal
from adversa.rng import make_generator
from adversa.threat import ThreatModel
from adversa.versions import versions

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class UniversalOutcome:
    """`report` (report.json's content), the `perturbation` (one input's shape) and up to
    `UniversalPlan.examples` held-out `examples` (clean and perturbed images, labels and
    predictions) for the HTML page."""

    report: dict[str, Any]
    perturbation: Tensor
    examples: dict[str, Tensor]


@dataclasses.dataclass(frozen=True, kw_only=True)
class UniversalPlan:
    """Which universal perturbation to train, on how many points, and how to measure it."""

    norm: str
    eps: float
    method: str = "sgd-uap"  # a name in UNIVERSAL_METHODS
    n: int = 4000  # training points (a seeded sample of the training split)
    n_eval: int = 1000  # held-out points (a seeded sample of the held-out split)
    epochs: int | None = None  # sgd-uap epochs / uap passes (None: the method's default)
    batch_size: int = 128
    restarts: int = 1  # sgd-uap: perturbations trained side by side, the best one kept
    transforms: str = "none"  # EOT spec (`Transforms.parse`), sgd-uap only
    examples: int = 8  # held-out examples shown in the HTML page
    seed: int = 0
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", UNIVERSAL_METHODS.canonical(self.method))
        if self.norm not in UNIVERSAL_NORMS:
            raise BadInput(f"--norm must be one of {', '.join(UNIVERSAL_NORMS)}, got {self.norm!r}")
        if not is_real(self.eps) or not 0 < float(self.eps) < math.inf:
            raise BadInput(f"--eps must be a finite number > 0, got {describe(self.eps)}")
        for name in ("n", "n_eval", "batch_size", "restarts", "examples", "epochs"):
            value = getattr(self, name)
            if (value is not None or name != "epochs") and not (is_integer(value) and value >= 1):
                flag = "n (--n-points)" if name == "n" else name.replace("_", "-")
                raise BadInput(f"--{flag} must be an integer >= 1, got {describe(value)}")
        Transforms.parse(self.transforms)
        if self.restarts > 1 and self.method != "sgd-uap":
            raise BadInput(
                f"--restarts {self.restarts}: only sgd-uap has restarts, not {self.method}"
            )
        # the method's own checks, on a box wide enough for any eps (the real bounds and the
        # limit they set on eps are checked in `run`)
        box = (0.0, max(1.0, 2.0 * float(self.eps)))
        self.attack(ThreatModel(norm=self.norm, eps=self.eps, bounds=box))  # type: ignore[arg-type]

    def threat(self, bounds: tuple[float, float], dim: int) -> ThreatModel:
        """The threat for inputs of `dim` features in `bounds`; `--eps` too large for them is
        `BadInput`."""
        lo, hi = bounds
        limit = (hi - lo) * (1.0 if self.norm == "linf" else math.sqrt(dim))
        if self.eps > limit:
            raise BadInput(
                f"--eps {self.eps:g} is larger than the bounds allow: an {self.norm} perturbation "
                f"of {dim} features in [{lo:g}, {hi:g}] cannot exceed {limit:g}"
            )
        return ThreatModel(norm=self.norm, eps=self.eps, bounds=bounds)  # type: ignore[arg-type]

    def attack(self, threat: ThreatModel) -> UniversalBase:
        """The configured method for `threat`."""
        transforms = Transforms.parse(self.transforms)
        options: dict[str, Any] = {"threat": threat, "seed": self.seed}
        options["batch_size"] = self.batch_size
        if not transforms.is_identity:
            options["transforms"] = transforms
        if self.restarts > 1:
            options["restarts"] = self.restarts
        if self.epochs is not None:
            options["epochs" if self.method == "sgd-uap" else "max_passes"] = self.epochs
        return UNIVERSAL_METHODS.get(self.method, **options)

    def run(
        self, model: Model, train: Dataset, test: Dataset, progress: Progress | None = None
    ) -> UniversalOutcome:
        """Train on a sample of `train`, measure on a sample of `test` (held out)."""
        start = time.perf_counter()
        if train.input_shape != test.input_shape:
            raise ShapeError(
                f"--data: training inputs {train.input_shape} and held-out inputs "
                f"{test.input_shape} differ"
            )
        threat = self.threat(model.bounds, math.prod(test.input_shape))
        transforms = Transforms.parse(self.transforms)
        if not transforms.is_identity and len(test.input_shape) != 3:
            raise BadInput(
                f"--transforms {self.transforms}: transformations need images (C, H, W), "
                f"the data's inputs have shape {test.input_shape}"
            )
        attack = self.attack(threat)
        x_train = sample(train, self.n, self.seed).x.to(model.device)
        held = sample(test, self.n_eval, self.seed + 1)
        result = attack(model, x_train, progress)
        evaluation = evaluate_universal(
            model,
            result.perturbation,
            held.x,
            held.y,
            threat=threat,
            seed=self.seed,
            transforms=None if transforms.is_identity else transforms,
        )
        v = result.perturbation.cpu()
        k = min(self.examples, len(held))
        examples = {
            "clean": held.x[:k],
            "perturbed": threat.clip(held.x[:k] + v),
            "label": held.y[:k],
            "clean_pred": evaluation.clean_pred[:k].cpu(),
            "perturbed_pred": evaluation.adv_pred[:k].cpu(),
        }
        summary = evaluation.summary()
        report = {
            "model": model.name,
            "data": {"train": train.name, "held_out": test.name},
            "method": self.method,
            "norm": self.norm,
            "eps": self.eps,
            **summary,
            "train_fooling_rate": result.train_fooling_rate,
            "history": result.history,
            "passes": result.passes,
            "perturbation_norm": {
                "linf": float(v.abs().max()),
                "l2": float(torch.linalg.vector_norm(v)),
            },
            "n_train": int(x_train.shape[0]),
            "cost": {**result.cost.to_dict(), "evaluation_forward": 3 * len(held)},
            "transforms": transforms.spec(),
            "class_names": list(test.class_names) if test.class_names else None,
            "warnings": _warnings(summary),
        }
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # the command line's options, with the plan's parsed values over the raw strings
        config = {**self.provenance, **{k: v for k, v in fields.items() if k != "provenance"}}
        report |= {
            "config": config,
            "seed": self.seed,
            "versions": versions(),
            "seconds": time.perf_counter() - start,
        }
        return UniversalOutcome(report=report, perturbation=v, examples=examples)


def sample(data: Dataset, n: int, seed: int) -> Dataset:
    """`n` points of `data` drawn without replacement with `seed` (all of them, shuffled,
    when it has fewer): splits are often sorted by class, so the first n would not do."""
    order = torch.randperm(len(data), generator=make_generator(seed))
    return data.subset(order[:n])


def split_held_out(data: Dataset, seed: int, held_out: float = 0.5) -> tuple[Dataset, Dataset]:
    """(train, held-out) parts of one dataset, a seeded shuffle split by `held_out`, for data
    without a split of its own (a user's file)."""
    if len(data) < 2:
        raise BadInput(f"--data: {data.name!r} has {len(data)} points; at least 2 are needed")
    order = torch.randperm(len(data), generator=make_generator(seed))
    cut = min(len(data) - 1, max(1, round(len(data) * (1 - held_out))))
    return data.subset(order[:cut]), data.subset(order[cut:])


def _warnings(summary: dict[str, Any]) -> list[str]:
    out = []
    if summary["fooling_rate"] <= summary["baseline"]["fooling_rate"]:
        out.append(
            "the universal perturbation fools no more held-out points than a random "
            "perturbation of the same norm: the attack failed or eps is too small"
        )
    if summary["clean_accuracy"] < 0.5:
        out.append(
            f"clean accuracy on the held-out points is {100 * summary['clean_accuracy']:.1f}%: "
            "check that the model and the data match"
        )
    return out
