"""`certify.json` (written atomically) and `certify.html` (one self-contained page, built from
the evaluation report's CSS, SVG curve, warning box and configuration table).

`certify.json` holds `method`, `norm`, `n`, `clean_accuracy` (the base model), the headline
`certified_accuracy` (at the first eps listed), `results` (one entry per eps: certified
accuracy, and with the attack check the empirical robust accuracy and the violations),
`curve` (certified accuracy against eps, or against the L2 radius for smoothing, where it is
evaluated on a grid up to the largest certified radius), `abstention_rate` and `smoothing`
(sigma, n0, n, alpha, ...) for smoothing, `consistent` (None without attacks), `warnings`
(violations start with "BUG"), `config`, `seed`, `versions`, `timestamp` and `seconds`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from adversa.certify.run import CertifyResult
from adversa.certify.smoothing import max_radius
from adversa.evaluation.html import _CSS, _config, _fmt, _pct, _warnings, curve_svg
from adversa.evaluation.report import _jsonable
from adversa.io import atomic_write_text
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
        if result.robust is not None:
            entry["empirical_robust_accuracy"] = float(result.robust[i].float().mean())
            entry["n_robust"] = int(result.robust[i].sum())
            entry["violations"] = result.violations(i).tolist()
            entry["attack_seconds"] = result.attack_seconds[i]
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
    return _jsonable(report)


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
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>adversa certification</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Certification ({escape(method)}): <code>{model}</code> on <code>{dataset}</code></h1>"
        f'<div class="muted">{escape(data["timestamp"])} UTC · seed {data["seed"]} · '
        f"{data['seconds']:.1f} s in total</div>",
    ]
    if bugs:
        items = "".join(f"<li>{escape(w)}</li>" for w in bugs)
        parts.append(
            '<div class="warn" style="background:#fee4e2;border-color:#d92d20;'
            'border-left-color:#b42318"><h2 style="color:#b42318">BUG: certificates contradict '
            f"the attacks ({len(bugs)})</h2><ul>{items}</ul></div>"
        )
    parts += [_warnings(others), _cards(data), _table(data)]
    if len(data["curve"]) > 1:
        parts.append(_curve(data))
    if smoothing is not None:
        parts.append(
            "<h2>Randomized smoothing</h2>" + _kv({k: _fmt(v) for k, v in smoothing.items()})
        )
    parts += [_config(data), "</main></body></html>\n"]
    return "\n".join(parts)


def _cards(data: dict[str, Any]) -> str:
    label = "certified" if data["method"] == "smoothing" else "verified"
    first = data["results"][0]
    radius = "L2 radius" if data["method"] == "smoothing" else f"{data['norm']} eps"
    cards = [
        ("clean accuracy (base model)", _pct(data["clean_accuracy"])),
        (f"{label} accuracy at {radius} {_fmt(first['eps'])}", _pct(first["certified_accuracy"])),
        ("points", str(data["n"])),
    ]
    if data["abstention_rate"] is not None:
        cards.insert(2, ("abstention rate", _pct(data["abstention_rate"])))
    if "empirical_robust_accuracy" in first:
        cards.insert(2, ("empirical robust accuracy", _pct(first["empirical_robust_accuracy"])))
    body = "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>'
        for k, v in cards
    )
    note = (
        '<div class="muted">A certified point is provably classified correctly everywhere in '
        "the ball; empirical robust accuracy (attacks) can only be higher.</div>"
    )
    return f'<div class="cards">{body}</div>{note}'


def _table(data: dict[str, Any]) -> str:
    attacked = "empirical_robust_accuracy" in data["results"][0]
    head = "<tr><th>eps</th><th>certified accuracy</th><th>certified points</th>"
    head += "<th>empirical robust accuracy</th><th>violations</th>" if attacked else ""
    head += "<th>seconds</th></tr>"
    rows = []
    for e in data["results"]:
        row = f"<td>{_fmt(e['eps'])}</td><td>{_pct(e['certified_accuracy'])}</td>"
        row += f"<td>{e['n_certified']}</td>"
        if attacked:
            row += f"<td>{_pct(e['empirical_robust_accuracy'])}</td><td>{len(e['violations'])}</td>"
        rows.append(f"<tr>{row}<td>{e['seconds']:.2f}</td></tr>")
    attacks = ", ".join(data["attacks"])
    foot = f'<div class="muted">attacks: {escape(attacks)}</div>' if attacked else ""
    return f"<h2>Per eps</h2><table>{head}{''.join(rows)}</table>{foot}"


def _curve(data: dict[str, Any]) -> str:
    key = "radius" if data["method"] == "smoothing" else "eps"
    points = [(float(p[key]), float(p["certified_accuracy"])) for p in data["curve"]]
    start = points[0][1] if points[0][0] == 0 else data["clean_accuracy"]
    adapted = {
        "clean_accuracy": start,
        "curve": [{"eps": e, "robust_accuracy": a} for e, a in points if e > 0],
        "config": {"norm": data["norm"]},
    }
    title = (
        "Certified accuracy versus L2 radius" if key == "radius" else "Verified accuracy versus eps"
    )
    return f"<h2>{title}</h2>" + curve_svg(adapted)


def _kv(mapping: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(k))}</td><td><code>{escape(v)}</code></td></tr>"
        for k, v in mapping.items()
    )
    return f'<table class="kv">{rows}</table>'
