"""Model wrapping, cost counting, query views, the model/data check and weight reading
(loading a user's model from a spec is `adversa.load`)."""

from adversa.model.accepts import check_model_accepts, diagnose_mismatch, infer_num_classes
from adversa.model.cost import Cost, CostCounter, CostMeter
from adversa.model.wrapped import Access, Model, as_model

__all__ = [
    "Access",
    "Cost",
    "CostCounter",
    "CostMeter",
    "Model",
    "as_model",
    "check_model_accepts",
    "diagnose_mismatch",
    "infer_num_classes",
]
