"""`adversa evaluate --mask` (and `--transforms`): the threat becomes a MaskedThreat, the
report records and shows the mask, and bad masks exit 2 with one line naming --mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import refused
from PIL import Image

from adversa.cli.main import main


def _evaluate(out: Path, *extra: str, data: str = "mnist") -> list[str]:
    return [
        "evaluate",
        "--model",
        "mnist-cnn",
        "--data",
        data,
        "--n",
        "32",
        "--norm",
        "linf",
        "--eps",
        "1",
        "--attacks",
        "pgd",
        "--steps",
        "10",
        "--out",
        str(out),
        *extra,
    ]


def test_evaluate_with_stickers_records_and_shows_the_mask(mnist_cnn, tmp_path, capsys):
    """Unbounded stickers (9.2% of the area): robust accuracy falls by at least 50 points
    from clean (measured 96.9% -> 9.4%); the report records the mask, the page shows it."""
    out = tmp_path / "stickers"
    assert main(_evaluate(out, "--mask", "stickers")) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "mask: stickers, 72 pixels (9.2%)" in printed
    report = json.loads((out / "report.json").read_text())
    mask = report["config"]["mask"]
    assert mask["spec"] == "stickers" and mask["pixels"] == 72
    assert mask["area_share"] == pytest.approx(72 / 784)
    assert report["robust_accuracy"] <= report["clean_accuracy"] - 0.5
    threat = report["attacks"][0]["config"]["threat"]
    assert threat["mask"] == "tensor (28, 28), 72 nonzero"  # summarised, not 784 values
    assert not any("same point" in w for w in report["warnings"])
    html = (out / "report.html").read_text()
    assert "<h2>Mask</h2>" in html and mask["png"] in html
    assert html.count(mask["png"]) == 1  # the configuration table names only the option


def test_evaluate_with_a_png_mask_and_transforms(mnist_cnn, tmp_path, capsys):
    png = tmp_path / "corner.png"
    pixels = np.zeros((56, 56), dtype=np.uint8)
    pixels[:28, :28] = 255  # the top-left quarter, at twice the data's resolution
    Image.fromarray(pixels).save(png)
    out = tmp_path / "png"
    argv = _evaluate(out, "--mask", str(png), "--transforms", "rotate=10,noise=0.02", "--eot", "2")
    assert main(argv) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["mask"]["pixels"] == 196
    assert report["config"]["transforms"] == "rotate=10,noise=0.02"
    assert report["config"]["eot"] == 2


def test_bad_masks_exit_2_naming_the_flag(mnist_cnn, tmp_path, capsys):
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(black)
    text = tmp_path / "mask.png"
    text.write_text("not an image")
    out = tmp_path / "out"
    refused(_evaluate(out, "--mask", "stiker"), capsys, r"--mask: unknown mask 'stiker'.*stickers")
    refused(_evaluate(out, "--mask", str(black)), capsys, r"--mask: mask .*black\.png' is empty")
    refused(_evaluate(out, "--mask", str(text)), capsys, r"--mask: cannot read .*mask\.png")
    refused(
        _evaluate(out, "--mask", "square", data="breast-cancer"),
        capsys,
        r"--mask needs image data shaped \(N, C, H, W\), got points shaped \(30,\)",
    )
    refused(_evaluate(out, "--transforms", "spin=3"), capsys, r"--transforms: bad item 'spin=3'")
    assert not out.exists()
