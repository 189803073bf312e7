"""adversa: attack, defend and measure PyTorch classifiers."""

from adversa.attacks import Attack, AttackResult, get_attack, list_attacks
from adversa.errors import AdversaError
from adversa.evaluation import evaluate, evaluate_sweep
from adversa.evaluation.report import Report
from adversa.model import Cost, Model
from adversa.threat import ThreatModel

# the physical attacks register in ATTACKS on import: "patch" and "rp2"
from adversa.physical import patch_attack, rp2  # noqa: F401  isort: skip

__version__ = "0.1.0"

__all__ = [
    "AdversaError",
    "Attack",
    "AttackResult",
    "Cost",
    "Model",
    "Report",
    "ThreatModel",
    "__version__",
    "evaluate",
    "evaluate_sweep",
    "get_attack",
    "list_attacks",
]
