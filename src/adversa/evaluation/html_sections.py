"""Sections of the evaluate page (`adversa.evaluation.html`) for the optional measurements:
verified accuracy beside robust accuracy per eps (`evaluate --certify`), and the
gradient-masking checks (`--check-masking`) with their outcome, passed or not, and the eps
sweep to the full input range. Each takes `Report.to_dict()` and returns "" when the report
has nothing for it; every string from the report is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from adversa.evaluation.sanity import ITERATIVE
from adversa.render import fmt, line_chart_svg, pct

SWEEP_PREFIX = "eps sweep to the full input range: "  # the battery's prefix of its warnings


def certified_by_eps(data: dict[str, Any]) -> dict[float, dict[str, Any]]:
    """The report's certification entries keyed by eps (empty without `--certify`)."""
    return {float(e["eps"]): e for e in data.get("certified") or ()}


def certified_series(data: dict[str, Any]) -> list[tuple[str, list[tuple[float, float]]]]:
    """The curve's second series: verified accuracy against eps, from (0, clean accuracy)
    (at eps 0 a point is verified exactly when it is classified correctly)."""
    entries = certified_by_eps(data)
    if not entries:
        return []
    method = next(iter(entries.values()))["method"]
    points = [(0.0, float(data["clean_accuracy"]))] + [
        (eps, float(e["certified_accuracy"])) for eps, e in sorted(entries.items())
    ]
    return [(f"certified ({method})", points)]


def certified_note(data: dict[str, Any], eps: float) -> str:
    """`, certified (crown) 41.0%` for the foot of an attack table; "" without one."""
    entry = certified_by_eps(data).get(float(eps))
    if entry is None:
        return ""
    return f", certified ({escape(entry['method'])}) {pct(entry['certified_accuracy'])}"


def certified_section(data: dict[str, Any]) -> str:
    """Per eps: clean, robust (attacks) and verified accuracy, the points certified yet
    broken (must be 0) and the verifier's time."""
    entries = certified_by_eps(data)
    if not entries:
        return ""
    method = escape(next(iter(entries.values()))["method"])
    head = (
        "<tr><th>eps</th><th>clean accuracy</th><th>robust accuracy (attacks)</th>"
        f"<th>certified accuracy ({method})</th><th>certified but broken</th>"
        "<th>verifier seconds</th></tr>"
    )
    rows = []
    for result in sorted(data["results"], key=lambda r: float(r["eps"])):
        entry = entries.get(float(result["eps"]))
        if entry is None:
            continue
        rows.append(
            f"<tr><td>{escape(fmt(result['eps']))}</td><td>{pct(result['clean_accuracy'])}</td>"
            f"<td>{pct(result['robust_accuracy'])}</td>"
            f"<td>{pct(entry['certified_accuracy'])}</td>"
            f"<td>{int(entry['certified_but_broken'])}</td>"
            f"<td>{float(entry.get('seconds', 0.0)):.3f}</td></tr>"
        )
    note = (
        '<div class="muted">Certified accuracy is a lower bound on the true robust accuracy, '
        "robust accuracy under attack an upper bound; a point certified yet broken would be a "
        "bug in the verifier or the attacks.</div>"
    )
    return f"<h2>Certified versus robust accuracy</h2><table>{head}{''.join(rows)}</table>{note}"


def masking_section(data: dict[str, Any]) -> str:
    """The `--check-masking` checks that ran, each with its outcome, and the eps sweep to the
    full input range drawn as a curve."""
    config = data["config"]
    if not config.get("check_masking"):
        return ""
    rows = [*_convergence_rows(data), _sweep_row(data)]
    head = (
        '<tr><th>check</th><th>eps</th><th>outcome</th><th style="text-align:left">detail</th></tr>'
    )
    body = "".join(
        f"<tr><td>{escape(check)}</td><td>{escape(eps)}</td><td><b>{escape(outcome)}</b></td>"
        f'<td style="text-align:left">{escape(detail)}</td></tr>'
        for check, eps, outcome, detail in rows
    )
    parts = [f"<h2>Gradient-masking checks (--check-masking)</h2><table>{head}{body}</table>"]
    sweep = [(float(p["eps"]), float(p["robust_accuracy"])) for p in data["masking_sweep"]]
    if sweep:
        parts.append(
            "<h3>Eps sweep to the full input range</h3>"
            + line_chart_svg(
                sweep,
                f"eps ({config.get('norm', '')}), up to the full input range",
                label="robust accuracy versus eps up to the full input range",
            )
        )
    return "".join(parts)


def _convergence_rows(data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    name = "convergence (2x steps, one more restart)"
    attack = next((a for a in data["config"].get("attacks", ()) if a in ITERATIVE), None)
    if attack is None:
        return [(name, "all", "not run", f"no iterative attack ({', '.join(ITERATIVE)})")]
    rows = []
    for result in data["results"]:
        eps = fmt(result["eps"])
        failed = [w for w in result.get("warnings", ()) if w.startswith("not converged")]
        if failed:
            rows.append((name, eps, "FAILED", failed[0]))
        elif int(result["n_robust"]) == 0:
            rows.append((name, eps, "not needed", "no point left robust"))
        else:
            rows.append(
                (name, eps, "passed", f"the stronger {attack} broke at most 1% more points")
            )
    return rows


def _sweep_row(data: dict[str, Any]) -> tuple[str, str, str, str]:
    name = "eps sweep to the full input range"
    sweep = data["masking_sweep"]
    if not sweep:
        return (name, "", "not run", "")
    failed = [w[len(SWEEP_PREFIX) :] for w in data["warnings"] if w.startswith(SWEEP_PREFIX)]
    span = f"{fmt(sweep[0]['eps'])} to {fmt(sweep[-1]['eps'])}"
    if failed:
        return (name, span, "FAILED", "; ".join(failed))
    last = sweep[-1]
    return (
        name,
        span,
        "passed",
        f"robust accuracy never rises with eps and falls to {pct(last['robust_accuracy'])} "
        f"at eps = {fmt(last['eps'])} (chance or below)",
    )


CLASS_ROWS = 20  # classes shown in the page's table (all of them are in report.json)


def evasion_card(data: dict[str, Any]) -> tuple[str, str] | None:
    """The headline card for the positives that evade: ("frauds that get through ...",
    "3 of 5 caught (60.0%)"), or None without an evasion class."""
    entry = data.get("evasion")
    if not entry:
        return None
    rate = entry["evade_rate"]
    value = f"{entry['evaded']} of {entry['caught']} caught"
    value += f" ({pct(rate)})" if rate is not None else ""
    return (f"{entry['name']} rows that get through (evade)", value)


def points_caption(data: dict[str, Any]) -> str:
    """The headline's points: `39 (class fraud only, of 800)` when only one class's rows
    were attacked, else the number."""
    config = data["config"]
    if config.get("evade_class") is None or not data.get("evasion"):
        return str(data["n"])
    name = data["evasion"]["name"]
    return f"{data['n']} (class {name} only, of {config.get('n_all', '?')})"


def class_section(data: dict[str, Any]) -> str:
    """Per class at the first eps: rows, recall and precision, clean and after the attacks,
    and the positives that evade. At most `CLASS_ROWS` classes (the lowest clean recall
    first when there are more); report.json has every class."""
    metrics = list(data.get("class_metrics") or ())
    if not metrics:
        return ""
    shown = metrics
    note = ""
    if len(metrics) > CLASS_ROWS:
        shown = sorted(metrics, key=lambda m: (m["recall"] is None, m["recall"] or 0.0))
        shown = sorted(shown[:CLASS_ROWS], key=lambda m: m["class"])
        note = f" The {CLASS_ROWS} classes with the lowest clean recall of {len(metrics)}."

    def share(v: float | None) -> str:
        return "–" if v is None else pct(v)

    head = (
        "<tr><th>class</th><th>rows</th><th>predicted</th><th>recall</th><th>precision</th>"
        "<th>recall after attacks</th><th>precision after attacks</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{escape(str(m.get('name', m['class'])))}</td><td>{m['support']}</td>"
        f"<td>{m['predicted']}</td><td>{share(m['recall'])}</td><td>{share(m['precision'])}</td>"
        f"<td>{share(m.get('robust_recall'))}</td><td>{share(m.get('robust_precision'))}</td></tr>"
        for m in shown
    )
    eps = (data["config"].get("eps") or [""])[0]
    text = (
        f"Recall: share of a class's rows classified as it; precision: share of the rows "
        f"predicted as a class that belong to it. After attacks: the predictions at eps = "
        f"{escape(fmt(eps))} (a point no attack fooled keeps its clean prediction)."
    )
    if data["config"].get("evade_class") is not None:
        text += " Only the rows of the evasion class were attacked."
    parts = [f"<h2>Per class</h2><table>{head}{rows}</table>"]
    parts.append(f'<div class="muted">{text}{escape(note)}</div>')
    entry = data.get("evasion")
    if entry:
        missed = f"; without attack the model misses {entry['missed']} of {entry['rows']}"
        parts.append(
            f"<p><b>{escape(entry['name'])} rows that get through at eps = "
            f"{escape(fmt(entry['eps']))}: {entry['evaded']} of {entry['caught']} caught "
            f"{escape(entry['name'])} rows evade</b>{escape(missed)}.</p>"
        )
    return "".join(parts)
