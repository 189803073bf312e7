"""Input validation with messages that name the problem; run once per call, not per step."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adversa.errors import BadInput, BoundsError, ShapeError, describe, is_integer, is_real
from adversa.threat import ThreatModel


def as_tensor(value: object, name: str, dtype: torch.dtype | None = None) -> Tensor:
    """Accept a tensor or an array-like; reject anything else by name."""
    if isinstance(value, Tensor):
        return value if dtype is None else value.to(dtype)
    if isinstance(value, np.ndarray | list | tuple):
        return torch.as_tensor(np.asarray(value), dtype=dtype)
    raise BadInput(f"{name} must be a tensor or an array, got {type(value).__name__}")


def check_batch(x: Tensor, y: Tensor, threat: ThreatModel, num_classes: int | None) -> None:
    """Shape, dtype, finiteness, bounds, label range and eps against the input size."""
    if not x.is_floating_point():
        raise BadInput(f"x must be floating point, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ShapeError(f"x must be a batch of shape (N, ...), got shape {tuple(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ShapeError(
            f"y must have shape ({x.shape[0]},) to match x, got shape {tuple(y.shape)}"
        )
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise BadInput(f"y must hold integer class labels, got dtype {y.dtype}")
    if x.shape[0] == 0:
        raise ShapeError("x is an empty batch")
    check_in_bounds(x, threat.bounds)
    lo, hi = threat.bounds
    if num_classes is not None:
        y_lo, y_hi = (int(v) for v in torch.aminmax(y.long()))
        if y_lo < 0 or y_hi >= num_classes:
            raise BadInput(
                f"labels must lie in [0, {num_classes - 1}] for a model with {num_classes} "
                f"classes, got labels in [{y_lo}, {y_hi}]"
            )
    dim = x[0].numel()
    if math.isfinite(threat.eps) and threat.eps > threat.max_eps(dim):
        raise BadInput(
            f"eps={threat.eps} is larger than the bounds allow: no {threat.norm} perturbation "
            f"of a {dim}-feature input in [{lo}, {hi}] exceeds {threat.max_eps(dim):.4g}"
        )


def check_in_bounds(
    x: Tensor,
    bounds: tuple[float, float],
    what: str = "x",
    hint: str = "scale the data, or declare the bounds (--bounds LO,HI)",
) -> None:
    """`BadInput` if `x` holds NaN or infinite values, `BoundsError` naming its actual range
    and `bounds` if it leaves them (by more than a rounding tolerance); one aminmax."""
    if x.numel() == 0:
        return
    lo_seen, hi_seen = (float(v) for v in torch.aminmax(x.detach()))
    if not (math.isfinite(lo_seen) and math.isfinite(hi_seen)):
        raise BadInput(f"{what} contains NaN or infinite values")
    lo, hi = bounds
    tol = 1e-6 * max(1.0, hi - lo)
    if lo_seen < lo - tol or hi_seen > hi + tol:
        raise BoundsError(
            f"{what} has values in [{lo_seen:.4g}, {hi_seen:.4g}], outside the declared bounds "
            f"[{lo}, {hi}]; {hint}"
        )


# The simple annotations `check_config_types` checks; any other name is left to the config.
_SIMPLE: dict[str, tuple[str, Any]] = {
    "int": ("an integer", is_integer),
    "float": ("a number", is_real),
    "bool": ("True or False", lambda v: isinstance(v, bool | np.bool_)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "None": ("None", lambda v: v is None),
    "tuple": ("a tuple", lambda v: isinstance(v, tuple | list)),
}


def check_config_types(config: object, label: str) -> None:
    """Check each init field of the dataclass `config` against its annotation, when that is
    built from int, float, bool, str, tuple and None (`int | None`, `tuple[float, ...]`):
    `BadInput` naming `label`, the field, the value and the expected type otherwise. An int
    is a number but a bool is neither; other annotations (a model, a threat) are left to the
    config's own `__post_init__`."""
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        if not field.init:
            continue
        annotation = (
            field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
        )
        names = [part.strip().split("[", 1)[0] for part in annotation.split("|")]
        if not names or any(name not in _SIMPLE for name in names):
            continue
        value = getattr(config, field.name)
        if not any(_SIMPLE[name][1](value) for name in names):
            expected = " or ".join(_SIMPLE[name][0] for name in names)
            raise BadInput(f"{label}: {field.name} must be {expected}, got {describe(value)}")


def check_labels(y: torch.Tensor, num_classes: int, data: str) -> None:
    """Labels `y` of the data named `data` (e.g. "--data D") against the model's number of
    classes: `BadInput` naming both ranges when a label is not a class of the model."""
    if y.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(y))
    if lo < 0 or hi >= num_classes:
        raise BadInput(
            f"{data}: labels must lie in [0, {num_classes - 1}] for a model with {num_classes} "
            f"classes, got labels in [{lo}, {hi}]"
        )
