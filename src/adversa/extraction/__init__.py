"""Model extraction (stealing a model through its predictions) and the API-side defenses
against it (prediction poisoning included): `EXTRACTIONS` maps method names (copycat,
knockoff, knockoff-adaptive, jbda, equivalent) to configs; each runs in `run_extraction` on
the target's query-only view. `blackbox.blackbox_comparison` runs a score-based attack with
an extraction's query budget. See docs/extraction.md."""

from adversa.extraction import (  # noqa: F401  (registers)
    copycat,
    equivalent,
    jbda,
    knockoff,
    knockoff_adaptive,
)
from adversa.extraction.base import (
    EXTRACTIONS,
    ExtractionBase,
    ExtractionResult,
    accuracy,
    fidelity,
    run_extraction,
)
from adversa.extraction.defenses import APIDefense, honest_cost, parse_defense, serve
from adversa.extraction.pools import POOLS, load_pool, load_pool_groups

__all__ = [
    "EXTRACTIONS",
    "POOLS",
    "APIDefense",
    "ExtractionBase",
    "ExtractionResult",
    "accuracy",
    "fidelity",
    "honest_cost",
    "load_pool",
    "load_pool_groups",
    "parse_defense",
    "run_extraction",
    "serve",
]
