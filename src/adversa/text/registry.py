"""The registry of text attacks: names ("pwws", "deepwordbug") -> config classes."""

from __future__ import annotations

from adversa.registry import Registry

TEXT_ATTACKS: Registry = Registry("text attack")
