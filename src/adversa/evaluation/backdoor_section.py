"""The backdoor section of `report.html` for `adversa evaluate --backdoor DIR`, rendered from
the report dict alone: `config.backdoor` holds the directory, the target class, the clean
accuracy and attack success rate on the evaluated points, and a few triggered examples (index,
label, predictions, the triggered input as a PNG data URI). Clean accuracy and ASR are always
shown together. The section shows the backdoor; the configuration table names only its
directory (`html.SECTION_OPTIONS`)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from adversa.render import cards, pct

__all__ = ["backdoor_section"]


def backdoor_section(data: Mapping[str, Any]) -> str:
    """ "" without a backdoor; else its heading, cards, note and triggered examples."""
    backdoor = data.get("config", {}).get("backdoor")
    if not isinstance(backdoor, Mapping):
        return ""
    target = backdoor.get("target_class")
    headline = cards(
        [
            ("clean accuracy", pct(backdoor["clean_accuracy"])),
            ("attack success rate", pct(backdoor["asr"])),
            ("target class", str(target)),
        ]
    )
    note = (
        f'<div class="muted">Backdoor of <code>{escape(str(backdoor.get("dir", "")))}</code>: '
        "the attack success rate is the share of triggered points from other classes that the "
        "model puts in the target class.</div>"
    )
    examples = backdoor.get("examples") or []
    items = "".join(_example(e, target) for e in examples)
    gallery = f'<h3>Triggered examples</h3><div class="gallery">{items}</div>' if items else ""
    return f"<h2>Backdoor</h2>{headline}{note}{gallery}"


def _example(example: Mapping[str, Any], target: Any) -> str:
    caption = escape(
        f"#{example['index']}: true {example['label']} · clean → "
        f"{example['clean_prediction']} · triggered → {example['prediction']}"
        + (" (target)" if example["prediction"] == target else "")
    )
    image = example.get("image")
    if not isinstance(image, str) or not image.startswith("data:image/png;base64,"):
        return f'<div class="ex"><div class="muted">{caption}</div></div>'
    return (
        f'<div class="ex"><figure><img alt="triggered #{escape(str(example["index"]))}" '
        f'src="{escape(image)}">triggered</figure><div class="muted">{caption}</div></div>'
    )
