"""The order of an epoch's training samples: a permutation, or a class-balanced draw.

`epoch_order(balance, y, gen)` gives the indices one epoch visits, as many as there are
samples, from the epoch's seeded generator (the loop seeds it from (seed, stage, epoch), so
every rank under torchrun draws the same order and a resumed run draws what an uninterrupted
one does). The defense then sees ordinary batches, so balancing works with every defense.

- "none": a uniform permutation (every sample once per epoch).
- "sample": class-balanced sampling with replacement, each sample drawn with probability
  proportional to 1 / n_c (n_c: the size of its class), so every class fills the same share
  of each batch on average (the re-sampling remedy for class imbalance, Japkowicz & Stephen
  2002, "The class imbalance problem: a systematic study"; Buda et al. 2018,
  arXiv:1710.05381). In expectation this is the cross-entropy weighted by 1 / n_c.
- "sqrt": a softer balance, probability proportional to 1 / sqrt(n_c) (the square-root
  re-sampling of Mahajan et al. 2018, arXiv:1805.00932): minority classes are drawn more
  often, without the precision loss of fully balanced batches.

Cost: one `bincount` and one `multinomial` draw over n samples per epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adversa.errors import BadInput

CLASS_BALANCES: tuple[str, ...] = ("none", "sample", "sqrt")
_POWER = {"sample": 1.0, "sqrt": 0.5}


def check_balance(balance: object) -> str:
    """`balance` if it names a scheme of `CLASS_BALANCES`, else `BadInput`."""
    if balance not in CLASS_BALANCES:
        raise BadInput(f"class_balance must be one of {', '.join(CLASS_BALANCES)}, got {balance!r}")
    return str(balance)


def sample_weights(balance: str, y: Tensor) -> Tensor:
    """Per-sample draw probabilities (summing to 1) of scheme `balance` for labels `y`."""
    y = y.flatten().long().cpu()
    counts = torch.bincount(y).double()
    power = _POWER.get(check_balance(balance), 0.0)
    per_class = torch.where(counts > 0, counts.clamp(min=1).pow(-power), torch.zeros_like(counts))
    weights = per_class[y]
    return weights / weights.sum()


def epoch_order(balance: str, y: Tensor, gen: torch.Generator) -> Tensor:
    """The indices (len(y),) one epoch visits: a permutation for "none", else a draw with
    replacement weighted by `sample_weights`; on the CPU, from `gen`."""
    n = int(y.shape[0])
    if check_balance(balance) == "none":
        return torch.randperm(n, generator=gen)
    return torch.multinomial(sample_weights(balance, y), n, replacement=True, generator=gen)
