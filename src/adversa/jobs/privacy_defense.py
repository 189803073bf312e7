"""`privacy-defense` as one library call: a frozen `PrivacyDefensePlan` and
`plan.run(train, test)` -> the content of `defense.json`.

What label smoothing, early stopping and DP-SGD buy against membership inference, and what
they cost in accuracy. Members: the first `members` points of the train split; non-members:
the first `members` of the test split (never trained on); validation for early stopping: the
next `VALIDATION` of the train split; test accuracy on the whole test split.

Example::

    plan = PrivacyDefensePlan(defenses=("none", "dp-sgd"), members=100, epochs=10)
    report = plan.run(load_data("digits", split="train"), load_data("digits", split="test"))
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from adversa.data.dataset import Dataset
from adversa.errors import BadInput, describe, is_integer
from adversa.privacy.defense import DPSGD, TargetTraining, defense_tradeoff
from adversa.privacy.metrics import check_fpr
from adversa.privacy.report import defense_report

DEFENSES = ("none", "label-smoothing", "early-stopping", "dp-sgd")
VALIDATION = 200  # train points after the members, for early stopping


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacyDefensePlan:
    """The training options compared and how each trains; validated on construction."""

    defenses: tuple[str, ...] = DEFENSES  # from DEFENSES, in the order to report
    members: int = 100  # members (and non-members), each
    epochs: int = 40  # training epochs of every option
    batch_size: int = 10  # (expected) batch size
    lr: float = 1e-3  # Adam's learning rate
    label_smoothing: float = 0.3  # for label-smoothing
    noise_multiplier: float = 2.0  # DP-SGD's sigma
    max_grad_norm: float = 1.0  # DP-SGD's clipping norm
    dp_lr: float = 1e-2  # DP-SGD's learning rate
    lira_references: int = 0  # also score with offline LiRA on this many references (0: off)
    fprs: tuple[float, ...] = (0.01, 0.001)  # FPR targets for TPR
    seed: int = 0  # seeds training and the reference halves
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        names = self.defenses
        if isinstance(names, str) or not isinstance(names, tuple | list):
            raise BadInput(f"defenses must be a tuple of names, got {describe(names)}")
        unknown = [n for n in names if n not in DEFENSES]
        if unknown or not names:
            raise BadInput(
                f"--defenses: unknown {unknown or list(names)}; choose from {', '.join(DEFENSES)}"
            )
        object.__setattr__(self, "defenses", tuple(dict.fromkeys(names)))
        for name in ("members", "epochs"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise BadInput(f"{name} must be an integer >= 1, got {describe(value)}")
        if isinstance(self.fprs, str) or not isinstance(self.fprs, tuple | list) or not self.fprs:
            raise BadInput(f"fprs must be a non-empty tuple of numbers, got {describe(self.fprs)}")
        object.__setattr__(self, "fprs", tuple(check_fpr(f, "fpr target") for f in self.fprs))
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")
        self.options()  # each option's own checks

    def options(self) -> dict[str, TargetTraining]:
        """Each training option by name."""
        base = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        base["seed"] = self.seed
        dp = DPSGD(noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm)
        build = {
            "none": lambda: TargetTraining(**base),
            "label-smoothing": lambda: TargetTraining(**base, label_smoothing=self.label_smoothing),
            "early-stopping": lambda: TargetTraining(**base, early_stopping=True),
            "dp-sgd": lambda: TargetTraining(**{**base, "lr": self.dp_lr}, dp=dp),
        }
        return {name: build[name]() for name in self.defenses}

    def run(self, train: Dataset, test: Dataset) -> dict[str, Any]:
        """Train every option on the members of `train`; the content of `defense.json` (its
        `config`: the plan's fields, then `provenance`)."""
        start = time.perf_counter()
        n, data = self.members, self.provenance.get("data", train.name)
        if n + VALIDATION > len(train) or n > len(test):
            raise BadInput(
                f"--members {n}: {data!r} has {len(train)} train and {len(test)} "
                f"test points; need members + {VALIDATION} train and members test points"
            )
        rows = defense_tradeoff(
            (train.x[:n], train.y[:n]),
            (test.x[:n], test.y[:n]),
            (test.x, test.y),
            train.num_classes,
            self.options(),
            validation=(train.x[n : n + VALIDATION], train.y[n : n + VALIDATION]),
            fprs=self.fprs,
            lira_references=self.lira_references,
            seed=self.seed,
        )
        source = (
            f"members: first {n} of the train split of {data}; non-members: first {n} of "
            "its test split"
        )
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields |= {"defenses": list(self.defenses), "fprs": list(self.fprs)}
        config = {**{k: v for k, v in fields.items() if k != "provenance"}, **self.provenance}
        return defense_report(
            rows,
            config=config,
            seed=self.seed,
            seconds=time.perf_counter() - start,
            fprs=self.fprs,
            membership_source=source,
        )
