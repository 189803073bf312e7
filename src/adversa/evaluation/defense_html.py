"""The report.html section of an input-side defense: naive and adaptive robust accuracy side by
side, the explanation of the difference, and, with a detector, its metrics and ROC curve as
inline SVG. Every string from the report is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

from adversa.evaluation.adaptive_eval import NO_DEFENSE
from adversa.render import cards, fmt, pct, svg_frame


def defense_section(defense: dict[str, Any]) -> str:
    """HTML for the report's `defense` entry (only the detector's part when there is no
    defense: naive and adaptive of the bare model say nothing the headline does not)."""
    if defense["spec"] == NO_DEFENSE:
        return detector_section(defense["detector"]) if defense.get("detector") else ""
    method = defense.get("adaptive_method") or {}
    how = []
    if method.get("bpda"):
        how.append("BPDA (identity) through " + ", ".join(method["bpda"]))
    if method.get("eot"):
        how.append(f"EOT over {method['eot']} draws")
    head = (
        "<tr><th>eps</th><th>naive robust accuracy</th><th>adaptive robust accuracy</th>"
        "<th>worst case of both</th><th>clean accuracy (naive / adaptive)</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{escape(fmt(r['eps']))}</td><td>{pct(r['naive_robust_accuracy'])}</td>"
        f"<td><b>{pct(r['adaptive_robust_accuracy'])}</b></td>"
        f"<td>{pct(r['worst_case_robust_accuracy'])}</td>"
        f"<td>{pct(r['naive_clean_accuracy'])} / {pct(r['adaptive_clean_accuracy'])}</td></tr>"
        for r in defense.get("per_eps", [])
    )
    parts = [
        f"<h2>Defense <code>{escape(str(defense['spec']))}</code>: naive versus adaptive</h2>",
        f'<div class="muted">adaptive attack: {escape("; ".join(how) or "the plain attacks")}. '
        "The headline numbers above are the adaptive run's.</div>",
        f"<table>{head}{rows}</table>",
        f"<p>{escape(str(defense.get('explanation', '')))}</p>",
    ]
    if defense.get("detector"):
        parts.append(detector_section(defense["detector"]))
    return "\n".join(parts)


def detector_section(det: dict[str, Any]) -> str:
    metrics = det.get("metrics")
    headline = [
        ("ROC AUC (naive examples)", f"{metrics['auc']:.3f}" if metrics else "n/a"),
        ("TPR at 5% FPR", pct(metrics["tpr_at_fpr"]) if metrics else "n/a"),
        ("clean points flagged", pct(det["clean_flagged"])),
        ("robust, naive", pct(det["naive_robust_accuracy"])),
        ("robust, adaptive", pct(det["adaptive_robust_accuracy"])),
    ]
    note = (
        f'<div class="muted">threshold {det["threshold"]:.4g}, chosen at '
        f"{pct(det['fpr_target'])} false positives on clean validation data; eps "
        f"{escape(fmt(det['eps']))}; a flagged adversarial input counts as a correct "
        "rejection.</div>"
    )
    roc = roc_svg(metrics["roc"], metrics["auc"]) if metrics else ""
    return (
        f"<h2>Detector <code>{escape(str(det['spec']))}</code></h2>"
        f"{cards(headline)}{note}{roc}"
        f"<p>{escape(str(det.get('explanation', '')))}</p>"
    )


def roc_svg(points: list[list[float]], auc: float, size: int = 300) -> str:
    """The ROC curve (false-positive rate against true-positive rate) as an inline SVG."""
    left, top, bottom, right = 48, 12, 40, 12
    w, h = size - left - right, size - top - bottom

    def sx(f: float) -> float:
        return left + w * f

    def sy(t: float) -> float:
        return top + h * (1 - t)

    grid = "".join(
        f'<line x1="{left}" y1="{sy(v):.1f}" x2="{left + w}" y2="{sy(v):.1f}" stroke="#e3e6ea"/>'
        f'<text x="{left - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.1f}</text>'
        f'<text x="{sx(v):.1f}" y="{top + h + 16}" text-anchor="middle">{v:.1f}</text>'
        for v in (0.0, 0.5, 1.0)
    )
    line = " ".join(f"{sx(f):.1f},{sy(t):.1f}" for f, t in points)
    body = (
        f'{grid}<line x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(1):.1f}" y2="{sy(1):.1f}" '
        f'stroke="#98a2b3" stroke-dasharray="4 3"/>'
        f'<line x1="{sx(0.05):.1f}" y1="{sy(0):.1f}" x2="{sx(0.05):.1f}" y2="{sy(1):.1f}" '
        f'stroke="#e8890c" stroke-dasharray="2 3"><title>5% FPR</title></line>'
        f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="2"/>'
        f'<text x="{left + w / 2:.0f}" y="{size - 6}" text-anchor="middle">false-positive rate '
        f"(AUC {auc:.3f})</text>"
    )
    return svg_frame(size, size, "ROC curve", body)
