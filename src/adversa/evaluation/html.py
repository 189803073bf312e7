"""`report.html`: one self-contained page (inline CSS, inline SVG, base64 PNG images; no
scripts, no external assets) with the headline numbers, warnings, a table per eps, the
accuracy-versus-eps curve, a gallery of adversarial examples and the configuration.
Every string that comes from the user or the data is escaped."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from adversa.evaluation.battery import EvalResult, SweepResult
from adversa.evaluation.report import Report

GALLERY_SIZE = 8
_IMAGE_PX = 112  # small images are upscaled (nearest neighbour) to about this size

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330;line-height:1.45}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:1.6rem;margin:0 0 4px}h2{font-size:1.2rem;margin:28px 0 10px}
.muted{color:#667085;font-size:.9rem}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:18px 0}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:14px 18px;min-width:150px}
.card .v{font-size:1.7rem;font-weight:650}.card .k{color:#667085;font-size:.85rem}
.warn{background:#fff4e5;border:1px solid #f5b54a;border-left:6px solid #e8890c;border-radius:8px;
padding:12px 16px;margin:18px 0}.warn h2{margin:0 0 6px;color:#9a4b00}.warn li{margin:4px 0}
.ok{background:#ecfdf3;border:1px solid #8fd4a8;border-radius:8px;padding:10px 16px;margin:18px 0}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.92rem;margin-bottom:8px}
th,td{border-bottom:1px solid #e8eaee;padding:7px 10px;text-align:right}
th{background:#eef0f4;font-weight:600}th:first-child,td:first-child{text-align:left}
.kv td{text-align:left;vertical-align:top}.kv td:first-child{width:180px;color:#475467}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.ex{background:#fff;border:1px solid #e3e6ea;border-radius:10px;padding:10px}
.ex figure{display:inline-block;margin:0 6px 0 0;text-align:center;font-size:.75rem;color:#667085}
.ex img{image-rendering:pixelated;display:block;border:1px solid #d0d5dd}
svg text{font-family:inherit;font-size:12px;fill:#475467}
"""


def render_html(
    report: Report,
    results: SweepResult | EvalResult | None = None,
    *,
    kind: str | None = None,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
) -> str:
    """The page as a string. `results` supplies the gallery, at the first eps listed where an
    attack fooled some point: images when `kind == "image"` (inferred from the input's shape
    when None), else a table of the largest feature changes."""
    data = report.to_dict()
    first = _first_result(results)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>adversa report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        _header(data),
        _warnings(data["warnings"]),
        _headline(data),
    ]
    if data.get("defense"):
        from adversa.evaluation.defense_html import defense_section

        parts.append(defense_section(data["defense"]))
    for entry in data["results"]:
        parts.append(_attack_table(entry, data["config"], len(data["results"]) > 1))
    if len(data["curve"]) > 1:
        parts.append("<h2>Accuracy versus eps</h2>" + curve_svg(data))
    if first is not None:
        parts.append(_gallery(first, kind, class_names, feature_names, data.get("feature_changes")))
    parts.append(_config(data))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _first_result(results: SweepResult | EvalResult | None) -> EvalResult | None:
    """The first eps listed at which some attack fooled a point (else the first eps)."""
    if results is None or isinstance(results, EvalResult):
        return results
    broken = (r for r in results.results if bool((r.broken_by >= 0).any()))
    return next(broken, results.results[0])


def _header(data: dict[str, Any]) -> str:
    config = data["config"]
    model = escape(str(config.get("model", "model")))
    dataset = escape(str(config.get("data", "data")))
    return (
        f"<h1>Robustness report: <code>{model}</code> on <code>{dataset}</code></h1>"
        f'<div class="muted">{escape(data["timestamp"])} UTC · seed {data["seed"]} · '
        f"{data['seconds']:.1f} s in total</div>"
    )


def _headline(data: dict[str, Any]) -> str:
    config = data["config"]
    eps = config.get("eps") or [""]
    threat = f"{config.get('norm', '')}, eps = {_fmt(eps[0])}"
    cards = [
        ("clean accuracy", _pct(data["clean_accuracy"])),
        ("robust accuracy", _pct(data["robust_accuracy"])),
        ("threat model", threat),
        ("points", str(data["n"])),
    ]
    body = "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>'
        for k, v in cards
    )
    note = (
        '<div class="muted">Robust accuracy is the per-sample worst case over all attacks '
        "(a point counts as robust only if no attack fooled it)"
        + (", at the first eps listed." if len(eps) > 1 else ".")
        + "</div>"
    )
    return f'<div class="cards">{body}</div>{note}'


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return '<div class="ok">No sanity check raised a warning.</div>'
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return f'<div class="warn"><h2>⚠ {len(warnings)} warning(s)</h2><ul>{items}</ul></div>'


def _attack_table(entry: dict[str, Any], config: dict[str, Any], several: bool) -> str:
    title = f"Attacks at eps = {_fmt(entry['eps'])}" if several else "Attacks"
    head = (
        "<tr><th>attack (cascade order)</th><th>points attacked</th><th>newly broken</th>"
        "<th>robust accuracy after</th><th>forward calls</th><th>backward calls</th>"
        "<th>queries</th><th>seconds</th></tr>"
    )
    rows = "".join(
        f"<tr><td><code>{escape(a['name'])}</code></td><td>{a['attacked']}</td>"
        f"<td>{a['newly_broken']}</td><td>{_pct(a['robust_accuracy'])}</td>"
        f"<td>{a['forward_calls']:,}</td><td>{a['backward_calls']:,}</td>"
        f"<td>{a['queries']:,}</td><td>{a['seconds']:.2f}</td></tr>"
        for a in entry["attacks"]
    )
    foot = (
        f'<div class="muted">clean accuracy {_pct(entry["clean_accuracy"])} → robust accuracy '
        f"{_pct(entry['robust_accuracy'])} ({entry['n_robust']} of {config.get('n', '?')} "
        "points)</div>"
    )
    return f"<h2>{escape(title)}</h2><table>{head}{rows}</table>{foot}"


def curve_svg(data: dict[str, Any], width: int = 560, height: int = 300) -> str:
    """Robust accuracy against eps as an inline SVG line chart, starting at (0, clean)."""
    points = [(0.0, float(data["clean_accuracy"]))] + [
        (float(p["eps"]), float(p["robust_accuracy"])) for p in data["curve"]
    ]
    left, right, top, bottom = 56, 16, 14, 40
    max_eps = max(e for e, _ in points) or 1.0

    def sx(e: float) -> float:
        return left + (width - left - right) * e / max_eps

    def sy(a: float) -> float:
        return top + (height - top - bottom) * (1 - a)

    grid = []
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        y = sy(tick)
        grid.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" '
            f'stroke="#e3e6ea"/><text x="{left - 8}" y="{y + 4:.1f}" '
            f'text-anchor="end">{tick:.0%}</text>'
        )
    for e, _ in points:
        grid.append(
            f'<text x="{sx(e):.1f}" y="{height - bottom + 18}" text-anchor="middle">'
            f"{escape(_fmt(e))}</text>"
        )
    line = " ".join(f"{sx(e):.1f},{sy(a):.1f}" for e, a in points)
    dots = "".join(
        f'<circle cx="{sx(e):.1f}" cy="{sy(a):.1f}" r="4" fill="#2563eb">'
        f"<title>eps={escape(_fmt(e))}: {_pct(a)}</title></circle>"
        for e, a in points
    )
    norm = escape(str(data["config"].get("norm", "")))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="robust accuracy versus eps">'
        f'<rect width="{width}" height="{height}" fill="#fff"/>{"".join(grid)}'
        f'<line x1="{left}" y1="{sy(0):.1f}" x2="{width - right}" y2="{sy(0):.1f}" '
        f'stroke="#98a2b3"/><polyline points="{line}" fill="none" stroke="#2563eb" '
        f'stroke-width="2"/>{dots}<text x="{(left + width - right) / 2:.0f}" '
        f'y="{height - 6}" text-anchor="middle">eps ({norm})</text></svg>'
    )


def _gallery(
    result: EvalResult,
    kind: str | None,
    class_names: Sequence[str] | None,
    feature_names: Sequence[str] | None,
    changes: list[dict[str, Any]] | None = None,
) -> str:
    broken = torch.nonzero(result.broken_by >= 0).squeeze(1)[:GALLERY_SIZE].tolist()
    title = f"<h2>Adversarial examples at eps = {_fmt(result.eps)}</h2>"
    if not broken:
        return title + '<div class="muted">No attack fooled any point.</div>'
    is_image = kind == "image" if kind is not None else result.x.dim() in (3, 4)
    names = [a.name for a in result.attacks]
    if is_image:
        cards = "".join(_image_card(result, i, names, class_names) for i in broken)
        return f'{title}<div class="gallery">{cards}</div>'
    if changes:
        return title + _changes_table(result, changes, names, class_names)
    return title + _feature_table(result, broken, names, class_names, feature_names)


def _changes_table(
    result: EvalResult,
    changes: list[dict[str, Any]],
    names: list[str],
    class_names: Sequence[str] | None,
) -> str:
    """Tabular data: every feature each example's attack changed (largest first), in the
    units the report's `feature_changes` give (original units for scaled data sets)."""
    units = "original units" if changes[0]["units"] == "original" else "input units"
    head = (
        "<tr><th>example</th><th>features changed, largest first "
        f"(clean → adversarial, change; {units})</th></tr>"
    )
    body = []
    for entry in changes:
        text = "; ".join(
            f"{c['feature']}: {c['before']:.4g} → {c['after']:.4g} ({c['delta']:+.3g})"
            for c in entry["changes"]
        )
        body.append(
            f"<tr><td>{_caption(result, entry['index'], names, class_names)}</td>"
            f'<td style="text-align:left">{escape(text or "no feature changed")}</td></tr>'
        )
    return f"<table>{head}{''.join(body)}</table>"


def _label(k: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= k < len(class_names) and str(class_names[k]) != str(k):
        return f"{class_names[k]} ({k})"
    return str(k)


def _caption(result: EvalResult, i: int, names: list[str], class_names: Sequence[str] | None):
    return escape(
        f"#{i}: true {_label(int(result.y[i]), class_names)} · adversarial "
        f"{_label(int(result.adv_pred[i]), class_names)} · by {names[int(result.broken_by[i])]}"
    )


def _image_card(
    result: EvalResult, i: int, names: list[str], class_names: Sequence[str] | None
) -> str:
    lo, hi = result.threat.bounds
    clean, adv = result.x[i].detach().cpu().float(), result.x_adv[i].detach().cpu().float()
    delta = adv - clean
    scale = float(delta.abs().max()) or 1.0
    figures = [
        ("clean", (clean - lo) / (hi - lo)),
        ("adversarial", (adv - lo) / (hi - lo)),
        (f"perturbation ×{0.5 / scale:.3g}", 0.5 + delta / (2 * scale)),
    ]
    imgs = "".join(
        f'<figure><img alt="{escape(label)}" src="data:image/png;base64,{_png(img)}">'
        f"{escape(label)}</figure>"
        for label, img in figures
    )
    caption = _caption(result, i, names, class_names)
    return f'<div class="ex">{imgs}<div class="muted">{caption}</div></div>'


def _png(image: Tensor) -> str:
    """Base64 PNG of an image tensor in [0, 1], shaped (C, H, W), (H, W) or (D,)."""
    if image.dim() == 1:
        side = int(image.numel() ** 0.5)
        image = image[: side * side].reshape(side, side)
    if image.dim() == 3:
        image = image.permute(1, 2, 0) if image.shape[0] in (1, 3) else image[0]
        if image.dim() == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pil = Image.fromarray(array, mode="RGB" if array.ndim == 3 else "L")
    factor = max(1, _IMAGE_PX // max(pil.size))
    pil = pil.resize((pil.width * factor, pil.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _feature_table(
    result: EvalResult,
    rows: list[int],
    names: list[str],
    class_names: Sequence[str] | None,
    feature_names: Sequence[str] | None,
) -> str:
    """For non-image data: the three features each attack changed most, per example."""
    head = "<tr><th>example</th><th>largest feature changes (clean → adversarial)</th></tr>"
    body = []
    for i in rows:
        clean = result.x[i].detach().cpu().flatten()
        adv = result.x_adv[i].detach().cpu().flatten()
        top = (adv - clean).abs().topk(min(3, clean.numel())).indices.tolist()
        changes = "; ".join(
            f"{_feature(j, feature_names)}: {float(clean[j]):.3g} → {float(adv[j]):.3g}"
            for j in top
        )
        body.append(
            f"<tr><td>{_caption(result, i, names, class_names)}</td>"
            f'<td style="text-align:left">{escape(changes)}</td></tr>'
        )
    return f"<table>{head}{''.join(body)}</table>"


def _feature(j: int, feature_names: Sequence[str] | None) -> str:
    return (
        str(feature_names[j]) if feature_names is not None and j < len(feature_names) else f"x[{j}]"
    )


def _config(data: dict[str, Any]) -> str:
    def table(mapping: dict[str, Any]) -> str:
        rows = "".join(
            f"<tr><td>{escape(str(k))}</td><td><code>{escape(_value(v))}</code></td></tr>"
            for k, v in mapping.items()
        )
        return f'<table class="kv">{rows}</table>'

    return (
        "<h2>Configuration</h2>"
        + table({**data["config"], "seed": data["seed"]})
        + "<h2>Versions</h2>"
        + table(data["versions"])
    )


def _value(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v)
    return _fmt(v) if isinstance(v, float) else str(v)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _pct(v: float) -> str:
    return f"{100 * float(v):.1f}%"
