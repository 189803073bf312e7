"""Text attacks on content filters: built-in review data, a bag-of-words victim, a MiniLM
transformer victim, local Hugging Face classifiers, WordNet synonyms, MiniLM sentence
similarity, DeepWordBug and PWWS (word ranking by queries or gradients), augmentation
defense, reports.

A text model is anything with `predict_proba(list[str]) -> (n, classes)`; see
`adversa.text.model`. Attacks are registered in `TEXT_ATTACKS` and run by `run_text_attack`.
"""

from __future__ import annotations

from .base import TextAttack, TextAttackResult, run_text_attack
from .data import TextSplit, load_text_data, tokenize, words
from .deepwordbug import DeepWordBug
from .hf import HFTextClassifier, load_hf_text_model
from .minilm import (
    MiniLMClassifier,
    MiniLMTrainConfig,
    load_minilm_victim,
    train_minilm_classifier,
)
from .model import (
    GradientTextModel,
    TextClassifier,
    TextTrainConfig,
    accuracy,
    check_text_model,
    load_text_victim,
    train_text_classifier,
)
from .pwws import PWWS
from .registry import TEXT_ATTACKS


def get_text_attack(name: str, **overrides: object) -> TextAttack:
    """The registered text attack `name` with `overrides` (e.g. `max_change=0.2`)."""
    return TEXT_ATTACKS.get(name, **overrides)


__all__ = [
    "PWWS",
    "TEXT_ATTACKS",
    "DeepWordBug",
    "GradientTextModel",
    "HFTextClassifier",
    "MiniLMClassifier",
    "MiniLMTrainConfig",
    "TextAttack",
    "TextAttackResult",
    "TextClassifier",
    "TextSplit",
    "TextTrainConfig",
    "accuracy",
    "check_text_model",
    "get_text_attack",
    "load_hf_text_model",
    "load_minilm_victim",
    "load_text_data",
    "load_text_victim",
    "run_text_attack",
    "tokenize",
    "train_minilm_classifier",
    "train_text_classifier",
    "words",
]
