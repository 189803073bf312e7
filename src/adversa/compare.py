"""`adversa compare`: one page that puts several evaluated models side by side.

Each input is an `adversa evaluate` output (a directory with `report.json`, or the file) or an
`adversa train` output (a directory with `card.json`, whose `evaluation` holds the clean test
accuracy and the robust accuracy at the defense's threat model). `compare` writes
`compare.json` (one row per model: model, data, defense, norm, eps, clean and robust accuracy,
n, attacks) and `compare.html`: a clean-versus-robust accuracy scatter (inline SVG, one
labelled point per model, the diagonal robust = clean for reference; the labels are placed so
that they stay readable with many models) and the table. A report's defense is the one its
model was trained with (a zoo entry's, or that on the card.json of the `adversa train`
directory it was loaded from) plus its input defense. Rows evaluated under different threat
models are flagged in `warnings`: their robust accuracies do not compare.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from adversa.errors import BadInput
from adversa.evaluation.report import REPORT_JSON
from adversa.io import atomic_write_text
from adversa.render import fmt, jsonable, page_start, pct
from adversa.scatter import Point
from adversa.scatter import scatter_svg as plot
from adversa.versions import versions

COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"
CARD_JSON = "card.json"
_PALETTE = (
    *("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed"),
    *("#0891b2", "#db2777", "#4b5563", "#65a30d", "#92400e"),
)


def read_row(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The comparison row of one evaluation or training output (directory or JSON file)."""
    source = Path(path)
    if source.is_dir():
        for name in (REPORT_JSON, CARD_JSON):
            if (source / name).is_file():
                source = source / name
                break
        else:
            raise BadInput(
                f"{path}: no {REPORT_JSON} (adversa evaluate) or {CARD_JSON} (adversa train) "
                "in this directory"
            )
    elif not source.is_file():
        raise BadInput(f"{path}: no such file or directory")
    try:
        data = json.loads(source.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{source}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{source}: expected a JSON object")
    label = source.parent.name if source.name in (REPORT_JSON, CARD_JSON) else source.stem
    try:
        row = _from_card(data) if "evaluation" in data else _from_report(data, source)
    except BadInput:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        kind = "training card" if "evaluation" in data else "report"
        raise BadInput(
            f"{source}: not an adversa {kind}: a field has the wrong type "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return {"label": label, "source": str(source), **row}


def _from_report(data: dict[str, Any], source: Path) -> dict[str, Any]:
    for key in ("clean_accuracy", "robust_accuracy"):
        if key not in data:
            raise BadInput(f"{source}: not an adversa report (no {key!r})")
    config = data.get("config") or {}
    eps = config.get("eps")
    eps = eps[0] if isinstance(eps, list) and eps else eps
    model = str(config.get("model", "model"))
    return {
        "model": model,
        "data": config.get("data"),
        "defense": _report_defense(config.get("defense"), model, source),
        "norm": config.get("norm"),
        "eps": eps,
        "clean_accuracy": float(data["clean_accuracy"]),
        "robust_accuracy": float(data["robust_accuracy"]),
        "n": data.get("n"),
        "attacks": [a.get("name", "?") for a in data.get("attacks", [])],
    }


def _from_card(data: dict[str, Any]) -> dict[str, Any]:
    evaluation = data.get("evaluation") or {}
    robust = evaluation.get("robust") or {}
    defense = data.get("defense")
    options = defense.get("options", {}) if isinstance(defense, dict) else {}
    name = defense.get("name") if isinstance(defense, dict) else defense
    return {
        "model": str(data.get("name") or data.get("arch") or "model"),
        "data": data.get("data"),
        "defense": name,
        "norm": robust.get("norm", options.get("norm")),
        "eps": robust.get("eps", options.get("eps")),
        "clean_accuracy": _float(evaluation.get("clean_accuracy")),
        "robust_accuracy": _float(robust.get("robust_accuracy")),
        "n": robust.get("n", evaluation.get("n")),
        "attacks": [a.get("name", "?") for a in robust.get("attacks", [])],
    }


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _report_defense(input_defense: Any, model: str, source: Path) -> str | None:
    """What defends the evaluated model: the defense it was trained with (a zoo model's, or
    that on the card of the `adversa train` directory it was loaded from), then the input
    defense of the evaluation (`--defense`), joined by " + "; None when neither is known."""
    trained = _zoo_defense(model) or _run_defense(model, source)
    named = [str(d) for d in (trained, input_defense) if d and d != "none"]
    if not named:
        return "none" if "none" in (trained, input_defense) else None
    return " + ".join(named)


def _zoo_defense(model: str) -> str | None:
    """The defense of a built-in zoo model named `model`, else None (unknown)."""
    from adversa.zoo import list_models, zoo_entry

    return zoo_entry(model).defense if model in list_models() else None


def _run_defense(model: str, source: Path) -> str | None:
    """The defense on the card of the `adversa train` directory `model` names, else None.

    A relative `model` was relative to where `adversa evaluate` ran: it is looked up from
    the current directory, then from the report's directory and each of its parents."""
    spec = Path(model).expanduser()
    bases = [Path("/")] if spec.is_absolute() else [Path.cwd(), *source.resolve().parents]
    for base in bases:
        try:  # `model` is any string a report holds: a name no path can have is no run
            card = json.loads((base / spec / CARD_JSON).read_text())
        except (OSError, ValueError):  # missing, unreadable, no valid path; not JSON
            continue
        defense = card.get("defense") if isinstance(card, dict) else None
        name = defense.get("name") if isinstance(defense, dict) else defense
        return name if isinstance(name, str) else None
    return None


def compare(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The comparison of `paths` (what `compare.json` holds)."""
    if not paths:
        raise BadInput("compare needs at least one report or training directory")
    rows = [read_row(p) for p in paths]
    labels = [r["label"] for r in rows]
    for row in rows:
        if labels.count(row["label"]) > 1:  # e.g. a/out and b/out: name the parent too
            source = Path(row["source"])
            parts = source.parent.parts if source.name in (REPORT_JSON, CARD_JSON) else source.parts
            row["label"] = "/".join(parts[-2:])
    warnings = []
    threats = {(r["norm"], r["eps"]) for r in rows if r["robust_accuracy"] is not None}
    if len(threats) > 1:
        listed = ", ".join(f"{n} eps={fmt(e)}" for n, e in sorted(threats, key=str))
        warnings.append(
            f"the models were evaluated under different threat models ({listed}): "
            "their robust accuracies are not comparable"
        )
    data_sets = sorted({str(r["data"]) for r in rows if r["data"] is not None})
    if len(data_sets) > 1:
        warnings.append(f"the models were evaluated on different data ({', '.join(data_sets)})")
    missing = [r["label"] for r in rows if r["robust_accuracy"] is None]
    if missing:
        warnings.append(f"no robust accuracy for {', '.join(missing)} (not plotted)")
    return jsonable(
        {
            "rows": rows,
            "warnings": warnings,
            "versions": versions(),
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )


def write_compare(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write `compare(...)`'s result as `compare.json` and `compare.html` into `out_dir`
    (created if missing), each atomically."""
    out = Path(out_dir)
    json_path, html_path = out / COMPARE_JSON, out / COMPARE_HTML
    atomic_write_text(json_path, json.dumps(result, indent=2, allow_nan=False) + "\n")
    atomic_write_text(html_path, render_compare_html(result))
    return json_path, html_path


def render_compare_html(result: dict[str, Any]) -> str:
    """The self-contained page: warnings, scatter, table."""
    rows = result["rows"]
    warnings = "".join(f"<li>{escape(w)}</li>" for w in result["warnings"])
    return "\n".join(
        [
            page_start("adversa comparison"),
            f"<h1>Comparison of {len(rows)} model(s)</h1>",
            f'<div class="muted">{escape(result["timestamp"])} UTC</div>',
            f'<div class="warn"><ul>{warnings}</ul></div>' if warnings else "",
            "<h2>Clean versus robust accuracy</h2>",
            scatter_svg(rows),
            '<div class="muted">Up and to the right is better; no model can lie above the '
            "diagonal (robust accuracy never exceeds clean accuracy).</div>",
            "<h2>Models</h2>",
            _table(rows),
            "</main></body></html>\n",
        ]
    )


def scatter_svg(rows: Sequence[dict[str, Any]]) -> str:
    """Robust against clean accuracy, both on [0, 1], one labelled point per row (rows
    without a robust accuracy are left out), coloured by defense; the labels are laid out so
    that they do not overlap (`adversa.scatter`)."""
    colours = _colours(rows)
    points = [
        Point(
            x=r["clean_accuracy"],
            y=r["robust_accuracy"],
            label=r["label"],
            colour=colours[r["defense"]],
            tip=f"{r['label']}: clean {pct(r['clean_accuracy'])}, "
            f"robust {pct(r['robust_accuracy'])}",
        )
        for r in rows
        if r["clean_accuracy"] is not None and r["robust_accuracy"] is not None
    ]
    legend = [(str(d or "unknown"), c) for d, c in colours.items()]
    return plot(points, x_label="clean accuracy", y_label="robust accuracy", legend=legend)


def _colours(rows: Sequence[dict[str, Any]]) -> dict[Any, str]:
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    return {d: _PALETTE[i % len(_PALETTE)] for i, d in enumerate(defenses)}


def _table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "<tr><th>model</th><th>data</th><th>defense</th><th>threat model</th><th>clean</th>"
        "<th>robust</th><th>n</th><th>attacks</th></tr>"
    )

    def cell(value: Any) -> str:
        return "—" if value is None else escape(fmt(value))

    body = "".join(
        f"<tr><td><code>{escape(r['label'])}</code><br>"
        f'<span class="muted">{escape(r["model"])}</span></td>'
        f"<td>{cell(r['data'])}</td><td>{cell(r['defense'])}</td>"
        f"<td>{cell(r['norm'])}, eps = {cell(r['eps'])}</td>"
        f"<td>{'—' if r['clean_accuracy'] is None else pct(r['clean_accuracy'])}</td>"
        f"<td>{'—' if r['robust_accuracy'] is None else pct(r['robust_accuracy'])}</td>"
        f"<td>{cell(r['n'])}</td><td>{escape(', '.join(r['attacks']))}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def summary(result: dict[str, Any]) -> str:
    """Terminal lines: one per model, then the warnings."""
    lines = [f"{'model':<28} {'defense':<14} {'threat':<16} {'clean':>7} {'robust':>7}"]
    for r in result["rows"]:
        threat = f"{r['norm']} {fmt(r['eps'])}" if r["norm"] else "-"
        robust = "-" if r["robust_accuracy"] is None else pct(r["robust_accuracy"])
        clean = "-" if r["clean_accuracy"] is None else pct(r["clean_accuracy"])
        lines.append(
            f"{r['label']:<28} {r['defense'] or '-':<14} {threat:<16} {clean:>7} {robust:>7}"
        )
    lines.extend(f"warning: {w}" for w in result["warnings"])
    return "\n".join(lines)
