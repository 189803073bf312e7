"""`privacy` (membership inference) as library calls: who is a member, how the shadow and
reference models train, and a frozen `MembershipPlan` whose `run` returns `privacy.json`.

Who is a member. Membership inference needs candidates whose membership is known. By default
the members are the first n samples of the model's training split and the non-members the
first n of the held-out test split (n = min(n, both sizes), so the two are balanced). For a
zoo model or an `adversa train` output directory the training split (data and train_size) is
read from its recipe or card (`training_recipe`), so it is exact; for any other model it is
the "train" split of the data, which is only right if the model was trained on it; give
known members and non-members when it was not. The shadow attack's pool is what is left of
both splits (or the given shadow data), disjoint from the candidates.

Example::

    recipe = target_recipe("digits-mlp")
    parts = candidates("digits-mlp", n=200)
    plan = MembershipPlan(attacks=("threshold", "lira"), shadows=8)
    report = plan.run(model, parts, recipe)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adversa.checks import check_labels
from adversa.data import list_datasets, load_data, stratified_split
from adversa.data.dataset import Dataset
from adversa.errors import BadInput, describe
from adversa.jobs.checks import check_fits
from adversa.model import Model
from adversa.privacy.arch_stack import ArchTraining
from adversa.privacy.audit import MembershipAudit, parse_membership_attacks
from adversa.privacy.boundary import BoundaryDistance
from adversa.privacy.metrics import check_fpr
from adversa.privacy.report import membership_report
from adversa.privacy.stacked import StackedTraining
from adversa.train.config import TrainConfig, load_splits
from adversa.zoo import list_models, zoo_entry

Pair = tuple[Tensor, Tensor]
Progress = Any  # the library's progress(description, completed, total) callback


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """How a target model was trained: its data, training-set size and full config."""

    data: str
    train_size: int | None
    config: TrainConfig


def training_recipe(spec: str) -> TrainingRecipe | None:
    """The recipe of a zoo model or an `adversa train` directory; None for any other model."""
    if spec.strip().lower() in list_models():
        config = zoo_entry(spec.strip().lower()).train_config()
        return TrainingRecipe(config.data, config.train_size, config)
    card = Path(spec).expanduser() / "card.json"
    if card.is_file():
        try:
            recorded = json.loads(card.read_text())["config"]
        except (ValueError, KeyError, TypeError):
            raise BadInput(
                f"--model {spec}: {card} is not a model card written by adversa train "
                f"(expected JSON with a 'config' object)"
            ) from None
        config = TrainConfig.from_dict(recorded)
        return TrainingRecipe(config.data, config.train_size, config)
    return None


def target_recipe(spec: str, data: str | None = None) -> TrainingRecipe | None:
    """The recipe of the model `spec`, when it is known and trained on `data` (None: any)."""
    recipe = training_recipe(spec)
    if recipe is not None and (data is None or data == recipe.data):
        return recipe
    return None


def training_splits(
    spec: str, data: str | None = None, label_column: str | None = None
) -> tuple[Dataset, Dataset, str]:
    """(train, test, source): the training split of the model `spec` and a held-out split;
    `source` says where the training split comes from."""
    recipe = target_recipe(spec, data)
    if recipe is not None:
        train, test = load_splits(recipe.config)
        size = "all" if recipe.train_size is None else f"the first {recipe.train_size}"
        return train, test, f"{size} of the training split of {recipe.data} (the model's recipe)"
    if data is None:
        raise BadInput("--data is required unless --model is a zoo name or a training directory")
    if data.strip().lower() in list_datasets():
        train = load_data(data, split="train", label_column=label_column)
        test = load_data(data, split="test", label_column=label_column)
    else:
        full = load_data(data, label_column=label_column)
        train_idx, test_idx = stratified_split(full.y.numpy())
        train = full.subset(torch.as_tensor(train_idx))
        test = full.subset(torch.as_tensor(test_idx))
    return train, test, f"the train split of {data} (assumed to be the training data)"


@dataclasses.dataclass(frozen=True, eq=False)
class Candidates:
    """Members and non-members with known membership, the shadow pool disjoint from them,
    where they come from, the dataset they belong to, and how they are named in messages."""

    members: Pair
    nonmembers: Pair
    pool: Pair | None
    source: str
    dataset: Dataset
    members_name: str
    nonmembers_name: str


def candidates(
    spec: str,
    data: str | None = None,
    label_column: str | None = None,
    *,
    n: int = 500,
    members: str | None = None,
    nonmembers: str | None = None,
    shadow_data: str | None = None,
) -> Candidates:
    """The candidates for the model `spec`: the given `members` and `nonmembers` (files or
    built-in names, loaded whole), else the first `n` of its training and test splits."""
    if (members is None) != (nonmembers is None):
        raise BadInput("--members and --nonmembers go together")
    if members is not None and nonmembers is not None:
        inside = load_data(members, split="all", label_column=label_column)
        outside = load_data(nonmembers, split="all", label_column=label_column)
        if inside.input_shape != outside.input_shape:
            raise BadInput(
                f"--members inputs {inside.input_shape} and --nonmembers "
                f"{outside.input_shape} differ"
            )
        pool = None
        source = f"--members {members}, --nonmembers {nonmembers}"
        dataset = inside
    else:
        train, test, source = training_splits(spec, data, label_column)
        n = min(n, len(train), len(test))
        inside, outside = train.take(n), test.take(n)
        rest = [d.subset(slice(n, None)) for d in (train, test) if len(d) > n]
        pool = (torch.cat([d.x for d in rest]), torch.cat([d.y for d in rest])) if rest else None
        source = f"members: first {n} of {source}; non-members: first {n} of the test split"
        dataset = train
    if shadow_data is not None:
        shadow = load_data(shadow_data, split="all", label_column=label_column)
        pool = (shadow.x, shadow.y)
    return Candidates(
        members=(inside.x, inside.y),
        nonmembers=(outside.x, outside.y),
        pool=pool,
        source=source,
        dataset=dataset,
        members_name=f"--members {members}" if members else f"--data {data or dataset.name}",
        nonmembers_name=f"--nonmembers {nonmembers}" if nonmembers else "the test split",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MembershipPlan:
    """Which membership attacks to run and how their shadow / reference models train;
    `run(model, candidates, training)` runs them. Validated on construction."""

    attacks: tuple[str, ...] | str = "lira"  # lira, threshold, shadow, boundary, all
    shadows: int = 16  # shadow / reference models
    reference_arch: str | None = None  # "same" or "mlp"; None: same when the recipe is known
    reference_epochs: int | None = None  # same: epochs per model (None: the recipe's)
    shadow_steps: int = 300  # mlp: training steps
    shadow_hidden: int = 128  # mlp: hidden width
    boundary_attack: str = "auto"  # boundary: the min-norm attack
    boundary_queries: int = 2000  # boundary, hsj: queries per point
    fixed_variance: bool = False  # LiRA: pooled variance
    fprs: tuple[float, ...] = (0.01, 0.001)  # FPR targets for TPR
    seed: int = 0  # seeds every random choice
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        attacks = self.attacks
        if isinstance(attacks, str):
            attacks = parse_membership_attacks(attacks)
        object.__setattr__(self, "attacks", tuple(attacks))
        if self.reference_arch not in (None, "same", "mlp"):
            raise BadInput(f"reference_arch must be same, mlp or None, got {self.reference_arch!r}")
        if isinstance(self.fprs, str) or not isinstance(self.fprs, tuple | list) or not self.fprs:
            raise BadInput(f"fprs must be a non-empty tuple of numbers, got {describe(self.fprs)}")
        object.__setattr__(self, "fprs", tuple(check_fpr(f, "fpr target") for f in self.fprs))
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")
        self.audit(StackedTraining())  # the audit's own checks, before any training

    def reference_training(
        self, recipe: TrainingRecipe | None
    ) -> tuple[StackedTraining | ArchTraining, list[str]]:
        """(training, warnings): the shadow / reference recipe for a target trained by
        `recipe` (None: unknown), as `reference_arch` asks."""
        choice = self.reference_arch or ("same" if recipe is not None else "mlp")
        if choice == "mlp":
            if self.reference_epochs is not None:
                raise BadInput("--reference-epochs applies to --reference-arch same only")
            return StackedTraining(hidden=(self.shadow_hidden,), steps=self.shadow_steps), []
        if recipe is None:
            raise BadInput(
                "--reference-arch same needs the target's architecture: give a zoo name or an "
                "`adversa train` directory as --model (or use --reference-arch mlp)"
            )
        if self.reference_epochs is not None and self.reference_epochs < 1:
            raise BadInput(f"--reference-epochs must be >= 1, got {self.reference_epochs}")
        config = recipe.config
        training = ArchTraining.from_train_config(config, epochs=self.reference_epochs)
        warnings = []
        if config.defense_name != "none":
            warnings.append(
                f"reference models use the target's architecture and optimiser but train "
                f"without its defense ({config.defense_name})"
            )
        return training, warnings

    def audit(self, training: StackedTraining | ArchTraining) -> MembershipAudit:
        boundary = BoundaryDistance(
            attack=self.boundary_attack, max_queries=self.boundary_queries, seed=self.seed
        )
        return MembershipAudit(
            attacks=self.attacks,  # type: ignore[arg-type]
            num_shadows=self.shadows,
            training=training,
            fixed_variance=self.fixed_variance,
            boundary=boundary,
            seed=self.seed,
        )

    def run(
        self,
        model: Model,
        parts: Candidates,
        target: TrainingRecipe | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Run the attacks on `model`'s candidates, with shadow / reference models trained
        as `reference_training(target)` says; the content of `privacy.json`."""
        start = time.perf_counter()
        recipe, warnings = self.reference_training(target)
        audit = self.audit(recipe)
        classes = check_fits(model, *parts.members, parts.members_name)
        check_labels(parts.nonmembers[1], classes, parts.nonmembers_name)
        results, is_member = audit(model, parts.members, parts.nonmembers, parts.pool, progress)
        boundary = audit.boundary.evasion(model) if "boundary" in self.attacks else None
        config = {
            **self.provenance,
            "attacks": list(audit.attacks),
            "shadows": self.shadows,
            "reference_arch": "mlp" if isinstance(recipe, StackedTraining) else "same",
            "shadow_training": _training_dict(recipe),
            "boundary_attack": boundary,
            "fixed_variance": self.fixed_variance,
            "n_members": int(is_member.sum()),
            "n_nonmembers": int((~is_member).sum()),
            "shadow_pool": None if parts.pool is None else len(parts.pool[1]),
            "fprs": list(self.fprs),
            "seed": self.seed,
        }
        return membership_report(
            results,
            is_member,
            config=config,
            seed=self.seed,
            seconds=time.perf_counter() - start,
            fprs=self.fprs,
            extra={"membership_source": parts.source, "warnings": warnings},
        )


def _training_dict(training: StackedTraining | ArchTraining) -> dict[str, Any]:
    out = dataclasses.asdict(training)
    if not isinstance(out.get("arch", ""), str):
        out["arch"] = training.arch_name  # type: ignore[union-attr]
    return out
