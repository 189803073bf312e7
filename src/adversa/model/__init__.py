"""Model wrapping, cost counting, query views and loading."""

from adversa.model.accepts import check_model_accepts, diagnose_mismatch
from adversa.model.cost import Cost, CostCounter
from adversa.model.load import load_model
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
    "load_model",
]
