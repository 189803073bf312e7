"""Reading logits out of what a module returns: a tensor, an output with `logits` (a Hugging
Face `ModelOutput`, a dict, a named tuple), or a tuple whose first tensor is the logits."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def take_logits(out: object) -> tuple[Tensor | None, str]:
    """(logits, which part of `out` they are), or (None, "") when `out` holds none."""
    if isinstance(out, Mapping):
        value = out.get("logits")
        return (value, "its 'logits' entry") if isinstance(value, Tensor) else (None, "")
    value = getattr(out, "logits", None)
    if isinstance(value, Tensor):
        return value, "its .logits"
    if isinstance(out, tuple | list):
        for i, item in enumerate(out):
            if isinstance(item, Tensor):
                return item, f"element {i}"
    return None, ""


def describe_output(out: object) -> str:
    """What a module returned, for a message: the type and, for containers, their parts."""
    kind = type(out).__name__
    if isinstance(out, Mapping):
        keys = ", ".join(repr(k) for k in list(out)[:6])
        return f"a {kind} with keys [{keys}]"
    if isinstance(out, tuple | list):
        parts = ", ".join(type(item).__name__ for item in out[:6])
        return f"a {kind} of {len(out)} items ({parts})"
    return f"a {kind}"
