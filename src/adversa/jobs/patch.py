"""`patch` as one library call: a frozen `PatchPlan` and `plan.run(model, train, test)` -> the
content of `report.json`.

The patch (Brown et al. 2017, `adversa.physical.patch`) is trained on `train` with EOT and
measured on the held-out `test` images under fresh random draws: the success rate beside a
patch of uniform noise of the same shape (the control), the success versus the patch size
(a patch re-trained at each size with `size_steps`), and the success versus each
transformation's range (the trained patch, only that transformation varying, at fractions of
its range; `position` sweeps the patch's own placement).

Example::

    plan = PatchPlan(size=0.1, target_class=3, transforms="rotate=20,noise=0.02", steps=300)
    train, test = patch_data("mnist", seed=0)
    report = plan.run(load_model("mnist-cnn"), train, test)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from adversa.data import Dataset, list_datasets, load_data, stratified_split
from adversa.errors import BadInput, ShapeError, describe, is_integer, is_real
from adversa.model import Cost, Model
from adversa.physical.patch import (
    Patch,
    PatchConfig,
    evaluate_patch,
    random_patch,
    train_patch,
)
from adversa.physical.patch_report import patch_picture, patched_examples
from adversa.physical.transforms import NAMES, Transforms
from adversa.versions import versions

Progress = Callable[[str, int, int], None]
SIZES: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
FRACTIONS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
# the range each transformation is swept over when --transforms leaves it out
SWEEP = Transforms(
    rotate=30.0,
    scale=(0.7, 1.3),
    translate=0.15,
    brightness=0.3,
    contrast=0.5,
    noise=0.1,
    perspective=0.15,
    blur=1.5,
)
TARGETED = (
    "targeted: share of the held-out images not of the target class that the model assigns "
    "to the target class with the patch in the scene"
)
UNTARGETED = (
    "untargeted: share of the held-out images classified correctly in the scene without the "
    "patch (same scene draw) that are misclassified with the patch"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchPlan:
    """The patch to train (`patch`: a `PatchConfig`), how much to measure, and the sweeps."""

    patch: PatchConfig = dataclasses.field(default_factory=PatchConfig)
    eval_transforms: Transforms | None = None  # the scene when measuring (None: the training's)
    n: int = 500  # held-out images measured
    sizes: tuple[float, ...] = SIZES  # success_by_size: patch areas re-trained
    size_steps: int = 100  # success_by_size: training steps per size
    fractions: tuple[float, ...] = FRACTIONS  # success_by_transform: fractions of each range
    examples: int = 8  # patched held-out images shown in the report
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        if not isinstance(self.patch, PatchConfig):
            raise BadInput(f"patch must be a PatchConfig, got {describe(self.patch)}")
        for name in ("n", "size_steps"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                flag = "n (--n-points)" if name == "n" else name.replace("_", "-")
                raise BadInput(f"--{flag} must be an integer >= 1, got {value!r}")
        if not is_integer(self.examples) or self.examples < 0:
            raise BadInput(f"examples must be an integer >= 0, got {self.examples!r}")
        for size in self.sizes:
            if not is_real(size) or not 0.0 < size <= 0.5:
                raise BadInput(f"--sizes: each must be in (0, 0.5], got {describe(size)}")
        if any(not 0.0 <= f <= 1.0 for f in self.fractions):
            raise BadInput(f"fractions must lie in [0, 1], got {self.fractions}")

    @property
    def scene(self) -> Transforms:
        """The transformations the patch is measured under."""
        return self.patch.transforms if self.eval_transforms is None else self.eval_transforms

    def run(
        self, model: Model, train: Dataset, test: Dataset, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Train the patch on `train`, measure it on the first `n` images of `test`; the
        content of report.json."""
        start = time.perf_counter()
        note = progress or (lambda *_: None)
        _check_images(train, test)
        x, y = test.x[: self.n], test.y[: self.n]
        seed = self.patch.seed
        patch = train_patch(model, train.x, train.y, self.patch, progress=note)
        costs = {"train": patch.cost}
        with model.counting() as counter:
            result = evaluate_patch(model, patch, x, y, self.scene, seed + 1)
            control = evaluate_patch(
                model, random_patch(patch, seed + 2), x, y, self.scene, seed + 1
            )
            clean = float((model.predict(x).cpu() == y).float().mean())
        costs["evaluate"] = counter.freeze()
        by_size, size_cost = self._by_size(model, train, x, y, note)
        costs["success_by_size"] = size_cost
        with model.counting() as counter:
            by_transform = self._by_transform(model, patch, x, y, note)
        costs["success_by_transform"] = counter.freeze()
        total = sum(costs.values(), Cost())
        report = {
            "model": model.name,
            "targeted": self.patch.targeted,
            "target_class": self.patch.target_class,
            "success_rate": result.rate,
            "success_definition": TARGETED if self.patch.targeted else UNTARGETED,
            "eligible": int(result.eligible.sum()),
            "n": int(y.shape[0]),
            "n_train": len(train),
            "class_names": list(test.class_names) if test.class_names else None,
            "clean_accuracy": clean,
            "baseline": {
                "success_rate": control.rate,
                "eligible": int(control.eligible.sum()),
                "what": "a patch of uniform noise, same shape, size and placement",
            },
            "success_by_size": by_size,
            "success_by_transform": by_transform,
            "transforms": self.patch.transforms.spec(),
            "eval_transforms": self.scene.spec(),
            "patch": patch_picture(patch),
            "losses": list(patch.losses),
            "examples": patched_examples(model, patch, x, y, self.scene, seed + 1, self.examples),
            "cost": {
                "forward_calls": total.forward,
                "backward_calls": total.backward,
                **{
                    k: {"forward_calls": c.forward, "backward_calls": c.backward}
                    for k, c in costs.items()
                },
            },
            "warnings": self._warnings(result.rate, control.rate, int(result.eligible.sum())),
        }
        return report | {
            "config": self._config(),
            "seed": seed,
            "versions": versions(),
            "seconds": time.perf_counter() - start,
        }

    def _by_size(
        self, model: Model, train: Dataset, x: torch.Tensor, y: torch.Tensor, note: Progress
    ) -> tuple[list[dict[str, Any]], Cost]:
        rows, cost, sizes = [], Cost(), sorted(set(self.sizes))
        for k, size in enumerate(sizes):
            note("success by patch size", k, len(sizes))
            config = dataclasses.replace(self.patch, size=size, steps=self.size_steps)
            patch = train_patch(model, train.x, train.y, config)
            with model.counting() as counter:
                seed = self.patch.seed + 1
                rate = evaluate_patch(model, patch, x, y, self.scene, seed).rate
                noise = evaluate_patch(model, random_patch(patch, seed + 1), x, y, self.scene, seed)
            cost = cost + patch.cost + counter.freeze()
            rows.append(
                {"size": size, "side": patch.side, "success_rate": rate, "baseline": noise.rate}
            )
        note("success by patch size", len(sizes), len(sizes))
        return rows, cost

    def _by_transform(
        self, model: Model, patch: Patch, x: torch.Tensor, y: torch.Tensor, note: Progress
    ) -> dict[str, list[dict[str, Any]]]:
        """Per transformation (and the patch's `position`): the success at each fraction of
        its range, that transformation alone varying (the patch's own rotation and scale
        kept as trained)."""
        seed, out, rates = self.patch.seed + 1, {}, {}

        def rate(scene: Transforms) -> float:  # the identity (fraction 0) is measured once
            if scene not in rates:
                rates[scene] = evaluate_patch(model, patch, x, y, scene, seed).rate
            return rates[scene]

        full = {n: (self.scene if n in self.scene.active else SWEEP).one(n) for n in NAMES}
        for k, (name, scene) in enumerate(full.items()):
            note("success by transformation", k, len(full) + 1)
            out[name] = [
                {
                    "fraction": f,
                    "transforms": scene.scaled(f).spec(),
                    "success_rate": rate(scene.scaled(f)),
                }
                for f in self.fractions
            ]
        rows = []
        for f in self.fractions:
            placed = dataclasses.replace(
                patch, config=dataclasses.replace(patch.config, position=f)
            )
            placed_rate = evaluate_patch(model, placed, x, y, Transforms(), seed).rate
            rows.append(
                {"fraction": f, "transforms": f"position={f:g}", "success_rate": placed_rate}
            )
        out["position"] = rows
        note("success by transformation", len(full) + 1, len(full) + 1)
        return out

    def _warnings(self, rate: float, control: float, eligible: int) -> list[str]:
        warnings = []
        if eligible < 20:
            warnings.append(
                f"only {eligible} held-out images count towards the success rate: it is noisy"
            )
        if rate <= control + 0.05:
            warnings.append(
                f"the trained patch ({100 * rate:.1f}%) barely beats a random patch "
                f"({100 * control:.1f}%): more --steps, a larger --size or a smaller "
                "--position range may help"
            )
        return warnings

    def _config(self) -> dict[str, Any]:
        patch = {f.name: getattr(self.patch, f.name) for f in dataclasses.fields(self.patch)}
        patch["transforms"] = self.patch.transforms.spec()
        fields = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("patch", "provenance")
        }
        fields["eval_transforms"] = self.scene.spec()
        return {**self.provenance, **patch, **fields}  # the typed values over the raw flags


def patch_data(spec: str, seed: int, label_column: str | None = None) -> tuple[Dataset, Dataset]:
    """(train, held-out) images of `spec`: a built-in dataset's train and test splits, or a
    file split in halves, stratified by class, with `seed`."""
    if spec in list_datasets():
        return load_data(spec, split="train"), load_data(spec, split="test")
    data = load_data(spec, label_column=label_column)
    if len(data) < 4:
        raise BadInput(f"--data {spec}: a patch needs at least 4 images to split, got {len(data)}")
    train_idx, test_idx = stratified_split(data.y.numpy(), 0.5, seed)
    return data.subset(torch.as_tensor(train_idx)), data.subset(torch.as_tensor(test_idx))


def _check_images(train: Dataset, test: Dataset) -> None:
    if train.x.dim() != 4:
        raise ShapeError(
            f"--data {train.name}: a patch needs images (N, C, H, W), got shape "
            f"{tuple(train.x.shape)}"
        )
    if train.input_shape != test.input_shape:
        raise ShapeError(
            f"training images {train.input_shape} and held-out images {test.input_shape} differ"
        )
