"""Poisoning: attacks on training data and detectors of poisoned data.

Example::

    from adversa.poisoning import POISONS, apply_trigger, attack_success_rate
    poisoned = POISONS.get("badnets", rate=0.05, target_class=0)(train_set, seed=0)
    # ... train on poisoned.x, poisoned.y ...
    asr = attack_success_rate(net, test.x, test.y, poisoned.trigger, 0)
"""

from __future__ import annotations

from adversa.poisoning import backdoor, label_flip
from adversa.poisoning.backdoor import BadNets, Blend
from adversa.poisoning.base import (
    POISONS,
    PoisonAttack,
    PoisonedSet,
    Trigger,
    apply_trigger,
    attack_success_rate,
    detection_metrics,
    roc_auc,
)
from adversa.poisoning.clean_label import CleanLabel
from adversa.poisoning.clustering import ActivationClustering
from adversa.poisoning.detect import (
    POISON_DETECTORS,
    Detection,
    LossFilter,
    SpectralSignatures,
    get_detector,
    penultimate_features,
)
from adversa.poisoning.feature_collision import FeatureCollision
from adversa.poisoning.gradient_matching import GradientMatching
from adversa.poisoning.label_flip import LabelFlip
from adversa.poisoning.strip import STRIP

__all__ = [
    "POISONS",
    "POISON_DETECTORS",
    "STRIP",
    "ActivationClustering",
    "BadNets",
    "Blend",
    "CleanLabel",
    "Detection",
    "FeatureCollision",
    "GradientMatching",
    "LabelFlip",
    "LossFilter",
    "PoisonAttack",
    "PoisonedSet",
    "SpectralSignatures",
    "Trigger",
    "apply_trigger",
    "attack_success_rate",
    "backdoor",
    "detection_metrics",
    "get_detector",
    "label_flip",
    "penultimate_features",
    "roc_auc",
]
