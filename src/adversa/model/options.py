"""The checked options of `Model`: reduced precision for attacks (`autocast`) and the
normalisation put in front of the module (`mean`, `std`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from adversa.errors import BadInput

# --autocast names -> the reduced precision attacks run in (`Model(autocast=...)`)
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_autocast(autocast: str | None, device: torch.device) -> str | None:
    if autocast is None:
        return None
    if not isinstance(autocast, str) or autocast not in AUTOCAST_DTYPES:
        raise BadInput(
            f"--autocast {autocast!r}: expected one of {', '.join(AUTOCAST_DTYPES)} (or none)"
        )
    if not torch.amp.is_autocast_available(device.type):
        raise BadInput(f"--autocast {autocast}: autocast is not available on {device.type}")
    return autocast


def check_normalization(
    mean: Sequence[float] | None, std: Sequence[float] | None
) -> dict[str, list[float]] | None:
    if mean is None and std is None:
        return None
    if mean is None or std is None:
        raise BadInput("normalisation needs both mean and std, got only one of them")
    values = {}
    for label, given in (("mean", mean), ("std", std)):
        items = [given] if isinstance(given, int | float) else given
        if (
            not isinstance(items, Sequence)
            or not items
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in items
            )
        ):
            raise BadInput(f"{label} must be a number or a list of finite numbers, got {given!r}")
        values[label] = [float(v) for v in items]
    if len(values["mean"]) != len(values["std"]):
        if 1 not in (len(values["mean"]), len(values["std"])):
            raise BadInput(
                f"mean and std need one value each or one per channel, got {len(values['mean'])} "
                f"means and {len(values['std'])} stds"
            )
        n = max(len(values["mean"]), len(values["std"]))
        values = {k: v * n if len(v) == 1 else v for k, v in values.items()}
    return values
