"""The "positives that evade" objective: which class must not slip through, and its rows.

In fraud detection (or intrusion, spam, malware) one class is what the attacker wants to
pass: a fraud that the model catches and an attacker then turns into "legit" is the failure
that matters, not a legitimate row pushed to "fraud". `evade_class` names that class; the
evaluation then attacks only its rows (an untargeted attack on a row of class c succeeds
exactly when the row leaves c, i.e. evades) and reports how many of the caught ones evade
(`adversa.class_metrics.evasion`). Data sets whose positive class is known (`POSITIVE_CLASS`:
the built-in "fraud" set's "fraud") report that count by default, over the full evaluation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adversa.data.dataset import Dataset
from adversa.errors import BadInput, is_integer

POSITIVE_CLASS: dict[str, str] = {"fraud": "fraud"}  # built-in data set -> the class to catch


def resolve_class(data: Dataset, spec: int | str, label: str = "evade_class") -> int:
    """The class index `spec` names in `data`: an index 0..K-1 (int or digits) or one of the
    data's class names (case-insensitive); anything else raises `BadInput` naming `label`."""
    names = [str(n) for n in data.class_names] if data.class_names else []
    choices = f"a class index 0-{data.num_classes - 1}"
    if names:
        choices += f" or a class name ({', '.join(names)})"
    if isinstance(spec, str) and spec.strip().lstrip("-").isdigit():
        spec = int(spec.strip())
    if is_integer(spec):
        if 0 <= int(spec) < data.num_classes:
            return int(spec)
        raise BadInput(f"{label} {spec}: expected {choices} of data {data.name!r}")
    if isinstance(spec, str):
        lowered = [n.lower() for n in names]
        if spec.strip().lower() in lowered:
            return lowered.index(spec.strip().lower())
    raise BadInput(f"{label} {spec!r}: expected {choices} of data {data.name!r}")


def default_class(data: Dataset) -> int | None:
    """The class whose evasion a data set reports by default (fraud's "fraud"), else None."""
    name = POSITIVE_CLASS.get(data.name)
    if name is None or not data.class_names or name not in data.class_names:
        return None
    return list(data.class_names).index(name)


def class_rows(data: Dataset, cls: int, label: str = "evade_class") -> Tensor:
    """Indices of the rows of class `cls` in `data` (`BadInput` when it has none)."""
    rows = torch.nonzero(data.y == cls).squeeze(1)
    if rows.numel() == 0:
        name = data.class_names[cls] if data.class_names else str(cls)
        raise BadInput(f"{label} {name!r}: none of the {len(data)} evaluated rows is of that class")
    return rows
