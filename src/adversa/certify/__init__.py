"""Certified robustness: bound propagation (IBP, CROWN, CROWN-IBP), randomized smoothing,
certified training (registered in `adversa.defenses.DEFENSES` as "ibp", "crown-ibp" and
"gaussian") and the consistency check of certificates against attacks."""

from adversa.certify import training  # noqa: F401  (registers the certified-training defenses)
from adversa.certify.bounds import METHODS, bounds, margin_bounds, margins, verified
from adversa.certify.graph import Residual
from adversa.certify.run import CertifyResult, certify_and_attack, run_certification
from adversa.certify.smoothing import (
    CertificationWarning,
    CertResult,
    Smooth,
    attack_smoothed,
    min_n_to_certify,
    min_n_to_predict,
)

__all__ = [
    "METHODS",
    "CertResult",
    "CertificationWarning",
    "CertifyResult",
    "Residual",
    "Smooth",
    "attack_smoothed",
    "bounds",
    "certify_and_attack",
    "margin_bounds",
    "margins",
    "min_n_to_certify",
    "min_n_to_predict",
    "run_certification",
    "verified",
]
