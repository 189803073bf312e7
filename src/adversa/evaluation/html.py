"""`report.html`: one self-contained page (inline CSS, inline SVG, base64 PNG images; no
scripts, no external assets) with the headline numbers, warnings, a table per eps, the
accuracy-versus-eps curve, a gallery of adversarial examples and the configuration.
Every string that comes from the user or the data is escaped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import torch

from adversa.evaluation.backdoor_section import backdoor_section
from adversa.evaluation.battery import EvalResult, SweepResult
from adversa.evaluation.html_sections import (
    certified_by_eps,
    certified_note,
    certified_section,
    certified_series,
    class_section,
    evasion_card,
    masking_section,
    points_caption,
)
from adversa.evaluation.mask_section import mask_section
from adversa.evaluation.report import Report
from adversa.render import (
    cards,
    config_section,
    figure,
    fmt,
    line_chart_svg,
    page_start,
    pct,
    run_line,
    warnings_block,
)

GALLERY_SIZE = 8


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
        page_start("adversa report"),
        _header(data),
        warnings_block(data["warnings"]),
        _headline(data),
    ]
    if data.get("defense"):
        from adversa.evaluation.defense_html import defense_section

        parts.append(defense_section(data["defense"]))
    for entry in data["results"]:
        parts.append(_attack_table(entry, data, len(data["results"]) > 1))
    parts.append(class_section(data))
    parts.append(certified_section(data))
    if len(data["curve"]) > 1 or data.get("certified"):
        parts.append("<h2>Accuracy versus eps</h2>" + _curve(data))
    parts.append(masking_section(data))
    parts.append(backdoor_section(data))
    parts.append(mask_section(data))
    if first is not None:
        parts.append(_gallery(first, kind, class_names, feature_names, data.get("feature_changes")))
    parts.append(
        config_section(
            {**_config_view(data["config"]), "seed": data["seed"]},
            data["versions"],
        )
    )
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
    title = f"<h1>Robustness report: <code>{model}</code> on <code>{dataset}</code></h1>"
    return title + run_line(data["timestamp"], data["seed"], data["seconds"])


def _headline(data: dict[str, Any]) -> str:
    config = data["config"]
    eps = config.get("eps") or [""]
    threat = f"{config.get('norm', '')}, eps = {fmt(eps[0])}"
    headline = [
        ("clean accuracy", pct(data["clean_accuracy"])),
        ("robust accuracy", pct(data["robust_accuracy"])),
        ("threat model", threat),
        ("points", points_caption(data)),
    ]
    evaded = evasion_card(data)
    if evaded is not None:
        headline.insert(2, evaded)
    certified = certified_by_eps(data).get(float(eps[0])) if eps[0] != "" else None
    if certified is not None:
        caption = f"certified accuracy ({certified['method']})"
        headline.insert(2, (caption, pct(certified["certified_accuracy"])))
    note = (
        '<div class="muted">Robust accuracy is the per-sample worst case over all attacks '
        "(a point counts as robust only if no attack fooled it)"
        + (", at the first eps listed." if len(eps) > 1 else ".")
        + "</div>"
    )
    return cards(headline) + note


def _attack_table(entry: dict[str, Any], data: dict[str, Any], several: bool) -> str:
    config = data["config"]
    title = f"Attacks at eps = {fmt(entry['eps'])}" if several else "Attacks"
    head = (
        "<tr><th>attack (cascade order)</th><th>points attacked</th><th>newly broken</th>"
        "<th>robust accuracy after</th><th>forward calls (incl. queries)</th>"
        "<th>backward calls</th>"
        "<th>queries</th><th>seconds</th></tr>"
    )
    rows = "".join(
        f"<tr><td><code>{escape(a['name'])}</code></td><td>{a['attacked']}</td>"
        f"<td>{a['newly_broken']}</td><td>{pct(a['robust_accuracy'])}</td>"
        f"<td>{a['forward_calls']:,}</td><td>{a['backward_calls']:,}</td>"
        f"<td>{a['queries']:,}</td><td>{a['seconds']:.2f}</td></tr>"
        for a in entry["attacks"]
    )
    foot = (
        f'<div class="muted">clean accuracy {pct(entry["clean_accuracy"])} → robust accuracy '
        f"{pct(entry['robust_accuracy'])} ({entry['n_robust']} of {config.get('n', '?')} "
        f"points){certified_note(data, entry['eps'])}</div>"
    )
    return f"<h2>{escape(title)}</h2><table>{head}{rows}</table>{foot}"


def _curve(data: dict[str, Any]) -> str:
    """Robust accuracy against eps, starting at (0, clean accuracy); with `--certify` the
    verified accuracy as a second series."""
    points = [(0.0, float(data["clean_accuracy"]))] + [
        (float(p["eps"]), float(p["robust_accuracy"])) for p in data["curve"]
    ]
    series = certified_series(data)
    return line_chart_svg(
        points,
        f"eps ({data['config'].get('norm', '')})",
        name="robust (attacks)" if series else "",
        series=series,
    )


def _gallery(
    result: EvalResult,
    kind: str | None,
    class_names: Sequence[str] | None,
    feature_names: Sequence[str] | None,
    changes: list[dict[str, Any]] | None = None,
) -> str:
    broken = torch.nonzero(result.broken_by >= 0).squeeze(1)[:GALLERY_SIZE].tolist()
    title = f"<h2>Adversarial examples at eps = {fmt(result.eps)}</h2>"
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
    imgs = "".join(figure(img, label) for label, img in figures)
    caption = _caption(result, i, names, class_names)
    return f'<div class="ex">{imgs}<div class="muted">{caption}</div></div>'


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


# config entries a section of the page shows in full -> the field the configuration table
# keeps of each (the option the user gave)
SECTION_OPTIONS = {"backdoor": "dir", "mask": "spec"}


def _config_view(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` for the configuration table: each entry a section shows in full reduced to
    the option the user gave."""
    return {
        key: value.get(SECTION_OPTIONS[key], "")
        if key in SECTION_OPTIONS and isinstance(value, Mapping)
        else value
        for key, value in config.items()
    }
