"""`certify.json` (written atomically) and `certify.html` (one self-contained page, built from
the shared report parts of `adversa.render`: CSS, line chart, warning box, key-value tables).

`certify.json` holds `method`, `norm`, `n`, `clean_accuracy` (the base model), the headline
`certified_accuracy` (at the first eps listed), `results` (one entry per eps: certified
accuracy, and with the attack check the empirical robust accuracy and the violations),
`curve` (certified accuracy against eps, or against the L2 radius for smoothing, where it is
evaluated on a grid up to the largest certified radius), `abstention_rate` and `smoothing`
(sigma, n0, n, alpha, ...) for smoothing, `consistent` (None without attacks), `warnings`
(violations start with "BUG"), `config`, `seed`, `versions`, `timestamp` and `seconds`.

Patch smoothing (`patch_certify_report`) keeps those keys with `norm` "patch",
`clean_accuracy` the smoothed classifier's (`base_accuracy`: the base classifier's over all
ablations), one `results` entry per patch side (`size` in pixels, `area_fraction`,
`affected_positions`, `eps` = the side), `curve` (certified accuracy against the side, from
the same votes) and `patch_smoothing` (ablation, band, positions, tie-break, the vote and
its softmax `threshold` (None: argmax), cost). `base_accuracy` is the base's argmax accuracy
whatever the vote.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from adversa.certify.patch_smoothing import PatchCertResult
from adversa.certify.run import CertifyResult
from adversa.certify.smoothing import max_radius
from adversa.io import atomic_write_text
from adversa.render import (
    cards,
    config_section,
    fmt,
    jsonable,
    kv_table,
    line_chart_svg,
    page_start,
    pct,
    run_line,
    warnings_block,
)
from adversa.versions import versions

CERTIFY_JSON = "certify.json"
CERTIFY_HTML = "certify.html"
CURVE_STEPS = 10  # radius steps on the smoothing curve (plus the eps values listed)


def certify_report(
    result: CertifyResult, *, config: Mapping[str, Any] | None = None, seconds: float = 0.0
) -> dict[str, Any]:
    """The content of `certify.json`."""
    bound_method = result.method != "smoothing"
    results = []
    for i, eps in enumerate(result.eps):
        entry: dict[str, Any] = {
            "eps": eps,
            "certified_accuracy": result.certified_accuracy(i),
            "n_certified": int(result.certified[i].sum()),
            "seconds": result.seconds[i],
        }
        if bound_method:
            entry["verified_accuracy"] = entry["certified_accuracy"]
        entry.update(_attack_check(result, i))
        results.append(entry)
    smooth = result.smoothing
    if smooth is None:
        curve = [{"eps": e["eps"], "certified_accuracy": e["certified_accuracy"]} for e in results]
        curve.sort(key=lambda p: p["eps"])
        details = None
    else:
        curve = _radius_curve(result)
        correct = smooth.prediction == result.y
        details = {
            "sigma": smooth.sigma,
            "n0": smooth.n0,
            "n": smooth.n,
            "alpha": smooth.alpha,
            "abstention_rate": smooth.abstention_rate,
            "smoothed_accuracy": float(correct.float().mean()),
            "median_radius_correct": float(smooth.radius[correct].median())
            if correct.any()
            else 0.0,
            "max_possible_radius": max_radius(smooth.sigma, smooth.n, smooth.alpha),
            "forward_calls": smooth.forward,
            "seconds": smooth.seconds,
        }
    merged = {"method": result.method, "norm": result.threat.norm, "eps": list(result.eps)}
    merged |= {"bounds": list(result.threat.bounds), "attacks": list(result.attacks)}
    merged |= dict(config or {})
    report = {
        "method": result.method,
        "norm": result.threat.norm,
        "n": result.n,
        "clean_accuracy": float(result.clean_correct.float().mean()),
        "certified_accuracy": results[0]["certified_accuracy"],
        "results": results,
        "curve": curve,
        "abstention_rate": None if smooth is None else smooth.abstention_rate,
        "smoothing": details,
        "attacks": list(result.attacks),
        "consistent": None
        if result.robust is None
        else not any(w.startswith("BUG") for w in result.warnings),
        "warnings": list(result.warnings),
        "config": merged,
        "seed": result.seed,
        "versions": versions(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seconds": float(seconds),
    }
    return jsonable(report)


def patch_certify_report(
    result: PatchCertResult, *, config: Mapping[str, Any] | None = None, seconds: float = 0.0
) -> dict[str, Any]:
    """The content of `certify.json` for patch smoothing."""
    h, w = result.image_size
    results = []
    for i, size in enumerate(result.sizes):
        entry: dict[str, Any] = {
            "eps": size,
            "size": size,
            "area_fraction": size * size / (h * w),
            "affected_positions": result.delta[i],
            "certified_accuracy": float(result.certified[i].float().mean()),
            "n_certified": int(result.certified[i].sum()),
            "seconds": result.seconds,
        }
        entry.update(_attack_check(result, i))
        results.append(entry)
    curve = []
    for side in range(1, min(h, w) + 1):
        accuracy = float(result.certified_at(side).float().mean())
        curve.append({"size": side, "certified_accuracy": accuracy})
        if accuracy == 0:
            break
    attacks = [] if result.attack is None else [result.attack]
    details = {
        "ablation": result.ablation,
        "band": result.band,
        "positions": result.positions,
        "image_size": list(result.image_size),
        "tie_break": "smaller class index",
        "vote": "argmax"
        if result.threshold is None
        else f"every class with softmax >= {result.threshold:g}",
        "threshold": result.threshold,
        "smoothed_accuracy": result.smoothed_accuracy,
        "base_accuracy": result.base_accuracy,
        "forward_calls": result.forward,
        "seconds": result.seconds,
    }
    report = {
        "method": "patch-smoothing",
        "norm": "patch",
        "n": result.n,
        "clean_accuracy": result.smoothed_accuracy,
        "base_accuracy": result.base_accuracy,
        "certified_accuracy": results[0]["certified_accuracy"],
        "results": results,
        "curve": curve,
        "abstention_rate": None,
        "smoothing": None,
        "patch_smoothing": details,
        "attacks": attacks,
        "consistent": None
        if result.robust is None
        else not any(w.startswith("BUG") for w in result.warnings),
        "warnings": list(result.warnings),
        "config": dict(config or {}),
        "seed": result.seed,
        "versions": versions(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seconds": float(seconds),
    }
    return jsonable(report)


def _attack_check(result: CertifyResult | PatchCertResult, i: int) -> dict[str, Any]:
    """The `--attack-check` fields of the i-th radius or patch size (none without the check)."""
    if result.robust is None:
        return {}
    return {
        "empirical_robust_accuracy": float(result.robust[i].float().mean()),
        "n_robust": int(result.robust[i].sum()),
        "violations": result.violations(i).tolist(),
        "attack_seconds": result.attack_seconds[i],
    }


def _radius_curve(result: CertifyResult) -> list[dict[str, float]]:
    smooth = result.smoothing
    top = max([float(smooth.radius.max()), *result.eps, 1e-12])
    step = float(f"{top / CURVE_STEPS:.2g}")
    # up to the first grid point past the largest radius, where certified accuracy is 0
    grid = [round(i * step, 10) for i in range(CURVE_STEPS + 4) if (i - 1) * step <= top]
    return [
        {"radius": r, "certified_accuracy": smooth.certified_accuracy(result.y, r)}
        for r in sorted(set(grid))
    ]


def write_certify_reports(
    out_dir: str | os.PathLike[str], report: dict[str, Any]
) -> tuple[Path, Path]:
    """Write `certify.json` and `certify.html` into `out_dir`, each atomically."""
    out = Path(out_dir)
    json_path = atomic_write_text(
        out / CERTIFY_JSON, json.dumps(report, indent=2, allow_nan=False) + "\n"
    )
    html_path = atomic_write_text(out / CERTIFY_HTML, render_certify_html(report))
    return json_path, html_path


def render_certify_html(data: dict[str, Any]) -> str:
    method = data["method"]
    smoothing = data["smoothing"]
    config = data["config"]
    model = escape(str(config.get("model", "model")))
    dataset = escape(str(config.get("data", "data")))
    bugs = [w for w in data["warnings"] if w.startswith("BUG")]
    others = [w for w in data["warnings"] if not w.startswith("BUG")]
    parts = [
        page_start("adversa certification"),
        f"<h1>Certification ({escape(method)}): <code>{model}</code> on <code>{dataset}</code></h1>"
        + run_line(data["timestamp"], data["seed"], data["seconds"]),
    ]
    if bugs:
        items = "".join(f"<li>{escape(w)}</li>" for w in bugs)
        parts.append(
            '<div class="warn" style="background:#fee4e2;border-color:#d92d20;'
            'border-left-color:#b42318"><h2 style="color:#b42318">BUG: certificates contradict '
            f"the attacks ({len(bugs)})</h2><ul>{items}</ul></div>"
        )
    patch = data.get("patch_smoothing")
    parts.append(warnings_block(others))
    parts += [_patch_cards(data), _table(data)] if patch else [_cards(data), _table(data)]
    if len(data["curve"]) > 1:
        parts.append(_curve(data))
    if patch:
        parts.append("<h2>Patch smoothing</h2>" + kv_table(patch))
    if smoothing is not None:
        parts.append("<h2>Randomized smoothing</h2>" + kv_table(smoothing))
    parts += [
        config_section({**data["config"], "seed": data["seed"]}, data["versions"]),
        "</main></body></html>\n",
    ]
    return "\n".join(parts)


def _cards(data: dict[str, Any]) -> str:
    label = "certified" if data["method"] == "smoothing" else "verified"
    first = data["results"][0]
    radius = "L2 radius" if data["method"] == "smoothing" else f"{data['norm']} eps"
    headline = [
        ("clean accuracy (base model)", pct(data["clean_accuracy"])),
        (f"{label} accuracy at {radius} {fmt(first['eps'])}", pct(first["certified_accuracy"])),
        ("points", str(data["n"])),
    ]
    if data.get("smoothing"):  # the smoothing warnings' "n": noise samples, not points
        headline.append(("noise samples per point (n)", str(data["smoothing"]["n"])))
    if data["abstention_rate"] is not None:
        headline.insert(2, ("abstention rate", pct(data["abstention_rate"])))
    if "empirical_robust_accuracy" in first:
        headline.insert(2, ("empirical robust accuracy", pct(first["empirical_robust_accuracy"])))
    note = (
        '<div class="muted">A certified point is provably classified correctly everywhere in '
        "the ball; empirical robust accuracy (attacks) can only be higher.</div>"
    )
    return cards(headline) + note


def _patch_cards(data: dict[str, Any]) -> str:
    first = data["results"][0]
    side = first["size"]
    headline = [
        ("clean accuracy (smoothed)", pct(data["clean_accuracy"])),
        (f"certified accuracy, {side}x{side} patches", pct(first["certified_accuracy"])),
        ("base classifier accuracy (ablated inputs)", pct(data["base_accuracy"])),
        ("points", str(data["n"])),
    ]
    if "empirical_robust_accuracy" in first:
        attacked = pct(first["empirical_robust_accuracy"])
        headline.insert(2, ("accuracy under the patch attack", attacked))
    note = (
        '<div class="muted">A certified point keeps its (correct) smoothed prediction under '
        "every patch of that size anywhere in the image; the patch attack can only find fewer "
        "robust points than that, never break a certified one.</div>"
    )
    return cards(headline) + note


def _table(data: dict[str, Any]) -> str:
    attacked = "empirical_robust_accuracy" in data["results"][0]
    label = "patch side" if data.get("patch_smoothing") else "eps"
    head = f"<tr><th>{label}</th><th>certified accuracy</th><th>certified points</th>"
    head += "<th>empirical robust accuracy</th><th>violations</th>" if attacked else ""
    head += "<th>seconds</th></tr>"
    rows = []
    for e in data["results"]:
        row = f"<td>{fmt(e['eps'])}</td><td>{pct(e['certified_accuracy'])}</td>"
        row += f"<td>{e['n_certified']}</td>"
        if attacked:
            row += f"<td>{pct(e['empirical_robust_accuracy'])}</td><td>{len(e['violations'])}</td>"
        rows.append(f"<tr>{row}<td>{e['seconds']:.2f}</td></tr>")
    attacks = ", ".join(data["attacks"])
    foot = f'<div class="muted">attacks: {escape(attacks)}</div>' if attacked else ""
    title = "Per patch side" if data.get("patch_smoothing") else "Per eps"
    return f"<h2>{title}</h2><table>{head}{''.join(rows)}</table>{foot}"


def _curve(data: dict[str, Any]) -> str:
    if data.get("patch_smoothing"):
        points = [(0.0, float(data["clean_accuracy"]))]
        points += [(float(p["size"]), float(p["certified_accuracy"])) for p in data["curve"]]
        chart = line_chart_svg(points, "patch side (pixels)")
        return "<h2>Certified accuracy versus patch side</h2>" + chart
    key = "radius" if data["method"] == "smoothing" else "eps"
    points = [(float(p[key]), float(p["certified_accuracy"])) for p in data["curve"]]
    start = points[0][1] if points[0][0] == 0 else data["clean_accuracy"]
    points = [(0.0, float(start))] + [(e, a) for e, a in points if e > 0]
    title = (
        "Certified accuracy versus L2 radius" if key == "radius" else "Verified accuracy versus eps"
    )
    return f"<h2>{title}</h2>" + line_chart_svg(points, f"eps ({data['norm']})")
