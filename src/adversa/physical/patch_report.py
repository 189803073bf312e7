"""report.json and report.html of `adversa patch`: the patch as an image, patched held-out
examples with their predictions, the success rate beside the random-patch control, and the
curves (success versus patch size, versus each transformation's range). Both files are
written atomically."""

from __future__ import annotations

import datetime
import json
from html import escape
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adversa.io import atomic_write_text
from adversa.model import Model
from adversa.physical.patch import Patch, place_patch
from adversa.physical.transforms import Transforms
from adversa.render import (
    cards,
    config_section,
    jsonable,
    line_chart_svg,
    page_start,
    pct,
    png_data_uri,
    run_line,
    warnings_block,
)
from adversa.rng import make_generator


def _unit(x: Tensor, bounds: tuple[float, float]) -> Tensor:
    lo, hi = bounds
    return ((x.float() - lo) / (hi - lo)).cpu()


def patch_picture(patch: Patch) -> dict[str, Any]:
    """The patch for the report: a PNG data URI (outside the mask shown in the lower bound),
    its side in pixels, its shape and the share of the patch square it covers."""
    return {
        "image": png_data_uri(_unit(patch.image, patch.bounds)),
        "side": patch.side,
        "shape": patch.config.shape,
        "size": patch.config.size,
        "pixels": int(patch.mask.sum()),
    }


@torch.no_grad()
def patched_examples(
    model: Model,
    patch: Patch,
    x: Tensor,
    y: Tensor,
    transforms: Transforms,
    seed: int,
    k: int = 8,
) -> list[dict[str, Any]]:
    """The first `k` held-out images with the patch placed and the scene drawn from `seed`
    (as in the measurement): label, prediction without and with the patch, and the patched
    image as a PNG data URI."""
    if k == 0:
        return []
    xb = x[:k].to(model.device)
    cfg = patch.config
    image, mask = patch.image.to(xb), patch.mask.to(xb)
    place_gen = make_generator(seed, model.device)
    scene_gen, clean_gen = (make_generator(seed + 1, model.device) for _ in range(2))
    placed = place_patch(xb, image, mask, place_gen, cfg.rotate, cfg.scale, cfg.position)
    seen = transforms(placed, scene_gen, patch.bounds)
    with model.eval_mode():
        predicted = model(seen).argmax(1).tolist()
        clean = model(transforms(xb, clean_gen, patch.bounds)).argmax(1).tolist()
    return [
        {
            "label": int(label),
            "clean_prediction": int(c),
            "prediction": int(p),
            "image": png_data_uri(_unit(s, patch.bounds)),
        }
        for label, c, p, s in zip(y[:k].tolist(), clean, predicted, seen, strict=True)
    ]


def write_patch_reports(directory: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write DIR/report.json and DIR/report.html atomically; return both paths."""
    data = jsonable(report)
    data.setdefault("timestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    out = Path(directory)
    json_path = atomic_write_text(out / "report.json", json.dumps(data, indent=2) + "\n")
    return json_path, atomic_write_text(out / "report.html", render_patch_html(data))


def render_patch_html(data: dict[str, Any]) -> str:
    """The self-contained page: headline cards, the patch, examples, both curves, config."""
    classes = data.get("class_names") or []
    target = data["target_class"]
    goal = f"target class {target}" if data["targeted"] else "untargeted"
    if data["targeted"] and target < len(classes):
        goal = f"target {classes[target]}, class {target}"
    head = [
        ("success rate (held-out)", pct(data["success_rate"])),
        ("random patch (control)", pct(data["baseline"]["success_rate"])),
        ("patch size", f"{100 * data['patch']['size']:g}% of the image"),
        ("clean accuracy", pct(data["clean_accuracy"])),
        (
            "forward / backward passes",
            f"{data['cost']['forward_calls']:,} / {data['cost']['backward_calls']:,}",
        ),
    ]
    sizes = data["success_by_size"]
    size_chart = line_chart_svg(
        [(r["size"], r["success_rate"]) for r in sizes],
        "patch size (fraction of the image area)",
        x_name="size",
        label="success versus patch size",
        name="trained patch",
        series=[("random patch", [(r["size"], r["baseline"]) for r in sizes])],
    )
    by_transform = data["success_by_transform"]
    names = list(by_transform)
    series = [(n, [(p["fraction"], p["success_rate"]) for p in by_transform[n]]) for n in names]
    transform_chart = line_chart_svg(
        series[0][1],
        "fraction of the range (only that transformation varies)",
        x_name="fraction",
        label="success versus each transformation's range",
        name=series[0][0],
        series=series[1:],
    )
    ranges = "".join(
        f"<tr><td>{escape(n)}</td><td><code>{escape(by_transform[n][-1]['transforms'])}</code>"
        f"</td><td>{pct(by_transform[n][-1]['success_rate'])}</td></tr>"
        for n in names
    )

    def name(k: int) -> str:
        return escape(classes[k]) if k < len(classes) else str(k)

    gallery = "".join(
        f'<figure><img alt="example" src="{e["image"]}">{name(e["label"])}: '
        f"{name(e['clean_prediction'])} &rarr; {name(e['prediction'])}</figure>"
        for e in data["examples"]
    )
    return "\n".join(
        [
            page_start(f"adversa patch: {data['model']}"),
            f"<h1>Adversarial patch on {escape(str(data['model']))} ({escape(goal)})</h1>",
            run_line(data["timestamp"], data["seed"], data["seconds"]),
            cards(head),
            warnings_block(data.get("warnings") or [], ok=""),
            f'<p class="muted">{escape(data["success_definition"])}; {data["eligible"]} of '
            f"{data['n']} held-out images count, under fresh random placements and scene "
            f"transformations <code>{escape(data['eval_transforms'])}</code> (trained under "
            f"<code>{escape(data['transforms'])}</code>).</p>",
            "<h2>The patch</h2>",
            f'<div class="ex"><figure><img alt="patch" src="{data["patch"]["image"]}">'
            f"{data['patch']['side']}x{data['patch']['side']} pixels, "
            f"{escape(str(data['patch']['shape']))}</figure></div>",
            "<h2>Held-out examples with the patch</h2>",
            '<p class="muted">Each caption: true class: prediction without the patch (same '
            "scene) &rarr; prediction with it.</p>",
            f'<div class="ex">{gallery}</div>',
            "<h2>Success versus patch size</h2>",
            '<p class="muted">A patch re-trained at each size (fewer steps than the main '
            "patch); dashed: a random patch of that size.</p>",
            size_chart,
            "<h2>Success versus each transformation's range</h2>",
            '<p class="muted">The trained patch with only one transformation varying, at a '
            "fraction of its range; <code>position</code> is the patch's own placement "
            "range (0: centred, 1: anywhere) with no scene transformation.</p>",
            transform_chart,
            "<table><tr><th>transformation</th><th>full range</th><th>success</th></tr>"
            f"{ranges}</table>",
            config_section(data["config"], data["versions"]),
            "</main></body></html>",
        ]
    )


def patch_summary(report: dict[str, Any]) -> str:
    """Lines for the terminal: success beside the control, by size, warnings."""
    goal = f"target {report['target_class']}" if report["targeted"] else "untargeted"
    sizes = ", ".join(
        f"{r['size']:g}: {100 * r['success_rate']:.1f}%" for r in report["success_by_size"]
    )
    lines = [
        f"patch {100 * report['patch']['size']:g}% ({goal}): success "
        f"{100 * report['success_rate']:.1f}% "
        f"of {report['eligible']} held-out images; random patch "
        f"{100 * report['baseline']['success_rate']:.1f}%",
        f"by size: {sizes}",
        f"cost: {report['cost']['forward_calls']:,} forward, "
        f"{report['cost']['backward_calls']:,} backward passes",
    ]
    return "\n".join([*lines, *(f"warning: {w}" for w in report.get("warnings") or [])])
