"""Knockoff Nets, random strategy (Orekondy et al. 2019, "Knockoff Nets: Stealing
Functionality of Black-Box Models", arXiv:1812.02766).

Sample a transfer set from the pool uniformly at random, query the target for its returned
probabilities and train the copy on them (cross-entropy against the soft labels), so that the
copy learns the target's confidences as well as its decisions. The paper's adaptive (bandit)
strategy is `knockoff-adaptive` (`knockoff_adaptive.py`). Cost: `queries` target queries, no
backward pass through the target.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from adversa.extraction.base import ExtractionBase, query, register_extraction
from adversa.extraction.copycat import draw
from adversa.model import Model


@register_extraction("knockoff")
@dataclasses.dataclass(frozen=True, kw_only=True)
class Knockoff(ExtractionBase):
    """Returned probabilities of `queries` random pool inputs; the copy trained on them."""

    def _extract(self, api: Model, pool: Tensor, gen: torch.Generator) -> tuple[nn.Module, dict]:
        x = draw(pool, self.queries, gen)
        probs = query(api, x)
        return self.fit(x, probs, api.num_classes, gen), {"transfer_set": int(x.shape[0])}
