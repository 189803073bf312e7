"""Certificates checked against attacks on the same points (Carlini et al. 2019's "certified
vs empirical" check): a certified point must never be broken, and certified accuracy can never
exceed empirical robust accuracy at the same eps. Either violation is a bug in the verifier or
the attack harness, and is reported as one.

Cost: one bound computation per point and eps (IBP: about one forward pass; CROWN: one
backward linear pass per layer).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from adversa.certify.run import verify_in_batches
from adversa.evaluation.battery import ProgressFn, SweepResult
from adversa.evaluation.report import Report
from adversa.model import Model


def certify_sweep(
    model: Model, sweep: SweepResult, method: str, batch_size: int, progress: ProgressFn | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Verified accuracy at each eps of `sweep` on its points, and BUG warnings for every
    certified point an attack broke or eps where certified accuracy beats robust accuracy."""
    entries, bugs = [], []
    for result in sweep:
        start = time.perf_counter()
        ok = verify_in_batches(
            model, result.x, result.y, result.threat, method, batch_size, progress
        )
        seconds = time.perf_counter() - start
        broken = int((ok & ~result.robust).sum())
        certified = float(ok.float().mean())
        entries.append(
            {
                "eps": result.eps,
                "method": method,
                "certified_accuracy": certified,
                "robust_accuracy": result.robust_accuracy,
                "certified_but_broken": broken,
                "seconds": seconds,  # the verifier's wall time at this eps
            }
        )
        if broken:
            bugs.append(
                f"BUG: {broken} points certified by {method} at eps={result.eps:g} were broken "
                "by an attack; the verifier or the attack harness is wrong"
            )
        if certified > result.robust_accuracy:
            bugs.append(
                f"BUG: certified accuracy {certified:.2%} exceeds robust accuracy "
                f"{result.robust_accuracy:.2%} at eps={result.eps:g}"
            )
    return entries, bugs


def attach_certification(report: Report, entries: list[dict[str, Any]], bugs: list[str]) -> Report:
    return dataclasses.replace(
        report, certified=tuple(entries), warnings=tuple(dict.fromkeys((*bugs, *report.warnings)))
    )
