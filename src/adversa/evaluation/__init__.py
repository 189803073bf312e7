"""Robustness evaluation: the attack battery, sanity checks, and the JSON and HTML reports."""

from adversa.evaluation.battery import (
    DEFAULT_ATTACKS,
    AttackSummary,
    EvalResult,
    SweepResult,
    evaluate,
    evaluate_sweep,
    resolve_attacks,
)

__all__ = [
    "DEFAULT_ATTACKS",
    "AttackSummary",
    "EvalResult",
    "SweepResult",
    "evaluate",
    "evaluate_sweep",
    "resolve_attacks",
]
