"""Evasion attacks. Importing this package registers every attack in `ATTACKS`."""

from adversa.attacks import (  # noqa: F401  (registration)
    apgd,
    autoattack,
    categorical,
    cw,
    deepfool,
    ead,
    fab,
    fgsm,
    hsj,
    lowprofool,
    pgd,
    simba,
    square,
    transfer,
)
from adversa.attacks.base import (
    ATTACKS,
    Attack,
    AttackBase,
    AttackResult,
    get_attack,
    list_attacks,
    register_attack,
    run_attack,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackBase",
    "AttackResult",
    "get_attack",
    "list_attacks",
    "register_attack",
    "run_attack",
]
