"""The text-attack report: `report.json` (numbers, config, versions, examples) and
`report.html` (one self-contained page: a table per attack, the augmentation defense's
before/after numbers, and examples with the changed words marked `<del>`/`<ins>`). Every
string from the data is escaped; both files are written atomically."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from adversa.io import atomic_write_text
from adversa.render import config_section, page_start, pct
from adversa.versions import versions

from .base import TextAttackResult

EXAMPLES = 10  # successful examples kept per attack

_TEXT_CSS = """
del{background:#fde2e1;color:#9b1c1c;text-decoration:line-through}
ins{background:#dcfce7;color:#14532d;text-decoration:none;font-weight:600}
.pair{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:10px 14px;margin:8px 0}
.pair .meta{color:#667085;font-size:.8rem}
"""


def _examples(result: TextAttackResult, class_names: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for i in result.success.nonzero().flatten().tolist()[:EXAMPLES]:
        out.append(
            {
                "index": i,
                "original": result.texts[i],
                "adversarial": result.adv_texts[i],
                "changes": [[s, e, w] for s, e, w in result.changes[i]],
                "label": class_names[int(result.labels[i])],
                "adversarial_prediction": class_names[int(result.adv_pred[i])],
                "similarity": float(result.similarity[i]),
                "words_changed": float(result.words_changed[i]),
                "queries": int(result.queries[i]),
            }
        )
    return out


def text_report(
    results: Sequence[TextAttackResult],
    *,
    config: dict[str, Any],
    class_names: Sequence[str] = ("0", "1"),
    defense: dict[str, Any] | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """The report as a JSON-ready dict."""
    return {
        "kind": "text",
        "attacks": [{**r.summary(), "examples": _examples(r, class_names)} for r in results],
        "defense": defense,
        "config": config,
        "seconds": seconds,
        "versions": versions(),
    }


def highlight(text: str, changes: Sequence[Sequence[Any]]) -> str:
    """HTML of `text` with each changed span shown as <del>old</del><ins>new</ins>."""
    parts, last = [], 0
    for start, end, new in sorted(changes):
        parts += [
            escape(text[last:start]),
            f"<del>{escape(text[start:end])}</del>",
            f"<ins>{escape(new)}</ins>",
        ]
        last = end
    parts.append(escape(text[last:]))
    return "".join(parts)


def _pct(v: float | None) -> str:
    return "–" if v is None else pct(v)


def _num(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def _ranking(attack: dict[str, Any]) -> str:
    """How words were ranked: by queries, or by gradients with the queries that saved."""
    if attack.get("config", {}).get("ranking") != "gradient":
        return "queries"
    return f"gradient ({_num(attack.get('mean_queries_saved'), '.1f')} queries saved)"


def render_text_html(report: dict[str, Any]) -> str:
    """The report page as a string."""
    cfg = report["config"]
    rows = "".join(
        f"<tr><td>{escape(a['name'])}</td><td>{a['n_attacked']}</td>"
        f"<td>{_pct(a['success_rate'])}</td><td>{_pct(a['adversarial_accuracy'])}</td>"
        f"<td>{_pct(a['mean_words_changed'])}</td><td>{_num(a['mean_similarity'])}</td>"
        f"<td>{_num(a['mean_queries'], '.1f')}</td><td>{_ranking(a)}</td>"
        f"<td>{a['seconds']:.1f}</td></tr>"
        for a in report["attacks"]
    )
    parts = [
        page_start("adversa text-attack report", _TEXT_CSS),
        "<h1>Text attacks</h1>",
        f'<p class="muted">model {escape(str(cfg.get("model")))} on '
        f"{escape(str(cfg.get('data')))}, n={escape(str(cfg.get('n')))}, seed "
        f"{escape(str(cfg.get('seed')))}</p>",
        "<h2>Attacks</h2><table><tr><th>attack</th><th>attacked</th><th>success</th>"
        "<th>accuracy after</th><th>words changed</th><th>similarity</th><th>queries</th>"
        f"<th>word ranking</th><th>seconds</th></tr>{rows}</table>",
        '<p class="muted">Success is over correctly classified texts; words changed and '
        "similarity are means over successes; queries are texts scored per attacked text.</p>",
    ]
    defense = report.get("defense")
    if defense:
        drows = "".join(
            f"<tr><td>{escape(a['name'])}</td><td>{_pct(a['success_rate_before'])}</td>"
            f"<td>{_pct(a['success_rate_after'])}</td></tr>"
            for a in defense["attacks"]
        )
        parts.append(
            f"<h2>Defense: {escape(defense['method'])}</h2>"
            f"<p>{defense['n_added']} adversarial training texts added. Clean accuracy "
            f"{_pct(defense['clean_accuracy_before'])} before, "
            f"{_pct(defense['clean_accuracy_after'])} after.</p>"
            "<table><tr><th>attack</th><th>success before</th><th>success after</th></tr>"
            f"{drows}</table>"
        )
    for attack in report["attacks"]:
        parts.append(f"<h2>Examples: {escape(attack['name'])}</h2>")
        if not attack["examples"]:
            parts.append('<p class="muted">No successful example.</p>')
        for ex in attack["examples"]:
            parts.append(
                f'<div class="pair"><div>{highlight(ex["original"], ex["changes"])}</div>'
                f'<div class="meta">{escape(ex["label"])} → '
                f"{escape(ex['adversarial_prediction'])}; similarity {ex['similarity']:.3f}; "
                f"{100 * ex['words_changed']:.0f}% of words; {ex['queries']} queries</div></div>"
            )
    parts.append(config_section(cfg, report["versions"]) + "</main></body></html>")
    return "\n".join(parts)


def write_text_report(out: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write OUT/report.json and OUT/report.html atomically; return both paths."""
    out = Path(out)
    json_path = atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    html_path = atomic_write_text(out / "report.html", render_text_html(report))
    return json_path, html_path
