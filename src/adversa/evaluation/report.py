"""`Report`: the record of an evaluation, written as `report.json` (atomically) and rendered as
`report.html`.

With several eps values, `results` holds one entry per eps in the order given, `curve` the
(eps, robust accuracy) points ordered by eps, and the top-level `robust_accuracy` and `attacks`
are those of the FIRST eps listed (the headline threat model). `warnings` collects every
warning of the evaluation; per-eps warnings are also kept in each entry of `results`.

Per class (`adversa.class_metrics`): `class_metrics` gives each class's support, recall and
precision on clean inputs and after the attacks (`robust_recall`, `robust_precision`), at the
first eps (each entry of `results` has its own), and the warnings include a model no better
than the base rate or predicting one class for almost everything. With an evasion class
(`Classes.evade_class`, e.g. fraud) `evasion` counts the positives that evade: of the rows of
that class the model catches, how many an attack moves to another class.
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

from adversa.class_metrics import class_warnings, evasion, per_class
from adversa.evaluation.battery import AttackSummary, EvalResult, SweepResult
from adversa.io import atomic_write_text
from adversa.render import jsonable
from adversa.versions import versions

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Classes:
    """What the per-class numbers of a report need beyond the results: the number of classes
    and their names, the evasion class (None: no `evasion` entry), and, when the battery ran on
    a subset of the data (the rows of the evasion class), the full data's labels `y`, its clean
    predictions `clean_pred` and the battery's rows in it (`rows`), so that clean recall and
    precision cover every class; rows outside the subset keep their clean prediction."""

    num_classes: int | None = None
    names: tuple[str, ...] | None = None
    evade_class: int | None = None
    y: torch.Tensor | None = None
    clean_pred: torch.Tensor | None = None
    rows: torch.Tensor | None = None

    def predictions(self, result: EvalResult) -> tuple[torch.Tensor, ...]:
        """(labels, clean predictions, predictions after the attacks) over the full data."""
        final = torch.where(result.broken_by >= 0, result.adv_pred, result.clean_pred).cpu()
        if self.rows is None or self.y is None or self.clean_pred is None:
            return result.y.cpu(), result.clean_pred.cpu(), final
        clean = self.clean_pred.cpu()
        after = clean.clone()
        after[self.rows.cpu()] = final
        return self.y.cpu(), clean, after

    def entries(self, result: EvalResult) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """`class_metrics` and `evasion` (None without an evasion class) at `result`'s eps."""
        y, clean, after = self.predictions(result)
        metrics = per_class(y, clean, self.num_classes, names=self.names, robust_pred=after)
        if self.evade_class is None:
            return metrics, None
        name = metrics[self.evade_class].get("name", str(self.evade_class))
        return metrics, evasion(y, clean, after, self.evade_class, name=name, eps=result.eps)

    def warnings(self, result: EvalResult) -> list[str]:
        """The clean predictions' class warnings (`adversa.class_metrics.class_warnings`)."""
        y, clean, _ = self.predictions(result)
        return class_warnings(y, clean, self.num_classes, names=self.names)


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
    # per class at the first eps: support, recall and precision, clean and after the attacks
    class_metrics: tuple[dict[str, Any], ...] = ()
    # positives that evade at the first eps (see `Classes`); omitted from report.json when None
    evasion: dict[str, Any] | None = None

    @classmethod
    def from_results(
        cls,
        results: SweepResult | EvalResult,
        *,
        config: Mapping[str, Any] | None = None,
        seconds: float | None = None,
        classes: Classes | None = None,
    ) -> Report:
        """Build a report; `config` adds to (and overrides) what the results know: norm, eps,
        bounds, attacks, n and seed. `seconds` defaults to the evaluation's own wall time.
        `classes` says how to compute the per-class numbers (default: the class names in
        `config`, no evasion class, the battery's points being all the data)."""
        if isinstance(results, EvalResult):
            sweep = SweepResult((results,), results.warnings, results.seconds)
        else:
            sweep = results
        first = sweep.results[0]
        if classes is None:
            names = (config or {}).get("class_names")
            classes = Classes(names=tuple(names) if names else None)
        entries = [result_entry(r, classes) for r in sweep.results]
        warnings = list(dict.fromkeys([*sweep.warnings, *classes.warnings(first)]))
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
            warnings=tuple(warnings),
            config=merged,
            versions=versions(),
            seed=first.seed,
            results=tuple(entries),
            curve=tuple({"eps": e, "robust_accuracy": a} for e, a in sweep.curve),
            masking_sweep=tuple({"eps": e, "robust_accuracy": a} for e, a in sweep.masking_curve),
            timestamp=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            seconds=sweep.seconds if seconds is None else float(seconds),
            class_metrics=tuple(entries[0]["class_metrics"]),
            evasion=entries[0].get("evasion"),
        )

    def to_dict(self) -> dict[str, Any]:
        out = jsonable(dataclasses.asdict(self))
        if out["defense"] is None:
            del out["defense"]
        if not out["certified"]:
            del out["certified"]
        if not out["feature_changes"]:
            del out["feature_changes"]
        if out["evasion"] is None:
            del out["evasion"]
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


def result_entry(result: EvalResult, classes: Classes | None = None) -> dict[str, Any]:
    """One eps of `results`; with per-class numbers (`classes`, default: no names, no
    evasion class) and, with an evasion class, the `evasion` count."""
    metrics, evaded = (classes or Classes()).entries(result)
    entry = {
        "eps": result.eps,
        "clean_accuracy": result.clean_accuracy,
        "robust_accuracy": result.robust_accuracy,
        "n_robust": int(result.robust.sum()),
        "attacks": [attack_entry(a) for a in result.attacks],
        "warnings": list(result.warnings),
        "seconds": result.seconds,
        "check_cost": result.check_cost.to_dict(),
        "class_metrics": metrics,
    }
    if evaded is not None:
        entry["evasion"] = evaded
    return entry


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
