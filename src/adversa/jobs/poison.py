"""`poison`, `backdoor-eval` and `inspect-data` as library calls.

- `PoisonPlan(attack=..., rate=..., ...).run(train)` poisons a training set; `PoisonRun.write`
  writes `poisoned.npz` (x, y, poisoned_idx), `trigger.npz` (pattern, mask) and
  `manifest.json`, the directory `adversa train --data DIR/poisoned.npz` and `Backdoor.read`
  take.
- `Backdoor.read(DIR)` reads such a directory back; `measure(model, test)` gives the clean
  accuracy and attack success rate (ASR) of a model on test data stamped with its trigger.
  `backdoor_summary` (for `evaluate --backdoor`) lives in `adversa.jobs.backdoor`.
- `InspectPlan(detector=..., retrain=...).run(model, train, source)` scores training samples
  for poisoning; with `retrain`, a fresh small network (`adversa.poisoning.surrogate.
  fit_classifier`) is trained without the flagged samples and the backdoor's metrics are
  reported for the given model ("before") and the retrained one ("after"). With
  `detector="strip"` it screens test inputs instead (`STRIP.screen` on the test split of the
  poison's data, half of it triggered) and reports STRIP's ROC AUC.
- `write_inspect`, `write_backdoor_report` and `PoisonRun.write` write the JSON and the
  `report.html` of each command (`adversa.poisoning.html`), atomically.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversa.checks import check_in_bounds
from adversa.data import load_data
from adversa.data.dataset import Dataset
from adversa.errors import BadInput, describe, is_integer
from adversa.io import atomic_write_bytes, atomic_write_text
from adversa.jobs.backdoor import backdoor_metrics, read_manifest, read_trigger
from adversa.jobs.checks import check_fits
from adversa.model import Model
from adversa.poisoning import POISONS, STRIP, PoisonAttack, PoisonedSet, Trigger, get_detector
from adversa.poisoning.html import backdoor_html, inspect_html, poison_html, triggered_examples
from adversa.poisoning.surrogate import fit_classifier
from adversa.render import jsonable
from adversa.safeload import load_npz

STRIP_FPR = 0.05  # share of clean inputs STRIP may flag: sets its threshold
POISON_OPTIONS = ("target_class", "source_class", "mode", "patch_size", "alpha", "eps")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PoisonPlan:
    """A poisoning attack from the `POISONS` registry and its options (None: the attack's
    default, or not an option of it). Validated on construction by the attack's config."""

    attack: str  # registry name: badnets, blend, clean-label, label-flip, ...
    rate: float | None = None  # share of the training samples poisoned, in (0, 1)
    target_class: int | None = None  # backdoor / targeted-flip target
    source_class: int | None = None  # targeted label flipping source
    mode: str | None = None  # label-flip mode: random, targeted, loss
    patch_size: int | None = None  # badnets patch side
    alpha: float | None = None  # blend weight of the trigger
    eps: float | None = None  # clean-label: radius of the PGD perturbation
    seed: int = 0  # seeds the choice of samples and any optimisation
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into manifest

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")
        self.poison()  # an unknown name or a bad option fails here

    def poison(self) -> PoisonAttack:
        options = {"rate": self.rate} if self.rate is not None else {}
        for name in POISON_OPTIONS:
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return POISONS.get(self.attack, **options)  # type: ignore[return-value]

    def run(self, train: Dataset) -> PoisonRun:
        """Poison `train`; the poisoned set and its manifest."""
        result = self.poison()(train, seed=self.seed)
        manifest = {
            "data": train.name,
            "label_column": None,
            **self.provenance,
            "attack": POISONS.canonical(self.attack),
            "config": result.meta,
            "seed": self.seed,
            "n": len(result.y),
            "n_poisoned": int(result.poisoned_idx.numel()),
            "target_class": result.target_class,
            "files": ["poisoned.npz", *(["trigger.npz"] if result.trigger is not None else [])],
        }
        return PoisonRun(result, manifest, train)


@dataclasses.dataclass(frozen=True)
class PoisonRun:
    """A poisoned training set, the manifest that describes it, and the clean set."""

    result: PoisonedSet
    manifest: dict[str, Any]
    clean: Dataset | None = None

    def write(self, out: str | Path) -> Path:
        """Write the poisoned set, its trigger, `manifest.json` and (with the clean set)
        `report.html` into `out` (atomically, file by file); the path of the manifest."""
        out, result = Path(out), self.result
        arrays = {"x": result.x, "y": result.y, "poisoned_idx": result.poisoned_idx}
        atomic_write_bytes(out / "poisoned.npz", _npz_bytes(arrays))
        if result.trigger is not None:
            pattern, mask = result.trigger.pattern, result.trigger.mask
            trigger = {"pattern": pattern, "mask": mask.expand_as(pattern)}
            atomic_write_bytes(out / "trigger.npz", _npz_bytes(trigger))
        path = out / "manifest.json"
        atomic_write_text(path, json.dumps(self.manifest, indent=2) + "\n")
        if self.clean is not None:
            clean = self.clean
            html = poison_html(
                self.manifest,
                clean.x,
                result.x,
                clean.y,
                result.y,
                result.poisoned_idx,
                result.trigger,
                clean.bounds,
            )
            atomic_write_text(out / "report.html", html)
        return path


def _npz_bytes(arrays: Mapping[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: v.numpy() for k, v in arrays.items()})
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class Backdoor:
    """A backdoor written by `adversa poison` into `directory`: its manifest and trigger."""

    directory: str
    manifest: dict[str, Any]
    trigger: Trigger

    @classmethod
    def read(cls, directory: str | Path, flag: str = "--backdoor") -> Backdoor:
        """Read the manifest and trigger; `BadInput` naming `flag` when either is missing or
        unreadable, or the poison has no trigger."""
        manifest = read_manifest(directory, flag)
        return cls(str(directory), manifest, read_trigger(Path(directory), manifest, flag))

    @property
    def target_class(self) -> int:
        return int(self.manifest["target_class"])

    def test_data(self, data: str | None = None, label_column: str | None = None) -> Dataset:
        """The test split of `data`, or of the data the poison was made from."""
        if data is None:
            data, label_column = self.manifest["data"], self.manifest.get("label_column")
        return load_data(data, split="test", label_column=label_column)

    def measure(self, model: Model, test: Dataset, what: str = "the test data") -> dict[str, float]:
        """Clean accuracy and ASR of `model` on `test` (named `what` in messages), after
        checking that the model takes the data and the data lies in its bounds."""
        check_fits(model, test.x, test.y, what)
        check_in_bounds(test.x, model.bounds, what=what, hint="scale it to the model's input range")
        return backdoor_metrics(model, test, self.trigger, self.target_class)

    def report(self, model: Model, test: Dataset, what: str = "the test data") -> dict[str, Any]:
        """`measure` with the directory, target class and triggered examples: the content of
        `backdoor-eval --out DIR`'s report.json."""
        metrics = self.measure(model, test, what)
        examples = triggered_examples(
            model, test.x, test.y, self.trigger, self.target_class, model.bounds
        )
        return {
            "dir": self.directory,
            "data": test.name,
            "target_class": self.target_class,
            **metrics,
            "examples": examples,
        }


def write_backdoor_report(out: str | Path, report: Mapping[str, Any]) -> Path:
    """`report.json` and `report.html` of `backdoor-eval` into `out`, atomically; the HTML
    path."""
    out = Path(out)
    atomic_write_text(out / "report.json", json.dumps(jsonable(report), indent=2) + "\n")
    atomic_write_text(out / "report.html", backdoor_html(report))
    return out / "report.html"


def write_inspect(out: str | Path, report: Mapping[str, Any], train: Dataset, source: str) -> Path:
    """`inspect.json` and `report.html` of `inspect-data` into `out`, atomically; the HTML
    path. The page marks poisoned samples when `source` is an .npz with `poisoned_idx`."""
    out = Path(out)
    atomic_write_text(out / "inspect.json", json.dumps(jsonable(report)) + "\n")
    truth = None
    path = Path(source)
    if report["detector"] != "strip" and path.suffix == ".npz" and path.exists():
        arrays = load_npz(path, (), optional=("poisoned_idx",), label=f"--data {path}")
        if "poisoned_idx" in arrays:
            truth = torch.zeros(len(train), dtype=torch.bool)
            truth[_poisoned_idx(arrays["poisoned_idx"], len(train), path)] = True
    html = inspect_html(report, train.x, truth, source, train.bounds)
    atomic_write_text(out / "report.html", html)
    return out / "report.html"


@dataclasses.dataclass(frozen=True, kw_only=True)
class InspectPlan:
    """Score training samples for poisoning with a detector of `POISON_DETECTORS`; with
    `retrain`, retrain without the flagged samples and compare the backdoor's metrics."""

    detector: str = "spectral"  # spectral, activation-clustering, loss; strip (test inputs)
    rate: float | None = None  # expected poison share (spectral, loss; a prior for clustering)
    retrain: bool = False  # retrain a small network without the flagged samples
    retrain_epochs: int = 4  # epochs of the retraining
    seed: int = 0  # seed of the retraining and of STRIP's split and overlays

    def __post_init__(self) -> None:
        if not is_integer(self.retrain_epochs) or self.retrain_epochs < 1:
            raise BadInput(
                f"retrain_epochs must be an integer >= 1, got {describe(self.retrain_epochs)}"
            )
        if self.detector == "strip":
            if self.rate is not None:
                raise BadInput(
                    f"--rate {self.rate}: applies to spectral, activation-clustering and loss, "
                    "not strip"
                )
            if self.retrain:
                raise BadInput("--retrain: applies to the training-set detectors, not strip")
        self.build()  # an unknown detector or a bad rate fails here

    def build(self) -> Any:
        if self.detector == "strip":
            return STRIP(seed=self.seed)
        options = {"rate": self.rate} if self.rate is not None else {}
        return get_detector(self.detector, **options)

    def run(self, model: Model, train: Dataset, source: str | None = None) -> dict[str, Any]:
        """Score `train` (read from the file `source`, if any): the content of
        `inspect.json` (detector, scores, flagged; `metrics` when `source` is an .npz with
        `poisoned_idx`; `retrain` with the plan's retrain)."""
        what = f"--data {source if source is not None else train.name}"
        check_fits(model, train.x, train.y, what)
        if self.detector == "strip":
            return self._strip(model, source)
        detection = self.build()(model, train.x, train.y)
        report: dict[str, Any] = {
            "detector": self.detector,
            "scores": detection.scores.tolist(),
            "flagged": detection.flagged_idx.tolist(),
        }
        if detection.classes:
            report["classes"] = list(detection.classes)
        path = Path(source) if source is not None else None
        if path is not None and path.suffix == ".npz" and path.exists():
            arrays = load_npz(path, (), optional=("poisoned_idx",), label=f"--data {path}")
            if "poisoned_idx" in arrays:
                poisoned = _poisoned_idx(arrays["poisoned_idx"], len(train), path)
                report["metrics"] = detection.metrics(poisoned)
        if self.retrain:
            report["retrain"] = self._retrain(source, train, model, detection.flagged)
        return report

    def _retrain(
        self, source: str | None, train: Dataset, model: Model, flagged: torch.Tensor
    ) -> dict[str, Any]:
        """Retrain on the unflagged samples; the backdoor's metrics before and after."""
        backdoor = _backdoor_next_to(source, "--retrain")
        test = backdoor.test_data()
        keep = ~flagged
        net = fit_classifier(
            train.x[keep],
            train.y[keep],
            train.num_classes,
            epochs=self.retrain_epochs,
            seed=self.seed,
        )
        target = backdoor.target_class
        return {
            "recipe": {
                "epochs": self.retrain_epochs,
                "seed": self.seed,
                "n_train": int(keep.sum()),
            },
            "before": backdoor_metrics(model, test, backdoor.trigger, target),
            "after": backdoor_metrics(net, test, backdoor.trigger, target),
        }

    def _strip(self, model: Model, source: str | None) -> dict[str, Any]:
        """STRIP on the test split of the poison's data: half held out (overlays, threshold),
        half screened clean and, outside the target class, triggered."""
        backdoor = _backdoor_next_to(source, "--detector strip")
        test = backdoor.test_data()
        check_fits(model, test.x, test.y, f"the test split of {backdoor.manifest['data']}")
        screen = self.build().screen(
            model, test.x, test.y, backdoor.trigger, backdoor.target_class, fpr=STRIP_FPR
        )
        triggered, clean = screen.pop("scores_triggered"), screen.pop("scores_clean")
        screen.update(n_triggered=len(triggered), n_clean=len(clean))
        return {
            "detector": "strip",
            "inputs": f"test split of {backdoor.manifest['data']}",
            "target_class": backdoor.target_class,
            "metrics": screen,
            "scores_triggered": triggered,
            "scores_clean": clean,
        }


def _backdoor_next_to(source: str | None, what: str) -> Backdoor:
    """The backdoor whose manifest.json sits next to the poisoned .npz `source`."""
    path = Path(source) if source is not None else None
    if path is None or path.suffix != ".npz" or not (path.parent / "manifest.json").exists():
        raise BadInput(
            f"{what} needs --data DIR/poisoned.npz with DIR/manifest.json (from `adversa "
            f"poison`), got {source}"
        )
    return Backdoor.read(str(path.parent), flag="--data")


def _poisoned_idx(values: np.ndarray, n: int, path: Path) -> torch.Tensor:
    """The `poisoned_idx` array of a poisoned set, checked: integers in [0, n), one axis."""
    if values.dtype.kind not in "iu" or values.ndim != 1:
        raise BadInput(
            f"--data {path}: poisoned_idx must be a 1-D integer array, got {values.dtype} of "
            f"shape {values.shape}"
        )
    if values.size and not (int(values.min()) >= 0 and int(values.max()) < n):
        raise BadInput(
            f"--data {path}: poisoned_idx must lie in [0, {n}), got "
            f"[{int(values.min())}, {int(values.max())}]"
        )
    return torch.tensor(values, dtype=torch.long)
