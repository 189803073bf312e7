"""`text-attack` as library calls: the victim a command names (`text_victim`) and a frozen
`TextAttackPlan` whose `run(model, split)` attacks it, optionally defends it by adversarial
data augmentation, and returns the report `adversa text-attack` writes.

Example::

    split = adversa.text.load_text_data("movie-reviews")
    plan = TextAttackPlan(attacks=("pwws",), n=50)
    run = plan.run(text_victim("movie-reviews", split), split)
    run.report["attacks"][0]["success_rate"]
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import torch

from adversa.class_metrics import class_warnings, per_class
from adversa.errors import BadInput, UnknownName, describe, is_integer
from adversa.text import TEXT_ATTACKS, TextClassifier, load_text_victim, train_text_classifier
from adversa.text.base import TextAttack, TextAttackResult, run_text_attack
from adversa.text.data import TEXT_DATASETS, TextSplit
from adversa.text.defense import evaluate_augmentation
from adversa.text.hf import load_hf_text_model
from adversa.text.minilm import load_minilm_victim, train_minilm_classifier
from adversa.text.model import GradientTextModel, load_text_model
from adversa.text.report import text_report

Progress = Any  # the library's progress(description, completed, total) callback


BUILTIN_TEXT_MODELS = ("bow", "minilm")  # builtin:NAME victims, the first the default


def text_victim(
    data: str, split: TextSplit, model: str | None = None, *, trust_model_file: bool = False
) -> Any:
    """The text model `model` names: `builtin:bow` (the default) or `builtin:minilm`, cached
    for a built-in text set and otherwise trained on `split`'s train texts; `hf:DIR`, a local
    Hugging Face sequence classifier; a `TextClassifier.save` file; or sklearn:PATH.joblib."""
    spec = model or f"builtin:{BUILTIN_TEXT_MODELS[0]}"
    if spec.startswith("hf:"):
        return load_hf_text_model(spec.removeprefix("hf:"), trust_model_file=trust_model_file)
    if not spec.startswith("builtin:"):
        return load_text_model(spec, trust_model_file=trust_model_file)
    name = spec.removeprefix("builtin:")
    if name not in BUILTIN_TEXT_MODELS:
        raise UnknownName("--model builtin: text model", name, BUILTIN_TEXT_MODELS)
    if name == "minilm":
        if data in TEXT_DATASETS:
            return load_minilm_victim(data=data)
        return train_minilm_classifier(split.train_texts, split.train_labels)
    if data in TEXT_DATASETS:
        return load_text_victim(data=data)
    return train_text_classifier(split.train_texts, split.train_labels)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextAttackPlan:
    """Which text attacks run on how many test texts, and whether to defend by adversarial
    data augmentation; validated on construction (the attacks' configs check their options)."""

    attacks: tuple[str, ...] = ("pwws", "deepwordbug")  # TEXT_ATTACKS names
    n: int = 200  # attack the first n test texts
    max_change: float | None = None  # largest share of words changed (None: the attack's)
    min_similarity: float | None = None  # smallest sentence similarity (None: the attack's)
    seed: int = 0  # seeds the attacks and the augmentation
    ranking: str = "queries"  # word ranking: model queries, or "gradient" (transformers)
    augment: int | None = None  # also defend: attack this many training texts, retrain
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # into config

    def __post_init__(self) -> None:
        if isinstance(self.attacks, str) or not isinstance(self.attacks, tuple | list):
            raise BadInput(f"attacks must be a tuple of names, got {describe(self.attacks)}")
        if not self.attacks:
            raise BadInput("attacks must name at least one text attack")
        names = tuple(TEXT_ATTACKS.canonical(name) for name in self.attacks)
        object.__setattr__(self, "attacks", names)
        for name in ("n", "augment"):
            value = getattr(self, name)
            if (value is not None or name == "n") and (not is_integer(value) or value < 1):
                raise BadInput(f"{name} must be an integer >= 1, got {describe(value)}")
        if not isinstance(self.provenance, Mapping):
            raise BadInput(f"provenance must be a mapping, got {describe(self.provenance)}")
        self.build()  # the attacks' own checks

    def build(self) -> list[TextAttack]:
        """The attacks, configured."""
        options: dict[str, Any] = {"seed": self.seed, "ranking": self.ranking}
        if self.max_change is not None:
            options["max_change"] = self.max_change
        if self.min_similarity is not None:
            options["min_similarity"] = self.min_similarity
        return [TEXT_ATTACKS.get(name, **options) for name in self.attacks]  # type: ignore[misc]

    def run(self, model: Any, split: TextSplit, progress: Progress | None = None) -> TextRun:
        """Attack `model` on the first `n` test texts of `split` (with `augment`: defend it
        first, and attack both); the report and the final (augmented) model."""
        start = time.perf_counter()
        if self.augment and not isinstance(model, TextClassifier):
            raise BadInput(
                "--augment and --save-model work on adversa's bag-of-words model; they cannot "
                f"retrain or save a {type(model).__name__} (augment your own pipeline's data)"
            )
        if self.ranking == "gradient" and not isinstance(model, GradientTextModel):
            raise BadInput(
                f"--ranking gradient needs a model that exposes gradients (builtin:minilm, "
                f"hf:DIR); {type(model).__name__} does not"
            )
        attacks = self.build()
        texts, labels = split.test_texts[: self.n], split.test_labels[: self.n]
        defense = None
        if self.augment:
            evaluation = evaluate_augmentation(
                model,
                split,
                attacks,
                n_eval=self.n,
                n_augment=self.augment,
                seed=self.seed,
                progress=progress,
            )
            results, defense, model = evaluation.before, evaluation.summary(), evaluation.model
        else:
            results = [run_text_attack(a, model, texts, labels, progress=progress) for a in attacks]
        config = {
            **self.provenance,
            "attacks": list(self.attacks),
            "n": len(texts),
            "seed": self.seed,
            "max_change": attacks[0].max_change,
            "min_similarity": attacks[0].min_similarity,
            "augment": self.augment,
            "ranking": self.ranking,
        }
        report = text_report(
            results,
            config=config,
            class_names=split.class_names,
            defense=defense,
            seconds=time.perf_counter() - start,
        )
        return TextRun(_with_classes(report, results, split.class_names), model)


@dataclasses.dataclass(frozen=True, eq=False)
class TextRun:
    """The report of a text attack and the final model (augmented, with the plan's augment)."""

    report: dict[str, Any]
    model: Any


def _with_classes(
    report: dict[str, Any], results: list[TextAttackResult], class_names: Any
) -> dict[str, Any]:
    """`report` with recall and precision per class on the clean texts (`class_metrics`),
    per attack after it (each attack's `class_metrics`: robust_* are the predictions on its
    adversarial texts, the clean ones where it failed), and `warnings` for a model no better
    than the base rate or predicting one class for almost everything."""
    names = tuple(str(n) for n in class_names) if class_names else None
    first = results[0]
    k = len(names) if names else None
    report["class_metrics"] = per_class(first.labels, first.clean_pred, k, names=names)
    for entry, result in zip(report["attacks"], results, strict=True):
        after = torch.where(result.success, result.adv_pred, result.clean_pred)
        entry["class_metrics"] = per_class(
            result.labels, result.clean_pred, k, names=names, robust_pred=after
        )
    report["warnings"] = class_warnings(first.labels, first.clean_pred, k, names=names)
    return report
