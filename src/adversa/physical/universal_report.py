"""report.json, report.html and perturbation.pt of `adversa universal`: the held-out fooling
rate beside the random control, per class, the perturbation as an image and examples clean
versus perturbed. Every file is written atomically."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from torch import Tensor

from adversa.io import atomic_torch_save, atomic_write_text
from adversa.render import (
    cards,
    config_section,
    figure,
    jsonable,
    page_start,
    pct,
    run_line,
    warnings_block,
)

BAR_CSS = (
    ".bar{display:inline-block;height:10px;background:#2563eb;border-radius:2px;"
    "vertical-align:middle}.bar.base{background:#98a2b3}"
)


def write_universal_reports(
    directory: str | Path,
    report: Mapping[str, Any],
    perturbation: Tensor,
    examples: Mapping[str, Tensor],
) -> tuple[Path, Path, Path]:
    """Write DIR/report.json, DIR/report.html and DIR/perturbation.pt (the tensor, one input's
    shape) atomically; return the three paths."""
    data = jsonable(dict(report))
    data.setdefault("timestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    out = Path(directory)
    json_path = atomic_write_text(out / "report.json", json.dumps(data, indent=2) + "\n")
    html_path = atomic_write_text(
        out / "report.html", render_universal_html(data, perturbation, examples)
    )
    return json_path, html_path, atomic_torch_save(perturbation.cpu(), out / "perturbation.pt")


def render_universal_html(
    data: Mapping[str, Any], perturbation: Tensor, examples: Mapping[str, Tensor]
) -> str:
    """The self-contained page: cards, the perturbation, examples, the per-class table."""
    base = data["baseline"]
    cost = data["cost"]
    head = [
        (f"fooling rate, held out ({data['n']} points)", pct(data["fooling_rate"])),
        ("random perturbation, same norm", pct(base["fooling_rate"])),
        (
            "accuracy clean → perturbed",
            f"{pct(data['clean_accuracy'])} → {pct(data['perturbed_accuracy'])}",
        ),
        ("training fooling rate", pct(data["train_fooling_rate"])),
        ("forward / backward passes", f"{cost['forward']:,} / {cost['backward']:,}"),
    ]
    scale = float(perturbation.abs().max())
    shown = perturbation / (2 * scale) + 0.5 if scale > 0 else perturbation + 0.5
    names = data.get("class_names")
    return "\n".join(
        [
            page_start(f"adversa universal: {data['model']}", BAR_CSS),
            f"<h1>Universal perturbation of {escape(str(data['model']))}</h1>",
            run_line(data["timestamp"], data["seed"], data["seconds"]),
            cards(head),
            warnings_block(data.get("warnings") or [], ok=""),
            "<h2>The perturbation</h2>",
            f'<div class="ex">{figure(shown, "perturbation (rescaled)")}</div>',
            f'<p class="muted">{escape(data["method"])}, {escape(data["norm"])} eps '
            f"{data['eps']:g}; its linf norm is {data['perturbation_norm']['linf']:.4g} and its "
            f"l2 norm {data['perturbation_norm']['l2']:.4g}. Rescaled for visibility: "
            f"[-{scale:.3g}, {scale:.3g}] is mapped linearly onto black to white, mid-grey is 0. "
            "The same perturbation is added to every input (then clipped to the bounds)."
            + (
                f" Held-out points are predicted under a fresh random transformation "
                f"({escape(data['transforms'])}; the clean and the perturbed view of a point "
                "share it); the examples below are shown untransformed."
                if data["transforms"] != "none"
                else ""
            )
            + "</p>",
            "<h2>Held-out examples, clean and perturbed</h2>",
            _gallery(examples, names),
            "<h2>Per class</h2>",
            '<p class="muted">By true class: the share of points whose prediction the '
            "perturbation changes (blue) beside the random perturbation of the same norm (grey)."
            f"{_dominant(data, names)}</p>",
            _per_class_table(data["per_class"], names),
            config_section(data["config"], data["versions"]),
            "</main></body></html>",
        ]
    )


def _name(names: Sequence[str] | None, label: int) -> str:
    return str(names[label]) if names and 0 <= label < len(names) else str(label)


def _dominant(data: Mapping[str, Any], names: Sequence[str] | None) -> str:
    label = data.get("dominant_label")
    if label is None:
        return ""
    return (
        f" {pct(data['dominant_label_share'])} of the fooled points are predicted as "
        f"{escape(_name(names, label))}."
    )


def _gallery(examples: Mapping[str, Tensor], names: Sequence[str] | None) -> str:
    cards_html = []
    for i in range(int(examples["label"].shape[0])):
        label, before, after = (
            int(examples[k][i]) for k in ("label", "clean_pred", "perturbed_pred")
        )
        mark = " ✗" if after != before else ""
        cards_html.append(
            '<div class="ex">'
            + figure(
                examples["clean"][i],
                f"label {_name(names, label)}, predicted {_name(names, before)}",
            )
            + figure(examples["perturbed"][i], f"perturbed: {_name(names, after)}{mark}")
            + "</div>"
        )
    return f'<div class="gallery">{"".join(cards_html)}</div>'


def _per_class_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str] | None) -> str:
    def cell(value: float | None) -> str:
        return "–" if value is None else pct(value)

    def bars(row: Mapping[str, Any]) -> str:
        fool = row["fooling_rate"] or 0.0
        base = row["baseline_fooling_rate"] or 0.0
        return (
            f'<span class="bar" style="width:{120 * fool:.0f}px"></span><br>'
            f'<span class="bar base" style="width:{120 * base:.0f}px"></span>'
        )

    body = "".join(
        f"<tr><td>{escape(_name(names, row['class']))}</td><td>{row['n']}</td>"
        f"<td>{cell(row['fooling_rate'])}</td><td>{cell(row['baseline_fooling_rate'])}</td>"
        f"<td>{cell(row['clean_accuracy'])}</td><td>{cell(row['perturbed_accuracy'])}</td>"
        f'<td style="text-align:left">{bars(row)}</td></tr>'
        for row in rows
    )
    return (
        "<table><tr><th>class</th><th>n</th><th>fooling rate</th><th>random</th>"
        f"<th>clean accuracy</th><th>perturbed accuracy</th><th></th></tr>{body}</table>"
    )


def universal_summary(report: Mapping[str, Any]) -> str:
    """Lines for the terminal: the held-out fooling rate beside the control, accuracies."""
    base = report["baseline"]
    lines = [
        f"{report['method']} {report['norm']} eps {report['eps']:g}: fooling rate "
        f"{100 * report['fooling_rate']:.1f}% on {report['n']} held-out points "
        f"(random perturbation of the same norm: {100 * base['fooling_rate']:.1f}%)",
        f"accuracy {100 * report['clean_accuracy']:.1f}% clean, "
        f"{100 * report['perturbed_accuracy']:.1f}% perturbed; training fooling rate "
        f"{100 * report['train_fooling_rate']:.1f}% after {report['passes']} pass(es), "
        f"{report['cost']['forward']:,} forward / {report['cost']['backward']:,} backward passes",
    ]
    return "\n".join([*lines, *(f"warning: {w}" for w in report.get("warnings") or [])])
