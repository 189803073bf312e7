"""The exception tree. Every error a user can cause is an `AdversaError`; the CLI maps it to
exit code 2 and prints its one-line message."""

from __future__ import annotations

import difflib
import numbers
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


class UnsafePickle(ModelLoadError):
    """A weights file holds pickled objects other than tensors: weights-only loading refused
    it, since unpickling them would run code named by the file."""


class AccessError(AdversaError):
    """An attack asked for more access (gradients, scores) than the model view grants."""


def require(condition: bool, message: str) -> None:
    """Raise `BadInput(message)` unless `condition`; for validating configs in __post_init__."""
    if not condition:
        raise BadInput(message)


def is_integer(value: object) -> bool:
    """An integer, as a user means it: int or numpy integer, never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number, as a user means it: int, float or numpy scalar, never a bool or a str."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def describe(value: object) -> str:
    """`value` for a one-line message: its repr (shortened), and its type when that is not
    obvious from the repr."""
    text = " ".join(repr(value).split())  # one line, even for a tensor
    if len(text) > 60:
        text = text[:57] + "..."
    if isinstance(value, str | int | float | bool | tuple | list | dict | set | type(None)):
        return text
    return f"{text} ({type(value).__name__})"
