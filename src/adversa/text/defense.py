"""Adversarially augmented training for text filters: the attack's own substitutions become
training data (the data-augmentation defense of Ren et al. 2019, sec. 5, and of Gao et al.
2018 for character edits).

`augment_and_retrain` attacks `n_augment` training texts (a seeded random subset) with the
victim, appends every successful adversarial text with its *true* label to the training set,
and trains a fresh model with the same recipe (vocabulary rebuilt from the augmented set, so
substituted words and frequent misspellings enter it). `evaluate_augmentation` reports, for
each attack, the success rate on the same test texts before and after, together with clean
accuracy on the whole test split: a defense that buys robustness with accuracy shows it.

Cost: one attack run on `n_augment` training texts per augmenting attack, one retraining
(about a second), and one attack run per attack on the test texts for each of the two models.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch

from adversa.errors import BadInput
from adversa.rng import make_generator

from .base import Progress, TextAttack, TextAttackResult, run_text_attack
from .data import TextSplit
from .model import TextClassifier, TextTrainConfig, accuracy, train_text_classifier


@dataclasses.dataclass
class AugmentationResult:
    """The retrained model, the added texts, and before/after numbers per attack."""

    model: TextClassifier
    added_texts: list[str]
    added_labels: torch.Tensor
    clean_accuracy_before: float
    clean_accuracy_after: float
    before: list[TextAttackResult]
    after: list[TextAttackResult]
    seconds: float
    config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "method": "adversarial data augmentation",
            "n_added": len(self.added_texts),
            "clean_accuracy_before": self.clean_accuracy_before,
            "clean_accuracy_after": self.clean_accuracy_after,
            "attacks": [
                {
                    "name": b.name,
                    "success_rate_before": b.summary()["success_rate"],
                    "success_rate_after": a.summary()["success_rate"],
                    "mean_queries_before": b.summary()["mean_queries"],
                    "mean_queries_after": a.summary()["mean_queries"],
                }
                for b, a in zip(self.before, self.after, strict=True)
            ],
            "seconds": self.seconds,
            "config": self.config,
        }


def augment_and_retrain(
    model: Any,
    split: TextSplit,
    attacks: Sequence[TextAttack],
    *,
    n_augment: int = 500,
    train_config: TextTrainConfig | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[TextClassifier, list[str], torch.Tensor]:
    """Attack `n_augment` training texts with each attack, add the successes with their true
    labels, retrain; return (new model, added texts, their labels)."""
    if n_augment < 1:
        raise BadInput(f"n_augment must be >= 1, got {n_augment}")
    if not attacks:
        raise BadInput("augmentation needs at least one attack")
    n = min(n_augment, len(split.train_texts))
    pick = torch.randperm(len(split.train_texts), generator=make_generator(seed))[:n].tolist()
    texts = [split.train_texts[i] for i in pick]
    labels = split.train_labels[pick]
    added: list[str] = []
    added_labels: list[torch.Tensor] = []
    for attack in attacks:
        result = run_text_attack(
            attack, model, texts, labels, progress=_prefixed(progress, "augment: ")
        )
        keep = torch.nonzero(result.success).flatten().tolist()
        added += [result.adv_texts[i] for i in keep]
        added_labels.append(labels[keep])
    new_labels = torch.cat(added_labels)
    retrained = train_text_classifier(
        [*split.train_texts, *added], torch.cat([split.train_labels, new_labels]), train_config
    )
    return retrained, added, new_labels


def evaluate_augmentation(
    model: Any,
    split: TextSplit,
    attacks: Sequence[TextAttack],
    *,
    n_eval: int = 200,
    n_augment: int = 500,
    train_config: TextTrainConfig | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> AugmentationResult:
    """Success of each attack on the first `n_eval` test texts before and after augmented
    retraining, with clean accuracy on the whole test split for both models."""
    start = time.perf_counter()
    texts, labels = split.test_texts[:n_eval], split.test_labels[:n_eval]
    before = [run_text_attack(a, model, texts, labels, progress=progress) for a in attacks]
    retrained, added, added_labels = augment_and_retrain(
        model,
        split,
        attacks,
        n_augment=n_augment,
        train_config=train_config,
        seed=seed,
        progress=progress,
    )
    after_progress = _prefixed(progress, "after augmentation: ")
    after = [run_text_attack(a, retrained, texts, labels, progress=after_progress) for a in attacks]
    return AugmentationResult(
        model=retrained,
        added_texts=added,
        added_labels=added_labels,
        clean_accuracy_before=accuracy(model, split.test_texts, split.test_labels),
        clean_accuracy_after=accuracy(retrained, split.test_texts, split.test_labels),
        before=before,
        after=after,
        seconds=time.perf_counter() - start,
        config={
            "n_eval": len(texts),
            "n_augment": n_augment,
            "seed": seed,
            "train": dataclasses.asdict(train_config or TextTrainConfig()),
        },
    )


def _prefixed(progress: Progress | None, prefix: str) -> Progress | None:
    if progress is None:
        return None
    return lambda name, done, total: progress(prefix + name, done, total)
