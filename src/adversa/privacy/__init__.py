"""Privacy attacks: membership inference (global threshold, shadow models, LiRA) and model
inversion (MIFace), with the metrics they are judged by."""

from adversa.privacy.inversion import InversionResult, MIFace, class_means, inversion_measures
from adversa.privacy.lira import LiRA, References, lira_scores, train_references
from adversa.privacy.membership import MembershipResult, ThresholdAttack, fit_threshold
from adversa.privacy.metrics import MembershipMetrics, membership_metrics, roc_curve, roc_svg
from adversa.privacy.shadow import ShadowAttack
from adversa.privacy.stacked import StackedMLP, StackedTraining, random_halves, train_stacked

__all__ = [
    "InversionResult",
    "LiRA",
    "MIFace",
    "MembershipMetrics",
    "MembershipResult",
    "References",
    "ShadowAttack",
    "StackedMLP",
    "StackedTraining",
    "ThresholdAttack",
    "class_means",
    "fit_threshold",
    "inversion_measures",
    "lira_scores",
    "membership_metrics",
    "random_halves",
    "roc_curve",
    "roc_svg",
    "train_references",
    "train_stacked",
]
