"""The command line, run in-process through `adversa.cli.main.main(argv)`; one subprocess test
proves the `python -m adversa` entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import adversa.jobs.evaluate as jobs_evaluate
from adversa.cli.common import parse_eps
from adversa.cli.main import main

N = 120  # points per test file: enough for a real evaluation, fast on one thread


@pytest.fixture(scope="module")
def files(digits_mlp, tmp_path_factory) -> dict[str, Path]:
    """Digits as images (N, 1, 8, 8) in .npz files, and the trained MLP saved three ways."""
    model, x, y = digits_mlp
    root = tmp_path_factory.mktemp("cli")
    images, labels = x[:N].reshape(-1, 1, 8, 8).numpy(), y[:N].numpy()
    paths = {
        "data": root / "digits.npz",
        "flat": root / "flat32.npz",
        "scaled": root / "scaled.npz",
        "labels": root / "labels.npz",
        "nan": root / "nan.npz",
        "script": root / "model.pt",
        "probs": root / "probs.pt",
        "garbage": root / "garbage.pt",
        "factory": root / "net.py",
        "weights": root / "weights.pt",
    }
    np.savez(paths["data"], x=images, y=labels)
    np.savez(paths["flat"], x=x[:N, :32].numpy(), y=labels)
    np.savez(paths["scaled"], x=images * 16, y=labels)
    np.savez(paths["labels"], x=images, y=labels + 5)
    with_nan = images.copy()
    with_nan[3, 0, 2, 2] = np.nan
    np.savez(paths["nan"], x=with_nan, y=labels)
    net = nn.Sequential(nn.Flatten(), model.module).eval()
    with warnings.catch_warnings():  # torch deprecates TorchScript; users still hand it to us
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), paths["script"])
        torch.jit.save(torch.jit.script(nn.Sequential(net, nn.Softmax(dim=1))), paths["probs"])
    paths["garbage"].write_bytes(b"this is not a model")
    paths["factory"].write_text(
        "from torch import nn\n\n\ndef make():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 64), nn.ReLU(), "
        "nn.Linear(64, 10)))\n"
    )
    torch.save(net.state_dict(), paths["weights"])
    return paths


def _argv(files: dict[str, Path], out: Path, **changes: str | None) -> list[str]:
    options = {
        "--model": str(files["script"]),
        "--data": str(files["data"]),
        "--norm": "linf",
        "--eps": "0.1",
        "--attacks": "fgsm,pgd",
        "--steps": "10",
        "--out": str(out),
    }
    options.update(changes)
    argv = ["evaluate"]
    for flag, value in options.items():
        if value is not None:
            argv += [flag, value] if not value.startswith("-") else [f"{flag}={value}"]
    return argv


def test_evaluate_writes_both_reports(files, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(_argv(files, out, **{"--eps": "0.1,8/255", "--n": "100", "--seed": "1"}))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads((out / "report.json").read_text())
    assert data["n"] == 100 and data["seed"] == 1
    assert data["config"]["eps"] == pytest.approx([0.1, 8 / 255])
    assert data["config"]["model"] == str(files["script"])
    assert [a["name"] for a in data["attacks"]] == ["fgsm", "pgd"]
    assert data["attacks"][1]["config"]["steps"] == 10
    assert 0 <= data["robust_accuracy"] <= data["clean_accuracy"] <= 1
    assert [p["eps"] for p in data["curve"]] == pytest.approx([8 / 255, 0.1])
    html = (out / "report.html").read_text()
    assert "<svg" in html and "<img" in html
    assert "clean accuracy" in captured.out
    assert f"report: {out / 'report.html'}" in captured.out


def test_evaluate_a_factory_with_weights(files, tmp_path, capsys):
    spec = f"{files['factory']}:make"
    code = main(_argv(files, tmp_path, **{"--model": spec, "--weights": str(files["weights"])}))
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "report.json").read_text())["clean_accuracy"] > 0.8


def test_probability_outputs_warn_but_succeed(files, tmp_path, capsys):
    code = main(_argv(files, tmp_path, **{"--model": str(files["probs"]), "--attacks": "fgsm"}))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warnings = json.loads((tmp_path / "report.json").read_text())["warnings"]
    assert any("probabilities" in w for w in warnings)
    assert "warning: the model's outputs look like probabilities" in captured.out


BAD_INPUTS = {
    "unknown attack": ({"--attacks": "fgsm,pgdd"}, "unknown attack 'pgdd'; did you mean 'pgd'"),
    "unknown dataset": ({"--data": "mnistt"}, "unknown dataset 'mnistt'; did you mean 'mnist'"),
    "unknown model": ({"--model": "mnist-cnnn"}, "unknown model 'mnist-cnnn'; did you mean"),
    "negative eps": ({"--eps": "-0.1"}, "eps must be >= 0, got -0.1"),
    "unreadable eps": ({"--eps": "0.1,abc"}, "--eps: cannot read 'abc' as a number"),
    "eps beyond the bounds": ({"--eps": "1.5"}, "eps=1.5 is larger than the bounds allow"),
    "l2 eps beyond the bounds": (
        {"--norm": "l2", "--eps": "9", "--attacks": "fgsm"},
        "eps=9.0 is larger than the bounds allow: no l2 perturbation",
    ),
    "data outside the bounds": ({"--data": "scaled"}, "outside the declared bounds"),
    "shape mismatch": ({"--data": "flat"}, r"the model rejected an input of shape \(32,\)"),
    "labels out of range": ({"--data": "labels"}, r"labels must lie in \[0, 9\]"),
    "model file does not load": ({"--model": "garbage"}, "not a TorchScript archive"),
    "missing model file": ({"--model": "missing/model.pt"}, "no such file"),
    "NaN in the data": ({"--data": "nan"}, "NaN"),
    "bad bounds": ({"--bounds": "0"}, "--bounds must be LO,HI"),
    "bad n": ({"--n": "0"}, r"--n \(--n-points\) must be >= 1"),
    "missing cuda": ({"--device": "cuda"}, "CUDA is not available"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line(case, files, tmp_path, capsys):
    changes, message = BAD_INPUTS[case]
    changes = {k: str(files.get(v, v)) for k, v in changes.items()}
    if case == "missing cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code = main(_argv(files, tmp_path / "out", **changes))
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("adversa: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_usage_errors_exit_2(files, tmp_path, capsys):
    assert main(["evaluate", "--model", "x", "--data", "y", "--norm", "linf"]) == 2
    assert "required" in capsys.readouterr().err
    assert main(_argv(files, tmp_path, **{"--norm": "l3"})) == 2
    assert main([]) == 2
    assert main(["--help"]) == 0


def test_other_errors_exit_1_with_traceback_only_when_debugging(
    files, tmp_path, capsys, monkeypatch
):
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(jobs_evaluate, "evaluate_sweep", boom)
    assert main(_argv(files, tmp_path)) == 1
    err = capsys.readouterr().err
    assert "adversa: internal error: RuntimeError: boom (run with --debug" in err
    assert "Traceback" not in err and "second line" not in err
    assert main(["--debug", *_argv(files, tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("ADVERSA_DEBUG", "1")
    assert main(_argv(files, tmp_path)) == 1
    assert "Traceback" in capsys.readouterr().err


def test_list_commands(capsys):
    assert main(["list", "attacks"]) == 0
    out = capsys.readouterr().out
    assert "fgsm" in out and "pgd" in out and "norms: linf, l2, l1" in out
    assert main(["list", "datasets"]) == 0
    assert "mnist" in capsys.readouterr().out.split()
    assert main(["list", "models"]) == 0
    assert "mnist-cnn" in capsys.readouterr().out
    assert main(["list", "defenses"]) == 0
    assert "pgd-at" in capsys.readouterr().out
    assert main(["list", "poisons"]) == 0
    out = capsys.readouterr().out
    assert "badnets" in out and "gradient-matching" in out and "spectral" in out
    assert main(["list", "text-attacks"]) == 0
    assert capsys.readouterr().out.split() == ["deepwordbug", "pwws"]
    assert main(["list", "detectors"]) == 2


def test_eps_parsing():
    assert parse_eps("0.1, 8/255,0") == pytest.approx([0.1, 8 / 255, 0.0])


def test_python_dash_m_entry_point():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "adversa", "list", "attacks"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pgd" in proc.stdout
