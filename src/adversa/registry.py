"""A generic name -> factory registry, so the CLI, reports and tests name things by string."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from adversa.errors import BadInput, UnknownName

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-kebab names (and aliases) to factories, usually config dataclasses.

    `get(name, **overrides)` builds an instance; for a dataclass factory, unknown overrides are
    rejected with the list of valid fields instead of a bare `TypeError`.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self, name: str, *, aliases: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            for key in (name, *aliases):
                if key in self._factories or key in self._aliases:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._factories[name] = factory
            for alias in aliases:
                self._aliases[alias] = name
            return factory

        return decorate

    def canonical(self, name: str) -> str:
        if not isinstance(name, str):
            raise BadInput(f"{self.kind} name must be a string, got {name!r}")
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._factories:
            raise UnknownName(self.kind, name, [*self._factories, *self._aliases])
        return key

    def factory(self, name: str) -> Callable[..., T]:
        return self._factories[self.canonical(name)]

    def options(self, factory: Callable[..., T]) -> list[str]:
        """The option names `get` accepts for `factory`: a dataclass's init fields (a
        subclass may add spellings, e.g. a threat model's fields given flat)."""
        if not dataclasses.is_dataclass(factory):
            return []
        return [f.name for f in dataclasses.fields(factory) if f.init]

    def prepare(self, name: str, factory: Callable[..., T], overrides: dict[str, Any]) -> dict:
        """The keyword arguments `factory` is called with, from the checked `overrides`
        (as given here; a subclass may fold several options into one field)."""
        return overrides

    def get(self, name: str, **overrides: Any) -> T:
        factory = self.factory(name)
        if dataclasses.is_dataclass(factory):
            fields = set(self.options(factory))
            unknown = sorted(set(overrides) - fields)
            if unknown:
                raise BadInput(
                    f"{self.kind} {name!r} has no option {', '.join(unknown)}; "
                    f"valid options: {', '.join(sorted(fields))}"
                )
        overrides = self.prepare(name, factory, overrides)
        try:
            return factory(**overrides)
        except TypeError as exc:
            raise BadInput(f"{self.kind} {name!r}: {exc}") from None

    def list(self, pattern: str = "*", exclude: str | None = None) -> list[str]:
        names = [n for n in sorted(self._factories) if fnmatch.fnmatch(n, pattern)]
        if exclude is not None:
            names = [n for n in names if not fnmatch.fnmatch(n, exclude)]
        return names

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.strip().lower()
        return key in self._factories or key in self._aliases
