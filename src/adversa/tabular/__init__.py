"""Tabular threat models and non-PyTorch models.

- `FeatureConstraints`, `ConstrainedThreat`: per-feature bounds, immutable, integer,
  one-hot categorical, increase-only features and per-feature weights, enforced by the
  threat model's projection (so PGD/APGD and the harness yield feasible rows).
- `constraints_for`, `feature_changes`: constraints in original units; what an attack changed.
- `SklearnModel`, `load_sklearn`, `fit_surrogate`: scikit-learn estimators as query views.
- `ConstrainedAT`: adversarial training against a `ConstrainedThreat`.
- `adversa.data.fraud`: the seeded synthetic "fraud" built-in data set.
"""

from adversa.tabular.changes import FeatureChanges, constraints_for, feature_changes
from adversa.tabular.constraints import ConstrainedThreat, FeatureConstraints
from adversa.tabular.sklearn_model import SklearnModel, fit_surrogate, load_sklearn
from adversa.tabular.training import ConstrainedAT

__all__ = [
    "ConstrainedAT",
    "ConstrainedThreat",
    "FeatureChanges",
    "FeatureConstraints",
    "SklearnModel",
    "constraints_for",
    "feature_changes",
    "fit_surrogate",
    "load_sklearn",
]
