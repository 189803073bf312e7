"""Robustness evaluation: the attack battery, sanity checks, and the JSON and HTML reports."""

from adversa.evaluation.attack_list import NamedAttack, resolve_attacks
from adversa.evaluation.battery import (
    DEFAULT_ATTACKS,
    AttackSummary,
    EvalResult,
    SweepResult,
    evaluate,
    evaluate_sweep,
)

__all__ = [
    "DEFAULT_ATTACKS",
    "AttackSummary",
    "EvalResult",
    "NamedAttack",
    "SweepResult",
    "evaluate",
    "evaluate_sweep",
    "resolve_attacks",
]
