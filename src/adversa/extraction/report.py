"""report.json and report.html of `adversa extract`: fidelity versus queries per method, with
and without the API-side defense, the defense's cost to honest users and the transfer attack
from the copy. Both files are written atomically."""

from __future__ import annotations

import datetime
import json
from html import escape
from pathlib import Path
from typing import Any

from adversa.io import atomic_write_text
from adversa.render import (
    cards,
    config_section,
    jsonable,
    kv_table,
    line_chart_svg,
    page_start,
    pct,
    run_line,
    warnings_block,
)


def write_extract_reports(directory: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write DIR/report.json and DIR/report.html atomically; return both paths."""
    data = jsonable(report)
    data.setdefault("timestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    out = Path(directory)
    json_path = atomic_write_text(out / "report.json", json.dumps(data, indent=2) + "\n")
    return json_path, atomic_write_text(out / "report.html", render_extract_html(data))


def render_extract_html(data: dict[str, Any]) -> str:
    """The self-contained page: headline cards, the curve, per-method table, defense, transfer."""
    transfer = data["transfer"]
    defenses = data.get("defenses") or [data["defense"]]
    labels = [d["defense"] for d in defenses if d["defense"] != "none"]
    head = [
        ("fidelity (best method)", pct(data["fidelity"])),
        ("copy accuracy", pct(data["accuracy"])),
        ("queries", f"{data['queries']:,}"),
        ("backward passes", str(data["backward_calls"])),
        (f"target under transfer, linf {transfer['eps']:g}", pct(transfer["robust_accuracy"])),
    ]
    series = []
    for row in data["methods"]:
        for label, curve in row["curves"].items():
            name = row["name"] if label == "none" else f"{row['name']} + {label}"
            series.append((name, [(p["queries"], p["fidelity"]) for p in curve]))
    chart = line_chart_svg(
        series[0][1],
        "queries",
        x_name="queries",
        label="fidelity versus queries",
        name=series[0][0],
        series=series[1:],
    )
    rows = "".join(
        f"<tr><td>{escape(r['name'])}</td><td>{pct(r['fidelity'])}</td><td>{pct(r['accuracy'])}"
        f"</td><td>{r['queries']:,}</td>"
        + "".join(f"<td>{_defended(r, label)}</td>" for label in labels)
        + "</tr>"
        for r in data["methods"]
    )
    table = (
        "<table><tr><th>method</th><th>fidelity</th><th>copy accuracy</th><th>queries</th>"
        + "".join(f"<th>fidelity with {escape(label)}</th>" for label in labels)
        + f"</tr>{rows}</table>"
    )
    defense_html = [
        f"<h2>Defense: {escape(d['defense'])}, and its cost to honest users</h2>"
        + kv_table(_for_people(d, DEFENSE_LABELS))
        for d in defenses
    ]
    return "\n".join(
        [
            page_start(f"adversa extract: {data['target']}"),
            f"<h1>Model extraction of {escape(str(data['target']))}</h1>",
            run_line(data["timestamp"], data["seed"], data["seconds"]),
            cards(head),
            warnings_block(data.get("warnings") or [], ok=""),
            "<h2>Fidelity versus queries</h2>",
            '<p class="muted">Fidelity: share of the test data on which the copy and the target '
            "agree. Dashed lines: further methods, or the same method against the defended API."
            "</p>",
            chart,
            "<h2>Methods at the full budget</h2>",
            table,
            *defense_html,
            "<h2>The copy as a surrogate (transfer attack)</h2>",
            kv_table(_for_people(transfer, TRANSFER_LABELS)),
            _blackbox_html(transfer.get("blackbox"), transfer),
            config_section(data["config"], data["versions"]),
            "</main></body></html>",
        ]
    )


def _blackbox_html(box: dict[str, Any] | None, transfer: dict[str, Any]) -> str:
    """The score-based attack at the extraction's budget (and the doubling ladder) beside the
    transfer attacks: one row per attack and per-point budget."""
    if not box:
        return ""
    rows = [
        (
            "transfer from the copy",
            f"{box['total_budget']:,} (extraction)",
            transfer["copy_robust_accuracy"],
        )
    ]
    if "independent_robust_accuracy" in transfer:
        rows.append(
            (
                "transfer from the independent surrogate",
                "0 (labelled data)",
                transfer["independent_robust_accuracy"],
            )
        )
    for row in [box, *box.get("ladder", [])]:
        label = f"{box['attack']}, {row['queries_per_point']:,} per point"
        rows.append((label, f"{row['queries']:,}", row["robust_accuracy"]))
    body = "".join(
        f"<tr><td>{escape(a)}</td><td>{q}</td><td>{pct(r) if r is not None else '–'}</td></tr>"
        for a, q, r in rows
    )
    return (
        "<h3>Against a score-based attack at the same number of queries</h3>"
        f'<p class="muted">{escape(box["rule"])} ({box["n"]} points). Further rows double the '
        "per-point budget until the attack matches the transfer from the copy.</p>"
        "<table><tr><th>attack</th><th>target queries</th><th>target robust accuracy</th></tr>"
        f"{body}</table>"
    )


def _defended(row: dict[str, Any], label: str) -> str:
    defended = (row.get("defended") or {}).get(label)
    return pct(defended["fidelity"]) if defended else "–"


def extract_summary(report: dict[str, Any]) -> str:
    """Lines for the terminal: per method its fidelity and accuracy, the defense, transfer."""
    lines = [
        f"{r['name']:<10} fidelity {100 * r['fidelity']:5.1f}%  "
        f"accuracy {100 * r['accuracy']:5.1f}%  queries {r['queries']:,}"
        + "".join(
            f"  with {label} {100 * d['fidelity']:5.1f}%"
            for label, d in (r.get("defended") or {}).items()
        )
        for r in report["methods"]
    ]
    t = report["transfer"]
    for d in report.get("defenses") or []:
        lines.append(
            f"defense {d['defense']}: honest label accuracy {100 * d['label_accuracy']:.1f}% "
            f"(undefended {100 * d['label_accuracy_undefended']:.1f}%), mean probability change "
            f"{d['probability_change_mean']:.3f} (total variation)"
        )
    line = (
        f"transfer (linf {t['eps']:g}, n {t['n']}): target robust accuracy from the copy "
        f"{100 * t['robust_accuracy']:.1f}%"
    )
    if "independent_robust_accuracy" in t:
        line += f", from an independent surrogate {100 * t['independent_robust_accuracy']:.1f}%"
    lines.append(line)
    if t.get("blackbox"):
        box = t["blackbox"]
        ra = box["robust_accuracy"]
        lines.append(
            f"{box['attack']} at the same {box['total_budget']:,} queries "
            f"({box['queries_per_point']} per point, {box['queries']:,} spent): target robust "
            f"accuracy " + (f"{100 * ra:.1f}%" if ra is not None else "n/a (budget too small)")
        )
        if box.get("ladder"):
            m = box["matched"]
            lines.append(
                f"{box['attack']} matches the transfer with {m['queries_per_point']} queries per "
                f"point ({m['queries']:,} spent)"
                if m
                else f"{box['attack']} does not match the transfer within "
                f"{box['ladder'][-1]['queries_per_point']} queries per point"
            )
    return "\n".join([*lines, *(f"warning: {w}" for w in report.get("warnings") or [])])


# report.json keys -> how the HTML names them; shares print as percentages
DEFENSE_LABELS = {
    "label_accuracy": "honest users: accuracy of the returned labels",
    "label_accuracy_undefended": "the same without the defense",
    "label_accuracy_cost": "accuracy lost by honest users",
    "labels_changed": "returned labels changed",
    "probability_change_mean": "probability change, mean (total variation)",
    "probability_change_max": "probability change, largest",
    "fidelity_without": "copy fidelity without the defense",
    "fidelity_with": "copy fidelity with the defense",
    "fidelity_drop": "fidelity lost by the attacker",
}
TRANSFER_LABELS = {
    "clean_accuracy": "target accuracy, clean",
    "copy_robust_accuracy": "target accuracy under the attack from the copy",
    "copy_surrogate_accuracy": "the copy's own accuracy",
    "independent_robust_accuracy": "target accuracy under the attack from an independent surrogate",
    "independent_surrogate_accuracy": "the independent surrogate's own accuracy",
    "robust_accuracy": "target robust accuracy (from the copy)",
}
_SHARES = ("accuracy", "fidelity", "labels_changed")


def _for_people(values: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """`values` keyed by their labels (unknown keys kept as they are, nested ones dropped),
    shares in [0, 1] as percentages."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict | list) or key == "defense":
            continue
        share = isinstance(value, float) and any(part in key for part in _SHARES)
        out[labels.get(key, key.replace("_", " "))] = pct(value) if share else value
    return out
