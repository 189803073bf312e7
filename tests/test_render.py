"""`adversa.render`: the parts every report shares, and one configuration table across reports
with numbers rounded for people (the JSON stays exact)."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path

import numpy as np
import torch

from adversa import render
from adversa.privacy.report import render_defense_html
from adversa.text.report import render_text_html

SRC = Path(__file__).resolve().parents[1] / "src" / "adversa"
ALLOWED = {"adversa.errors", "adversa.io", "adversa.versions"}


def test_render_is_low():
    tree = ast.parse((SRC / "render.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert {m for m in imported if m.startswith("adversa")} <= ALLOWED


def test_numbers_are_rounded_for_display_and_exact_in_json():
    assert render.fmt(2 / 3) == "0.6667" and render.fmt(1e-5) == "1e-05"
    assert render.fmt(3) == "3" and render.pct(0.91234) == "91.2%"
    assert render.display([0.05, 0.1]) == "0.05, 0.1"
    assert render.display({"lr": 1 / 3, "fprs": [0.01, 0.001]}) == "lr: 0.3333, fprs: [0.01, 0.001]"
    exact = render.jsonable({"a": (1 / 3, float("inf")), 2: np.float32(0.5), "t": torch.ones(2)})
    assert exact == {"a": [1 / 3, "inf"], "2": 0.5, "t": [1.0, 1.0]}
    json.dumps(exact, allow_nan=False)


def test_tables_escape_and_warnings_box():
    table = render.kv_table({"<k>": "<script>", "x": [1.5, None]})
    assert "&lt;script&gt;" in table and "<script>" not in table and "1.5, None" in table
    assert render.warnings_block([]) == '<div class="ok">No sanity check raised a warning.</div>'
    assert render.warnings_block([], ok="") == ""
    assert "⚠ 2 warning(s)" in render.warnings_block(["a", "b<"]) and "b&lt;" in (
        render.warnings_block(["b<"])
    )


def test_png_data_uri_and_line_chart():
    uri = render.png_data_uri(torch.rand(1, 8, 8))
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert render.figure(torch.rand(64), "a<b").count("a&lt;b") == 2
    svg = render.line_chart_svg([(0.0, 1.0), (0.1, 0.5)], "eps (linf)")
    assert svg.startswith("<svg") and svg.count("<circle") == 2 and "50.0%" in svg


def test_every_configuration_is_one_rounded_table():
    versions = {"adversa": "0"}
    config = {"lr": 2 / 3, "attacks": ["pwws"], "nested": {"a": 0.123456789}}
    text = render_text_html({"attacks": [], "config": config, "versions": versions})
    defense = render_defense_html(
        {
            "timestamp": "t",
            "seed": 0,
            "seconds": 1.0,
            "fprs": [],
            "options": [],
            "config": config,
            "versions": versions,
        }
    )
    for page in (text, defense):
        assert '<h2>Configuration</h2><table class="kv">' in page
        assert "<code>0.6667</code>" in page and "a: 0.1235" in page
        assert "<pre>" not in page and "&quot;" not in page
