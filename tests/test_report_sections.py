"""report.html of `adversa evaluate` shows what the run measured beyond the attacks:
`--certify` (certified beside robust accuracy per eps, in the table and the curve, its time
counted in the report's) and `--check-masking` (each check that ran with its outcome, passed
or not, and the eps sweep to the full input range drawn)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_digits_mlp

from adversa import render
from adversa.cli.main import main

FACTORY = """
from torch import nn


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 64), nn.ReLU(),
                                                     nn.Linear(64, 10)))
"""


@pytest.fixture(scope="module")
def setup(digits_mlp, tmp_path_factory) -> dict[str, Path]:
    _, x, y = digits_mlp
    root = tmp_path_factory.mktemp("report-sections")
    np.savez(root / "digits.npz", x=x[:60].reshape(-1, 1, 8, 8).numpy(), y=y[:60].numpy())
    (root / "nets.py").write_text(FACTORY)
    state = {f"1.{k}": v for k, v in train_digits_mlp(0).state_dict().items()}
    torch.save(state, root / "mlp.pt")
    return {"data": root / "digits.npz", "py": root / "nets.py", "weights": root / "mlp.pt"}


def _evaluate(setup, out: Path, *extra: str) -> tuple[dict, str]:
    argv = [
        "evaluate",
        "--model",
        f"{setup['py']}:mlp",
        "--weights",
        str(setup["weights"]),
        "--data",
        str(setup["data"]),
        "--norm",
        "linf",
        "--attacks",
        "pgd",
        "--steps",
        "5",
        "--out",
        str(out),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.html").read_text()


def _cells(html: str, heading: str) -> list[list[str]]:
    """The text of each row's cells in the first table after the `<h2>` named `heading`."""
    table = html.split(f"<h2>{heading}</h2>", 1)[1].split("</table>", 1)[0]
    return [
        [re.sub("<[^>]+>", "", c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table)
    ]


def test_certify_is_in_the_page_and_its_time(setup, tmp_path):
    report, html = _evaluate(setup, tmp_path, "--eps", "0.01,0.05", "--certify", "crown")
    entries = report["certified"]
    assert [e["eps"] for e in entries] == [0.01, 0.05]
    assert all(e["seconds"] > 0 for e in entries)
    assert report["seconds"] >= sum(e["seconds"] for e in entries)
    rows = _cells(html, "Certified versus robust accuracy")
    assert "certified accuracy (crown)" in rows[0]
    for row, entry, result in zip(rows[1:], entries, report["results"], strict=True):
        assert row[0] == render.fmt(entry["eps"])
        assert row[2] == render.pct(result["robust_accuracy"])
        assert row[3] == render.pct(entry["certified_accuracy"])
    for entry in entries:  # beside robust accuracy under each eps's attack table
        assert f"certified (crown) {render.pct(entry['certified_accuracy'])}" in html
    curve = html.split("<h2>Accuracy versus eps</h2>", 1)[1].split("</svg>", 1)[0]
    assert curve.count("<polyline") == 2 and "certified (crown)" in curve
    for entry in entries:
        tip = f"certified (crown), eps={render.fmt(entry['eps'])}: "
        assert tip + render.pct(entry["certified_accuracy"]) in curve


def test_check_masking_names_each_check_and_its_outcome(setup, tmp_path):
    report, html = _evaluate(setup, tmp_path, "--eps", "0.1", "--check-masking")
    assert report["masking_sweep"]
    rows = _cells(html, "Gradient-masking checks (--check-masking)")
    checks = {row[0]: row[2] for row in rows[1:]}
    assert checks["convergence (2x steps, one more restart)"] in ("passed", "FAILED")
    assert checks["eps sweep to the full input range"] in ("passed", "FAILED")
    failed = any("full input range" in w for w in report["warnings"])
    assert (checks["eps sweep to the full input range"] == "FAILED") == failed
    sweep = html.split("<h3>Eps sweep to the full input range</h3>", 1)[1].split("</svg>", 1)[0]
    assert sweep.count("<circle") == len(report["masking_sweep"])
    last = report["masking_sweep"][-1]
    assert f"eps={render.fmt(last['eps'])}: {render.pct(last['robust_accuracy'])}" in sweep


def test_without_the_options_the_page_has_no_such_sections(setup, tmp_path):
    _, html = _evaluate(setup, tmp_path, "--eps", "0.05,0.1")
    assert "Certified versus robust accuracy" not in html
    assert "Gradient-masking checks" not in html
    curve = html.split("<h2>Accuracy versus eps</h2>", 1)[1].split("</svg>", 1)[0]
    assert curve.count("<polyline") == 1
