"""The battery's inputs per eps: the threat models of a sweep, and the attacks built for each.

This is the one place that turns an eps sweep into threat models (validating every eps once)
and attack names into attack objects (once per eps): `sweep_threats` and `resolve_attacks`,
both called by `battery.evaluate_sweep`. An attack is named by its registry name, by a
`NamedAttack` (a name with option overrides such as `steps`, or `surrogate` for "transfer"),
or given as an attack object made at any eps, whose threat is replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from adversa.attacks import ATTACKS, AttackBase, get_attack
from adversa.errors import BadInput, describe, is_real
from adversa.threat import NORMS, ThreatModel


@dataclasses.dataclass(frozen=True, slots=True)
class NamedAttack:
    """A registry name with option overrides; the battery builds it at each eps with the
    evaluation's seed, e.g. `NamedAttack("pgd", {"steps": 20})`."""

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise BadInput(f"attack name must be a string, got {describe(self.name)}")
        if not isinstance(self.options, Mapping):
            raise BadInput(f"attack options must be a mapping, got {describe(self.options)}")
        object.__setattr__(self, "name", ATTACKS.canonical(self.name))


AttackSpec = str | NamedAttack | AttackBase


def sweep_threats(threat: ThreatModel, eps_values: Sequence[float]) -> list[ThreatModel]:
    """`threat` at each eps of `eps_values`, in order (each eps checked by `ThreatModel`)."""
    if not isinstance(threat, ThreatModel):
        raise BadInput(f"threat must be a ThreatModel, got {type(threat).__name__}")
    if threat.targeted:
        raise BadInput("evaluate measures untargeted robustness; use a threat with targeted=False")
    if not isinstance(eps_values, Sequence | Tensor | np.ndarray) or isinstance(eps_values, str):
        raise BadInput(f"eps_values must be a list of numbers, got {describe(eps_values)}")
    if len(eps_values) == 0:
        raise BadInput("eps_values must hold at least one eps")
    return [threat.with_eps(_eps_value(eps)) for eps in eps_values]


def _eps_value(eps: object) -> float:
    """One entry of `eps_values` as a float (a 0-d tensor or numpy scalar is fine)."""
    if isinstance(eps, Tensor | np.ndarray) and eps.ndim == 0:
        eps = eps.item()
    if not is_real(eps):
        raise BadInput(f"eps_values must hold numbers, got {describe(eps)}")
    return float(eps)


def resolve_attacks(
    attacks: Sequence[AttackSpec] | AttackSpec, threat: ThreatModel, seed: int
) -> tuple[list[AttackBase], list[str]]:
    """Build the attack list for `threat`: names (and `NamedAttack`s) through the registry
    with `seed`, objects with their threat replaced. A preset (an attack with a `components()`
    method, such as "autoattack") is expanded into its components, so that each gets its own
    row, cost and place in the cascade. Returns the attacks and one warning per skipped
    attack (one that does not support the threat's norm)."""
    if not isinstance(attacks, str | NamedAttack | AttackBase | list | tuple):
        raise BadInput(
            f"attacks must be a registry name, an attack object or a list of them, got "
            f"{describe(attacks)}"
        )
    items = [attacks] if isinstance(attacks, str | NamedAttack | AttackBase) else list(attacks)
    if not items:
        raise BadInput("attacks must name at least one attack")
    resolved: list[AttackBase] = []
    skipped: list[str] = []
    for item in items:
        if isinstance(item, str):
            item = NamedAttack(item)
        if isinstance(item, NamedAttack):
            name, norms = item.name, getattr(ATTACKS.factory(item.name), "norms", NORMS)
        elif isinstance(item, AttackBase):
            name, norms = item.name, item.norms
        else:
            raise BadInput(
                f"attacks must be registry names or attack objects, got {type(item).__name__}"
            )
        if threat.norm not in norms:
            skipped.append(
                f"skipped attack {name!r}: it supports {', '.join(norms)}, not {threat.norm}"
            )
            continue
        if isinstance(item, NamedAttack):
            attack = get_attack(name, threat, **{"seed": seed, **item.options})
        else:
            attack = item if item.threat == threat else dataclasses.replace(item, threat=threat)
        components = getattr(attack, "components", None)
        resolved.extend(components() if callable(components) else [attack])
    if not resolved:
        raise BadInput(
            f"none of the attacks supports the {threat.norm} norm: " + "; ".join(skipped)
        )
    return resolved, skipped
