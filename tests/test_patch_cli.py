"""`adversa patch` in-process through `adversa.cli.main.main`, on the zoo's mnist-cnn with a
few steps: both reports and their keys, and the exit-2 paths (one line naming the flag)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from adversa.cli.main import main

FAST = ["--steps", "20", "--batch-size", "16", "--n", "60", "--size-steps", "5"]


def _argv(*extra: str) -> list[str]:
    return ["patch", "--model", "mnist-cnn", "--data", "mnist", *FAST, *extra]


def test_patch_writes_both_reports_with_the_curves(mnist_cnn, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    ring = np.zeros((20, 20), np.uint8)
    ring[2:18, 2:18] = 255
    ring[7:13, 7:13] = 0
    Image.fromarray(ring).save(tmp_path / "ring.png")
    argv = _argv("--size", "0.1", "--shape", str(tmp_path / "ring.png"), "--target-class", "3")
    argv += ["--transforms", "rotate=15,noise=0.02", "--sizes", "0.05,0.1", "--seed", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("success_rate", "success_by_size", "success_by_transform", "baseline", "cost"):
        assert key in report
    assert {"config", "seed", "versions", "examples", "patch", "warnings"} <= set(report)
    assert report["seed"] == 2 and report["n"] == 60 and report["targeted"] is True
    assert report["eligible"] == int((mnist_cnn[1].y[:60] != 3).sum())
    assert 0 <= report["success_rate"] <= 1 and 0 <= report["baseline"]["success_rate"] <= 1
    assert [r["size"] for r in report["success_by_size"]] == [0.05, 0.1]
    curves = report["success_by_transform"]
    assert set(curves) >= {"rotate", "noise", "brightness", "blur", "position"}
    assert [p["transforms"] for p in curves["rotate"]] == [
        "none",
        "rotate=3.75",
        "rotate=7.5",
        "rotate=15",
    ]
    assert curves["rotate"][0]["success_rate"] == curves["noise"][0]["success_rate"]
    train_cost = report["cost"]["train"]
    assert train_cost["forward_calls"] == train_cost["backward_calls"] == 20 * 16
    assert report["cost"]["forward_calls"] > report["cost"]["backward_calls"] > 0
    assert report["config"]["transforms"] == "rotate=15,noise=0.02"
    assert len(report["examples"]) == 8 and report["examples"][0]["image"].startswith("data:")
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 2 and "The patch" in html and html.count("data:image/png") == 9
    assert "success versus patch size" in html and "random patch" in html
    printed = capsys.readouterr().out
    assert "target 3" in printed and "report:" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "0.7"], "--size must be a fraction of the image area in (0, 0.5], got 0.7"),
        (["--size", "0"], "--size must be a fraction of the image area in (0, 0.5], got 0.0"),
        (["--target-class", "10"], "--target-class must be in [0, 9] for this 10-class model"),
        (["--shape", "missing.png"], "--shape: mask file 'missing.png' does not exist"),
        (["--shape", "hexagon"], "--shape must be square, circle or a PNG mask file"),
        (["--transforms", "rotate=abc"], "--transforms: bad item 'rotate=abc'"),
        (["--transforms", "spin=3"], "--transforms: bad item 'spin=3': expected NAME=VALUE"),
        (["--eval-transforms", "noise=-1"], "--eval-transforms: bad item 'noise=-1'"),
        (["--position", "2"], "--position must be in [0, 1], got 2.0"),
        (["--sizes", "0.1,big"], "--sizes: cannot read 'big' as a number"),
        (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    ],
)
def test_patch_bad_input_exits_2_with_one_line(mnist_cnn, tmp_path, capsys, extra, message) -> None:
    assert main([*_argv(*extra), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adversa: error:") and len(err.splitlines()) == 1
    assert message in err
    assert not (tmp_path / "o" / "report.json").exists()


def test_patch_unreadable_or_empty_mask_exits_2(mnist_cnn, tmp_path, capsys) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    for name, message in (("bad.png", "as an image"), ("empty.png", "is empty")):
        argv = _argv("--shape", str(tmp_path / name), "--out", str(tmp_path / "o"))
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--shape" in err and message in err
