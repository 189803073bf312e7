"""The report.html pages of `adversa poison`, `adversa inspect-data` and `adversa
backdoor-eval`, in the style of every adversa report (`adversa.render`): headline cards,
tables, images as inline PNG data URIs, inline SVG charts; no scripts, no external assets.
Numbers are rounded here for people; the JSON files beside the pages keep them exact.

- `poison_html`: the attack's settings, poisons per class, the trigger, clean and poisoned
  versions of some poisoned samples.
- `inspect_html`: the detector's precision, recall and ROC AUC, its score histogram (poisoned
  against clean when the data says which are poisoned) and ROC curve, what it decided per
  class, the most suspicious samples, and with `--retrain` the backdoor before and after;
  for STRIP, triggered against clean test inputs.
- `backdoor_html`: clean accuracy and attack success rate with triggered examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

import torch
from torch import Tensor

from adversa.poisoning.base import Trigger, apply_trigger, predict_labels
from adversa.poisoning.charts import histogram_svg, roc_points, roc_svg
from adversa.render import cards, figure, kv_table, page_start, pct, png_data_uri

__all__ = ["backdoor_html", "inspect_html", "poison_html", "triggered_examples"]

GALLERY = 8


def _unit(x: Tensor, bounds: Sequence[float]) -> Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return (x.detach().cpu().float() - lo) / ((hi - lo) or 1.0)


def _is_image(x: Tensor) -> bool:
    return x.dim() == 4 or (x.dim() == 3 and x.shape[-1] == x.shape[-2])


def triggered_examples(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    trigger: Trigger,
    target: int,
    bounds: Sequence[float] = (0.0, 1.0),
    k: int = 6,
) -> list[dict[str, Any]]:
    """The first `k` test inputs outside `target`: index, label, the model's prediction
    clean and triggered, and the triggered input as a PNG data URI (images only)."""
    index = torch.nonzero(y != int(target)).flatten()[:k]
    stamped = apply_trigger(x[index], trigger)
    clean_pred = predict_labels(model, x[index]).cpu()
    pred = predict_labels(model, stamped).cpu()
    show = _is_image(x)
    return [
        {
            "index": int(i),
            "label": int(y[i]),
            "clean_prediction": int(c),
            "prediction": int(p),
            **({"image": png_data_uri(_unit(s, bounds))} if show else {}),
        }
        for i, c, p, s in zip(
            index.tolist(), clean_pred.tolist(), pred.tolist(), stamped, strict=True
        )
    ]


def examples_gallery(examples: Sequence[Mapping[str, Any]], target: int) -> str:
    """Triggered examples (from `triggered_examples`) as image cards, or as a table without
    images."""
    if not examples:
        return ""
    if all("image" in e for e in examples):
        items = "".join(
            f'<div class="ex"><figure><img alt="triggered #{e["index"]}" src="{e["image"]}">'
            f'triggered</figure><div class="muted">#{e["index"]}: true {e["label"]} · clean '
            f"→ {e['clean_prediction']} · triggered → {e['prediction']}"
            f"{' (target)' if e['prediction'] == target else ''}</div></div>"
            for e in examples
        )
        return f'<div class="gallery">{items}</div>'
    head = "<tr><th>test input</th><th>true</th><th>clean →</th><th>triggered →</th></tr>"
    rows = "".join(
        f"<tr><td>#{e['index']}</td><td>{e['label']}</td><td>{e['clean_prediction']}</td>"
        f"<td>{e['prediction']}</td></tr>"
        for e in examples
    )
    return f"<table>{head}{rows}</table>"


def _page(title: str, subtitle: str, body: Sequence[str]) -> str:
    return "\n".join(
        [
            page_start(title),
            f'<h1>{escape(title)}</h1><div class="muted">{escape(subtitle)}</div>',
            *body,
            "</main></body></html>\n",
        ]
    )


def poison_html(
    manifest: Mapping[str, Any],
    x: Tensor,
    x_poisoned: Tensor,
    y: Tensor,
    y_poisoned: Tensor,
    poisoned_idx: Tensor,
    trigger: Trigger | None,
    bounds: Sequence[float] = (0.0, 1.0),
) -> str:
    """The page of `adversa poison`: settings, poisons per class, trigger and examples."""
    n, k = int(manifest["n"]), int(manifest["n_poisoned"])
    target = manifest.get("target_class")
    headline = cards(
        [
            ("attack", str(manifest["attack"])),
            ("poisoned samples", f"{k:,} of {n:,} ({pct(k / max(n, 1))})"),
            ("target class", "none" if target is None else str(target)),
        ]
    )
    classes = sorted(set(y.tolist()) | set(y_poisoned.tolist()))
    changed = torch.zeros(len(y), dtype=torch.bool)
    changed[poisoned_idx] = True
    head = (
        "<tr><th>class</th><th>samples before</th><th>after</th><th>poisons labelled so</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{c}</td><td>{int((y == c).sum()):,}</td><td>{int((y_poisoned == c).sum()):,}"
        f"</td><td>{int((changed & (y_poisoned == c)).sum()):,}</td></tr>"
        for c in classes
    )
    body = [headline, "<h2>Classes</h2>", f"<table>{head}{rows}</table>"]
    if trigger is not None and _is_image(x):
        shown = (trigger.pattern * trigger.mask).expand(x.shape[1:])
        body.append(
            "<h2>Trigger</h2>"
            + '<div class="ex">'
            + figure(_unit(shown, bounds), "pattern × mask")
            + figure(trigger.mask.expand(x.shape[1:]).float(), "mask")
            + "</div>"
        )
    if _is_image(x) and poisoned_idx.numel():
        cards_html = "".join(
            f'<div class="ex">{figure(_unit(x[i], bounds), f"clean, label {int(y[i])}")}'
            f"{figure(_unit(x_poisoned[i], bounds), f'poisoned, label {int(y_poisoned[i])}')}"
            f'<div class="muted">sample #{i}</div></div>'
            for i in poisoned_idx[:GALLERY].tolist()
        )
        body.append(f'<h2>Poisoned samples</h2><div class="gallery">{cards_html}</div>')
    settings = {key: v for key, v in manifest.items() if key != "config"}
    body.append("<h2>Configuration</h2>" + kv_table({**manifest.get("config", {}), **settings}))
    return _page(f"Poisoned data: {manifest['attack']}", f"data {manifest['data']}", body)


def _metric_cards(report: Mapping[str, Any], n: int) -> str:
    items = [("detector", str(report["detector"]))]
    if report["detector"] == "strip":
        m = report["metrics"]
        items += [
            ("ROC AUC (triggered vs clean)", f"{m['auc']:.3f}"),
            (f"triggered flagged (at {pct(m['fpr_target'])} FPR)", pct(m["tpr"])),
            ("clean flagged", pct(m["fpr"])),
        ]
        return cards(items)
    items.append(("flagged", f"{len(report['flagged']):,} of {n:,}"))
    if "metrics" in report:
        m = report["metrics"]
        items += [(k, f"{m[k]:.3f}" if m[k] == m[k] else "n/a") for k in ("precision", "recall")]
        items.append(("ROC AUC", f"{m['auc']:.3f}"))
    return cards(items)


def _classes_table(classes: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "<tr><th>class</th><th>samples</th><th>far cluster share</th><th>separation</th>"
        "<th>× median</th><th>silhouette</th><th>poisoned?</th></tr>"
    )
    rows = "".join(
        f"<tr><td>{c['class']}</td><td>{c['n']:,}</td><td>{pct(c['cluster_share'])}</td>"
        f"<td>{c['separation']:.2f}</td><td>{c['separation_ratio']:.2f}</td>"
        f"<td>{c['silhouette']:.3f}</td><td>{'yes' if c['poisoned'] else 'no'}</td></tr>"
        for c in classes
    )
    return "<h2>Per class</h2>" + f"<table>{head}{rows}</table>"


def _retrain_table(retrain: Mapping[str, Any]) -> str:
    head = "<tr><th>model</th><th>clean accuracy</th><th>attack success rate</th></tr>"
    rows = "".join(
        f"<tr><td>{label}</td><td>{pct(retrain[key]['clean_accuracy'])}</td>"
        f"<td>{pct(retrain[key]['asr'])}</td></tr>"
        for key, label in (("before", "given model"), ("after", "retrained without flagged"))
    )
    recipe = retrain["recipe"]
    note = (
        f'<div class="muted">retrained for {recipe["epochs"]} epochs (seed {recipe["seed"]}) '
        f"on {recipe['n_train']:,} samples</div>"
    )
    return f"<h2>Before and after retraining</h2><table>{head}{rows}</table>{note}"


def inspect_html(
    report: Mapping[str, Any],
    x: Tensor,
    poisoned: Tensor | None,
    source: str,
    bounds: Sequence[float] = (0.0, 1.0),
) -> str:
    """The page of `adversa inspect-data` from its inspect.json content `report`; `x` the
    inspected samples, `poisoned` the bool truth (None when unknown)."""
    body = [_metric_cards(report, len(x))]
    if report["detector"] == "strip":
        scores = torch.tensor(report["scores_triggered"] + report["scores_clean"])
        truth = torch.arange(len(scores)) < len(report["scores_triggered"])
        groups = [("triggered", report["scores_triggered"]), ("clean", report["scores_clean"])]
        title = f"STRIP scores on the {report['inputs']}"
    else:
        scores, truth = torch.tensor(report["scores"]), poisoned
        if truth is None:
            groups = [("all samples", report["scores"])]
        else:
            groups = [("poisoned", scores[truth].tolist()), ("clean", scores[~truth].tolist())]
        title = "Scores of the training samples"
    body.append(
        f"<h2>{escape(title)}</h2>" + histogram_svg(groups, "score (higher = more suspicious)")
    )
    if truth is not None and "metrics" in report:
        body.append(
            "<h2>ROC curve</h2>" + roc_svg(roc_points(scores, truth), report["metrics"]["auc"])
        )
    if report.get("classes"):
        body.append(_classes_table(report["classes"]))
    if report["detector"] != "strip" and _is_image(x):
        top = torch.topk(scores, min(GALLERY, len(scores))).indices.tolist()
        items = "".join(
            f'<div class="ex">{figure(_unit(x[i], bounds), f"#{i}")}<div class="muted">score '
            f"{scores[i]:.3g}{'' if truth is None else (' · poisoned' if truth[i] else ' · clean')}"
            "</div></div>"
            for i in top
        )
        body.append(f'<h2>Most suspicious samples</h2><div class="gallery">{items}</div>')
    if "retrain" in report:
        body.append(_retrain_table(report["retrain"]))
    if report["detector"] == "strip":
        metrics = report["metrics"]
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()}
        body.append("<h2>Settings</h2>" + kv_table(shown))
    return _page(f"Poisoned-data inspection: {report['detector']}", f"data {source}", body)


def backdoor_html(summary: Mapping[str, Any]) -> str:
    """The page of `adversa backdoor-eval`: clean accuracy and ASR, always both, with
    triggered examples."""
    headline = cards(
        [
            ("clean accuracy", pct(summary["clean_accuracy"])),
            ("attack success rate", pct(summary["asr"])),
            ("target class", str(summary["target_class"])),
        ]
    )
    body = [
        headline,
        '<div class="muted">Attack success rate: the share of triggered test inputs from other '
        "classes that the model puts in the target class.</div>",
        "<h2>Triggered examples</h2>"
        + examples_gallery(summary.get("examples", []), summary["target_class"]),
    ]
    config = {k: v for k, v in summary.items() if k not in ("examples",)}
    body.append("<h2>Configuration</h2>" + kv_table(config))
    return _page("Backdoor evaluation", f"backdoor {summary['dir']}", body)
