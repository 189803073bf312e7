"""The exception tree. Every error a user can cause is an `AdversaError`; the CLI maps it to
exit code 2 and prints its one-line message."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AdversaError(Exception):
    """Base class of every error adversa raises on purpose."""


class BadInput(AdversaError, ValueError):
    """An argument or a piece of data does not meet its contract."""


class ShapeError(BadInput):
    """A tensor or array has the wrong shape for where it is used."""


class BoundsError(BadInput):
    """Values lie outside the bounds the threat model declares."""


class UnknownName(BadInput, KeyError):
    """A name (attack, dataset, model, ...) is not registered; suggests the closest ones."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        self.suggestions = difflib.get_close_matches(name, self.known, n=3, cutoff=0.5)
        super().__init__(str(self))

    def __str__(self) -> str:
        hint = (
            f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?"
            if self.suggestions
            else f"; known: {', '.join(self.known)}"
        )
        return f"unknown {self.kind} {self.name!r}{hint}"


class ModelLoadError(AdversaError):
    """A model file or factory could not be loaded."""


class AccessError(AdversaError):
    """An attack asked for more access (gradients, scores) than the model view grants."""


def require(condition: bool, message: str) -> None:
    """Raise `BadInput(message)` unless `condition`; for validating configs in __post_init__."""
    if not condition:
        raise BadInput(message)
