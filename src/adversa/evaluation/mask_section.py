"""The mask section of `report.html` for `adversa evaluate --mask`, rendered from the report
dict alone: `config.mask` holds the option given, the pixels inside, their share of the image
area and the mask as a PNG data URI (`adversa.physical.masks.mask_summary`). The section
shows the mask; the configuration table names only the option (`html.SECTION_OPTIONS`)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from adversa.render import cards, pct

__all__ = ["mask_section"]


def mask_section(data: Mapping[str, Any]) -> str:
    """ "" without a mask; else its heading, cards and the mask as an image."""
    mask = data.get("config", {}).get("mask")
    if not isinstance(mask, Mapping):
        return ""
    headline = cards(
        [
            ("mask", str(mask.get("spec", ""))),
            ("pixels inside", str(mask.get("pixels", ""))),
            ("share of the image area", pct(mask.get("area_share", 0.0))),
        ]
    )
    note = (
        "<p>Every attack perturbs only the pixels inside the mask (white); the rest of each "
        "image is unchanged, checked by the threat model's projection.</p>"
    )
    image = f'<figure><img alt="mask" src="{escape(str(mask.get("png", "")))}">mask</figure>'
    return "<h2>Mask</h2>" + headline + note + f'<div class="gallery">{image}</div>'
