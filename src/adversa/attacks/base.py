"""The `Attack` protocol, `AttackResult`, the attack registry and the `run_attack` harness.

Every attack is a frozen, keyword-only config dataclass deriving from `AttackBase`; it
implements `_perturb` only. Calling it goes through `run_attack`, which validates the inputs,
runs the attack in eval mode with frozen parameters inside a cost scope, projects the result
onto the threat model and re-verifies success with one final forward pass, so that the
success an attack reports can be trusted.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from adversa.checks import as_tensor, check_batch, check_config_types
from adversa.errors import AccessError, BadInput, describe
from adversa.losses import is_adversarial
from adversa.model import Access, Cost, Model, as_model, diagnose_mismatch
from adversa.registry import Registry
from adversa.rng import make_generator
from adversa.threat import NORMS, ThreatModel


@dataclasses.dataclass(frozen=True, slots=True)
class AttackResult:
    """What one attack did to one batch.

    `x_adv` has the shape, dtype and device of `x` and lies in the threat model's ball and box.
    `success` (bool, B) was checked by a final forward pass on `x_adv`, whose predicted labels
    are `pred` (B,); for a model that `rejects` inputs, its last output (the rejection) is
    never a success. A point the model already misclassifies counts as a success with
    `x_adv == x`. `distance` (B,) is measured in
    the threat model's norm. `cost` counts passes per sample and includes the final check.
    """

    name: str
    x_adv: Tensor
    success: Tensor
    pred: Tensor
    distance: Tensor
    cost: Cost
    seed: int

    @property
    def seconds(self) -> float:
        return self.cost.seconds

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())


@runtime_checkable
class Attack(Protocol):
    name: ClassVar[str]
    access: ClassVar[Access]
    threat: ThreatModel
    seed: int

    def __call__(self, model: Model | torch.nn.Module, x: Tensor, y: Tensor) -> AttackResult: ...


ATTACKS: Registry[AttackBase] = Registry("attack")


def register_attack(name: str, *, aliases: tuple[str, ...] = ()):
    """Class decorator: register an `AttackBase` subclass under `name` and set its `name`."""

    def decorate(cls: type[AttackBase]) -> type[AttackBase]:
        cls.name = name
        ATTACKS.register(name, aliases=aliases)(cls)
        return cls

    return decorate


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackBase:
    """Fields every attack shares. Subclasses add their hyper-parameters and `_perturb`."""

    name: ClassVar[str] = "attack"
    access: ClassVar[Access] = Access.GRADIENT
    norms: ClassVar[tuple[str, ...]] = NORMS

    threat: ThreatModel  # the ball (norm, eps), the box (bounds) and targeted or not
    seed: int = 0  # seeds every random choice the attack makes

    def __post_init__(self) -> None:
        if not isinstance(self.threat, ThreatModel):
            raise BadInput(f"threat must be a ThreatModel, got {type(self.threat).__name__}")
        check_config_types(self, f"attack {self.name!r}")
        if self.threat.norm not in self.norms:
            raise BadInput(
                f"attack {self.name!r} supports norms {', '.join(self.norms)}, "
                f"not {self.threat.norm!r}"
            )

    def __call__(self, model: Model | torch.nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        return run_attack(self, model, x, y)

    def _perturb(self, model: Model, x: Tensor, y: Tensor, gen: torch.Generator) -> Tensor:
        """Return adversarial candidates for `x`; the harness projects and verifies them."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The hyper-parameters as plain values, for reports."""
        out: dict[str, Any] = {"name": self.name}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = (
                dataclasses.asdict(value, dict_factory=_summarize_tensors)
                if field.name == "threat"
                else value
            )
        return out


def _summarize_tensors(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """A threat's fields for a report, a tensor (a mask) summarised by shape and count."""
    return {
        k: f"tensor {tuple(v.shape)}, {int(v.count_nonzero())} nonzero"
        if isinstance(v, Tensor)
        else v
        for k, v in items
    }


def run_attack(
    attack: AttackBase, model: Model | torch.nn.Module, x: Tensor, y: Tensor
) -> AttackResult:
    """Validate, run `attack._perturb` under a cost scope, project, verify, stamp the cost."""
    threat = attack.threat
    model = as_model(model, threat.bounds)
    if model.access < attack.access:
        raise AccessError(
            f"attack {attack.name!r} needs {attack.access.name.lower()} access, but the model "
            f"view grants only {model.access.name.lower()}"
        )
    x = as_tensor(x, "x").to(model.device)
    y = as_tensor(y, "y").to(model.device)
    if not x.is_floating_point():
        raise BadInput(f"x must be floating point, got dtype {x.dtype}")
    num_classes = model.resolve_num_classes(x)
    check_batch(x, y, threat, num_classes)
    y = y.long()
    gen = make_generator(attack.seed, model.device)
    start = time.perf_counter()
    # A black-box attack gets a query-only view even of a full model: it cannot take
    # gradients, and its queries are counted as such.
    oracle = model.view(attack.access)
    with model.frozen(), model.counting() as counter, diagnose_mismatch(model, x, data="x"):
        with model.reduced_precision():  # the search may run in lower precision (autocast)
            x_adv = attack._perturb(oracle, x.detach(), y, gen).detach().to(x.dtype)
        x_adv = threat.project(x_adv, x)
        with torch.no_grad():  # the verification always runs in the model's precision
            logits = model(x_adv)
        pred = logits.argmax(1)
        success = is_adversarial(logits, y, threat.targeted)
        if model.rejects:  # a rejected input is the defender's win, never a success
            success &= pred != logits.shape[1] - 1
    seconds = time.perf_counter() - start
    return AttackResult(
        name=attack.name,
        x_adv=x_adv,
        success=success,
        pred=pred,
        distance=threat.distance(x_adv, x),
        cost=counter.freeze(seconds),
        seed=attack.seed,
    )


def get_attack(name: str, threat: ThreatModel, **overrides: Any) -> AttackBase:
    """Build a registered attack by name, e.g. `get_attack("pgd", threat, steps=40)`."""
    if not isinstance(name, str):
        raise BadInput(f"attack name must be a string, got {describe(name)}")
    return ATTACKS.get(name, threat=threat, **overrides)


def list_attacks(pattern: str = "*") -> list[str]:
    if not isinstance(pattern, str):
        raise BadInput(f"pattern must be a string such as 'apgd*', got {describe(pattern)}")
    return ATTACKS.list(pattern)
