"""`Report`: the record of an evaluation, written as `report.json` (atomically) and rendered as
`report.html`.

With several eps values, `results` holds one entry per eps in the order given, `curve` the
(eps, robust accuracy) points ordered by eps, and the top-level `robust_accuracy` and `attacks`
are those of the FIRST eps listed (the headline threat model). `warnings` collects every
warning of the evaluation; per-eps warnings are also kept in each entry of `results`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from adversa.evaluation.battery import AttackSummary, EvalResult, SweepResult
from adversa.io import atomic_write_text
from adversa.render import jsonable
from adversa.versions import versions

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Everything `report.json` holds; `to_dict()` is its exact content."""

    clean_accuracy: float  # share of the n points the model classifies correctly
    robust_accuracy: float  # per-sample worst case over all attacks, at the first eps listed
    n: int  # points evaluated
    attacks: tuple[dict[str, Any], ...]  # per attack at the first eps, in cascade order
    warnings: tuple[str, ...]  # sanity-check and skipped-attack warnings
    config: dict[str, Any]  # what was evaluated and how (model, data, norm, eps, attacks, ...)
    versions: dict[str, str]  # adversa, torch, numpy, python, platform
    seed: int
    results: tuple[dict[str, Any], ...]  # one entry per eps, in the order given
    curve: tuple[dict[str, float], ...]  # {eps, robust_accuracy}, ordered by eps
    masking_sweep: tuple[dict[str, float], ...]  # check_masking's sweep to the full range
    timestamp: str  # UTC, ISO 8601, when the report was made
    seconds: float  # total wall time
    # input-side defense: naive and adaptive robust accuracy side by side (see
    # adversa.evaluation.adaptive_eval); omitted from report.json when None
    defense: dict[str, Any] | None = None
    # `evaluate --certify`: verified accuracy per eps beside the empirical one (see
    # adversa.certify.consistency); omitted from report.json when empty
    certified: tuple[dict[str, Any], ...] = ()
    # tabular data: the gallery's fooled examples with the features the attack changed, in
    # original units when the data set was scaled (`write_reports`); omitted when empty
    feature_changes: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_results(
        cls,
        results: SweepResult | EvalResult,
        *,
        config: Mapping[str, Any] | None = None,
        seconds: float | None = None,
    ) -> Report:
        """Build a report; `config` adds to (and overrides) what the results know: norm, eps,
        bounds, attacks, n and seed. `seconds` defaults to the evaluation's own wall time."""
        if isinstance(results, EvalResult):
            sweep = SweepResult((results,), results.warnings, results.seconds)
        else:
            sweep = results
        first = sweep.results[0]
        base: dict[str, Any] = {
            "norm": first.threat.norm,
            "eps": [r.eps for r in sweep.results],
            "bounds": list(first.threat.bounds),
            "attacks": [a.name for a in first.attacks],
            "n": first.n,
            "seed": first.seed,
        }
        merged = dict(config or {})
        for key, value in base.items():
            merged.setdefault(key, value)
        return cls(
            clean_accuracy=first.clean_accuracy,
            robust_accuracy=first.robust_accuracy,
            n=first.n,
            attacks=tuple(attack_entry(a) for a in first.attacks),
            warnings=tuple(sweep.warnings),
            config=merged,
            versions=versions(),
            seed=first.seed,
            results=tuple(result_entry(r) for r in sweep.results),
            curve=tuple({"eps": e, "robust_accuracy": a} for e, a in sweep.curve),
            masking_sweep=tuple({"eps": e, "robust_accuracy": a} for e, a in sweep.masking_curve),
            timestamp=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            seconds=sweep.seconds if seconds is None else float(seconds),
        )

    def to_dict(self) -> dict[str, Any]:
        out = jsonable(dataclasses.asdict(self))
        if out["defense"] is None:
            del out["defense"]
        if not out["certified"]:
            del out["certified"]
        if not out["feature_changes"]:
            del out["feature_changes"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write `to_json()` to `path` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        atomic_write_text(path, self.to_json())
        return path


def attack_entry(summary: AttackSummary) -> dict[str, Any]:
    return {
        "name": summary.name,
        "robust_accuracy": summary.robust_accuracy,
        "newly_broken": summary.newly_broken,
        "attacked": summary.attacked,
        "forward_calls": summary.cost.forward,
        "backward_calls": summary.cost.backward,
        "queries": summary.cost.queries,
        "seconds": summary.cost.seconds,
        "config": summary.config,
    }


def result_entry(result: EvalResult) -> dict[str, Any]:
    return {
        "eps": result.eps,
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "n_robust": int(result.robust.sum()),
        "attacks": [attack_entry(a) for a in result.attacks],
        "warnings": list(result.warnings),
        "seconds": result.seconds,
        "check_cost": result.check_cost.to_dict(),
    }


def write_reports(
    out_dir: str | os.PathLike[str],
    report: Report,
    results: SweepResult | EvalResult | None = None,
    *,
    kind: str | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    feature_names: tuple[str, ...] | list[str] | None = None,
    scaler: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write `report.json` and `report.html` into `out_dir` (created if missing), each
    atomically. `results` (optional) supplies the examples for the HTML gallery. For tabular
    data the report also lists, per gallery example, the features the attack changed in
    original units when `scaler` (a data set's `meta["scaler"]`) is given to undo the
    scaling, else in input units."""
    from adversa.evaluation.html import render_html

    if results is not None and kind == "tabular":
        report = _with_feature_changes(report, results, scaler, feature_names, class_names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = report.write_json(out / REPORT_JSON)
    html = render_html(
        report, results, kind=kind, class_names=class_names, feature_names=feature_names
    )
    html_path = out / REPORT_HTML
    atomic_write_text(html_path, html)
    return json_path, html_path


def _with_feature_changes(
    report: Report,
    results: SweepResult | EvalResult,
    scaler: Mapping[str, Any] | None,
    feature_names: tuple[str, ...] | list[str] | None,
    class_names: tuple[str, ...] | list[str] | None,
) -> Report:
    from adversa.evaluation.html import GALLERY_SIZE, _first_result
    from adversa.tabular.changes import example_changes

    result = _first_result(results)
    if result is None or result.x.dim() != 2:
        return report
    if scaler is not None and len(scaler["min"]) != result.x.shape[1]:
        scaler = None  # a scaler of another width describes other data
    rows = torch.nonzero(result.broken_by >= 0).squeeze(1)[:GALLERY_SIZE]
    if rows.numel() == 0:
        return report
    changes = example_changes(result.x[rows], result.x_adv[rows], scaler, feature_names)

    def label(k: int) -> str | int:
        return class_names[k] if class_names is not None and k < len(class_names) else k

    entries = tuple(
        {
            "eps": result.eps,
            "index": int(i),
            "true": label(int(result.y[i])),
            "adversarial": label(int(result.adv_pred[i])),
            "attack": result.attacks[int(result.broken_by[i])].name,
            "units": "original" if scaler is not None else "input",
            "changes": row,
        }
        for i, row in zip(rows.tolist(), changes, strict=True)
    )
    return dataclasses.replace(report, feature_changes=entries)
