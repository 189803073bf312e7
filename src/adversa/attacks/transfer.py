"""Transfer attack: craft adversarial examples on a surrogate model with any white-box attack,
then use them against the target (Papernot, McDaniel & Goodfellow 2016, "Transferability in
Machine Learning", arXiv:1605.07277; Carlini et al. 2019 list it among the attacks every
evaluation should run).

The target is only queried for the harness's final check, so the attack needs label access
to it. The surrogate's forward and backward passes are counted in the result's cost as well:
a transfer attack is cheap for the target, not free.

Example::

    attack = get_attack("transfer", threat, surrogate=my_other_model, attack="pgd")
    result = attack(target.labels_only(), x, y)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from adversa.attacks.base import AttackBase, get_attack, register_attack
from adversa.errors import require
from adversa.model import Access, Model, as_model


@register_attack("transfer")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Transfer(AttackBase):
    access = Access.LABELS

    surrogate: Model | nn.Module | None = None  # white-box model the examples are crafted on
    attack: str = "pgd"  # registry name of the white-box attack run on the surrogate

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.surrogate, Model | nn.Module),
            "attack 'transfer' needs a surrogate model (library: surrogate=..., "
            "CLI: --surrogate MODEL)",
        )
        require(self.attack != "transfer", "a transfer attack cannot use 'transfer' inside")
        get_attack(self.attack, self.threat, seed=self.seed)

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        surrogate = as_model(self.surrogate, self.threat.bounds)
        inner = get_attack(self.attack, self.threat, seed=self.seed)
        with surrogate.counting() as spent:
            x_adv = inner(surrogate, x.to(surrogate.device), y.to(surrogate.device)).x_adv
        if surrogate.meter is not model.meter:  # else its passes were counted already
            model.meter.add(spent.freeze())  # in the scopes open on the target
        return x_adv.to(x.device)
