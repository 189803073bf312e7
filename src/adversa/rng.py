"""Seeded random generators. The library never seeds torch's global generator."""

from __future__ import annotations

import torch

from adversa.errors import BadInput, describe, is_integer

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` on `device`, seeded with `seed` (an integer, not a bool or a
    float, within torch's 64-bit range). Anything else raises `BadInput` naming it."""
    if not is_integer(seed):
        raise BadInput(f"seed must be an integer, got {describe(seed)}")
    if not SEED_RANGE[0] <= int(seed) <= SEED_RANGE[1]:
        raise BadInput(f"seed must fit in 64 bits (-2**63 to 2**64 - 1), got {seed}")
    if not isinstance(device, torch.device | str):
        raise BadInput(f"device must be a torch.device or a string, got {describe(device)}")
    try:
        gen = torch.Generator(device=torch.device(device))
    except RuntimeError:
        raise BadInput(
            f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from None
    gen.manual_seed(int(seed))
    return gen
