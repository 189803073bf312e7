"""Model wrapping, cost counting, query views, the model/data check and weight reading
(loading a user's model from a spec is `adversa.load`)."""

from adversa.model.accepts import check_model_accepts, diagnose_mismatch
from adversa.model.cost import Cost, CostCounter
from adversa.model.wrapped import Access, LabelsOnly, Model, ScoresOnly

__all__ = [
    "Access",
    "Cost",
    "CostCounter",
    "LabelsOnly",
    "Model",
    "ScoresOnly",
    "check_model_accepts",
    "diagnose_mismatch",
]
