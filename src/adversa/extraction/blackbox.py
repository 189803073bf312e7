"""The stolen copy against score-based black-box attacks at the same number of queries.

An attacker with Q queries can spend them on extracting a copy (then run a transfer attack
from it, which costs one label query per point) or directly on a score-based black-box
attack against the target. `blackbox_comparison` runs the latter with the same total:

- matching rule: each of the n attacked points gets floor(Q / n) queries, the attack's own
  budget being one less (the harness's final verification query is the last one), so the
  measured total never exceeds Q;
- optionally, the per-point budget at which the black-box attack first matches a given
  robust accuracy (the transfer attack's): doubling the per-point budget from floor(Q / n)
  up to `max_factor` times it.

The attacks are adversa's registered score-based ones (`square`: Andriushchenko et al. 2020,
arXiv:1912.00049; `simba`: Guo et al. 2019, arXiv:1905.07121), run through the target's
scores-only view, so every pass is a counted query.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from adversa.attacks import get_attack
from adversa.errors import BadInput
from adversa.model import Access, Model
from adversa.threat import ThreatModel

RULE = "queries per point = floor(Q / n), the final verification query included"
MIN_QUERIES = {"square": 2}  # the attack's own smallest budget per point


def check_blackbox_attack(name: str) -> None:
    """`BadInput` unless `name` is a registered score-based (or label-only) attack."""
    if name == "none":
        return
    attack = get_attack(name, ThreatModel(norm="linf", eps=0.1))
    if attack.access == Access.GRADIENT or not hasattr(attack, "queries"):
        raise BadInput(
            f"--blackbox-attack {name!r}: expected a score-based attack with a query budget "
            "(square, simba) or none"
        )


def blackbox_comparison(
    target: Model,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    attack: str,
    total_queries: int,
    seed: int = 0,
    match: float | None = None,
    max_factor: int = 16,
) -> dict[str, Any]:
    """`attack` on `(x, y)` against `target` with `total_queries` spread over the points (see
    the module docstring); with `match`, also the doubling ladder up to the first per-point
    budget whose robust accuracy is <= `match`."""
    n = int(x.shape[0])
    per_point = total_queries // n
    out: dict[str, Any] = {"attack": attack, "rule": RULE, "total_budget": total_queries, "n": n}
    out |= _run(target, x, y, threat, attack, per_point, seed)
    if match is None or out["robust_accuracy"] is None or out["robust_accuracy"] <= match:
        if match is not None:
            out["matched"] = {
                k: out[k] for k in ("queries_per_point", "queries", "robust_accuracy")
            }
        return out
    ladder, matched, factor = [], None, 2
    while factor <= max_factor and matched is None:
        row = _run(target, x, y, threat, attack, per_point * factor, seed)
        ladder.append(row)
        if row["robust_accuracy"] is not None and row["robust_accuracy"] <= match:
            matched = row
        factor *= 2
    return out | {"ladder": ladder, "matched": matched, "match_target": match}


def _run(
    target: Model, x: Tensor, y: Tensor, threat: ThreatModel, name: str, per_point: int, seed: int
) -> dict[str, Any]:
    """Robust accuracy and measured queries of `name` with `per_point` queries per point."""
    row: dict[str, Any] = {"queries_per_point": per_point}
    if per_point - 1 < MIN_QUERIES.get(name, 1):
        return row | {"queries": 0, "robust_accuracy": None, "seconds": 0.0}
    attack = get_attack(name, threat, seed=seed, queries=per_point - 1)
    result = attack(target.view(Access.SCORES), x, y)
    return row | {
        "queries": result.cost.queries,
        "robust_accuracy": 1.0 - result.success_rate,
        "seconds": result.cost.seconds,
    }
