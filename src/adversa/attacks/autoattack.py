"""AutoAttack-style ensembles (Croce & Hein 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", arXiv:2003.01690).

A preset is an ordered list of registry names with fixed budgets, run as a cascade: each
attack sees only the points every earlier one failed on, and a point counts as robust only if
all of them fail (the per-sample worst case). `evaluate` expands a preset into one report row
per component.

`autoattack` follows the published standard version: APGD-CE (100 steps, 1 restart; 5
restarts under L1), APGD-T (100 steps, 9 target classes; 5 under L1), FAB-T (100 steps, 9
target classes) and Square (5,000 queries). Where adversa's budgets differ from the original:
the original's L1 APGD uses "large reps" (eps grown then shrunk), which ours does not; Square
has no L1 version, so it is left out under L1 as there is nothing to run. `autoattack-fast` is
ours, not the paper's: APGD-CE (50 steps), APGD-T (3 targets x 50 steps), FAB-T (3 targets x
50 steps), Square (1,000 queries), for quick checks; never report it as AutoAttack.

Cost: the sum of the components' costs on the points each one sees.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import Tensor

from adversa.attacks.base import ATTACKS, AttackBase, register_attack
from adversa.errors import require
from adversa.model import Model

Component = tuple[str, dict[str, Any]]

PRESETS: dict[str, dict[str, list[Component]]] = {
    "standard": {
        "default": [
            ("apgd-ce", {"steps": 100, "restarts": 1}),
            ("apgd-t", {"steps": 100, "n_target_classes": 9}),
            ("fab-t", {"steps": 100, "n_target_classes": 9}),
            ("square", {"queries": 5000}),
        ],
        "l1": [
            ("apgd-ce", {"steps": 100, "restarts": 5}),
            ("apgd-t", {"steps": 100, "n_target_classes": 5}),
            ("fab-t", {"steps": 100, "n_target_classes": 9}),
        ],
    },
    "fast": {
        "default": [
            ("apgd-ce", {"steps": 50, "restarts": 1}),
            ("apgd-t", {"steps": 50, "n_target_classes": 3}),
            ("fab-t", {"steps": 50, "n_target_classes": 3}),
            ("square", {"queries": 1000}),
        ],
        "l1": [
            ("apgd-ce", {"steps": 50, "restarts": 2}),
            ("apgd-t", {"steps": 50, "n_target_classes": 3}),
        ],
    },
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ensemble(AttackBase):
    """Runs `components()` as a cascade over the points still robust."""

    preset: ClassVar[str] = "standard"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            not self.threat.targeted,
            f"{self.name!r} is an untargeted evaluation; use a targeted threat with single "
            "attacks instead",
        )

    def components(self) -> list[AttackBase]:
        """The attacks of the preset for this threat model, in cascade order."""
        table = PRESETS[self.preset]
        spec = table.get(self.threat.norm, table["default"])
        return [
            ATTACKS.get(name, threat=self.threat, seed=self.seed, **overrides)
            for name, overrides in spec
        ]

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        x_adv = x.clone()
        robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for attack in self.components():
            idx = torch.nonzero(robust).squeeze(1)
            if idx.numel() == 0:
                break
            result = attack(model, x[idx], y[idx])
            broken = idx[result.success]
            x_adv[broken] = result.x_adv[result.success]
            robust[broken] = False
        return x_adv


@register_attack("autoattack", aliases=("aa",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoAttack(Ensemble):
    preset: ClassVar[str] = "standard"


@register_attack("autoattack-fast", aliases=("aa-fast",))
@dataclasses.dataclass(frozen=True, kw_only=True)
class AutoAttackFast(Ensemble):
    preset: ClassVar[str] = "fast"
