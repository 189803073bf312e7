"""Model extraction (stealing a model through its predictions) and the API-side defenses
against it: `EXTRACTIONS` maps method names (copycat, knockoff, jbda, equivalent) to configs;
each runs in `run_extraction` on the target's query-only view. See docs/extraction.md."""

from adversa.extraction import copycat, equivalent, jbda, knockoff  # noqa: F401  (registers)
from adversa.extraction.base import (
    EXTRACTIONS,
    ExtractionBase,
    ExtractionResult,
    accuracy,
    fidelity,
    run_extraction,
)
from adversa.extraction.defenses import APIDefense, honest_cost, parse_defense, serve
from adversa.extraction.pools import POOLS, load_pool

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
    "parse_defense",
    "run_extraction",
    "serve",
]
