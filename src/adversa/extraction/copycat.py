"""Copycat CNN (Correia-Silva et al. 2018, "Copycat CNN: Stealing Knowledge by Persuading
Confession with Random Non-Labeled Data", arXiv:1806.05476).

Label a pool of natural, non-problem-domain inputs with the target's top-1 output and train a
copy on those hard labels. Cost: `queries` target queries (one per pool input, drawn without
replacement), no backward pass through the target.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from adversa.extraction.base import ExtractionBase, query, register_extraction
from adversa.model import Model


def draw(pool: Tensor, n: int, gen: torch.Generator) -> Tensor:
    """`n` pool inputs drawn without replacement (all of them, shuffled, when `n` exceeds the
    pool: a budget larger than the pool is never spent on repeated queries)."""
    order = torch.randperm(pool.shape[0], generator=gen, device=gen.device)
    return pool[order[:n].to(pool.device)]


@register_extraction("copycat")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Copycat(ExtractionBase):
    """Top-1 labels of `queries` random pool inputs; the copy trained on them."""

    def _extract(self, api: Model, pool: Tensor, gen: torch.Generator) -> tuple[nn.Module, dict]:
        x = draw(pool, self.queries, gen)
        labels = query(api, x).argmax(1)
        return self.fit(x, labels, api.num_classes, gen), {"transfer_set": int(x.shape[0])}
