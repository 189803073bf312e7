"""Privacy attacks: membership inference (global threshold, shadow models, LiRA with MLP or
same-architecture references, label-only boundary distance), model inversion (MIFace) and
attribute inference, with the metrics they are judged by, and the training-time defenses
(label smoothing, early stopping, DP-SGD) with their cost."""

from adversa.privacy.arch_stack import ArchStack, ArchTraining, train_arch_stack, train_models
from adversa.privacy.attribute import AttributeResult, attribute_inference, value_tables
from adversa.privacy.audit import MembershipAudit, parse_membership_attacks
from adversa.privacy.boundary import BoundaryDistance
from adversa.privacy.defense import (
    DPSGD,
    MissingExtra,
    TargetTraining,
    defense_tradeoff,
    train_target,
)
from adversa.privacy.inversion import InversionResult, MIFace, class_means, inversion_measures
from adversa.privacy.lira import LiRA, References, lira_scores, train_references
from adversa.privacy.membership import MembershipResult, ThresholdAttack, fit_threshold
from adversa.privacy.metrics import MembershipMetrics, membership_metrics, roc_curve, roc_svg
from adversa.privacy.shadow import ShadowAttack
from adversa.privacy.stacked import StackedMLP, StackedTraining, random_halves, train_stacked

__all__ = [
    "DPSGD",
    "ArchStack",
    "ArchTraining",
    "AttributeResult",
    "BoundaryDistance",
    "InversionResult",
    "LiRA",
    "MIFace",
    "MembershipAudit",
    "MembershipMetrics",
    "MembershipResult",
    "MissingExtra",
    "References",
    "ShadowAttack",
    "StackedMLP",
    "StackedTraining",
    "TargetTraining",
    "ThresholdAttack",
    "attribute_inference",
    "class_means",
    "defense_tradeoff",
    "fit_threshold",
    "inversion_measures",
    "lira_scores",
    "membership_metrics",
    "parse_membership_attacks",
    "random_halves",
    "roc_curve",
    "roc_svg",
    "train_arch_stack",
    "train_models",
    "train_references",
    "train_stacked",
    "train_target",
    "value_tables",
]
