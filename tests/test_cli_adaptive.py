"""The CLI's adaptive-attack flags (--eot, --bpda, --surrogate, --check-masking) and a
2-process torchrun evaluation that must equal the 1-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_digits_mlp

from adversa.cli.main import main

FACTORIES = """
import torch
from torch import nn


class Quantize(nn.Module):
    non_differentiable = True

    def forward(self, x):
        return torch.round(x * 3) / 3


class Noise(nn.Module):
    def __init__(self):
        super().__init__()
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        return x + 0.3 * torch.randn(x.shape, generator=self.gen)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 64), nn.ReLU(),
                                                     nn.Linear(64, 10)))


def quantized():
    return nn.Sequential(Quantize(), mlp())


def noisy():
    return nn.Sequential(Noise(), mlp())


def wide():
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 128), nn.ReLU(),
                                                     nn.Linear(128, 10)))
"""


@pytest.fixture(scope="module")
def setup(digits_mlp, tmp_path_factory) -> dict[str, Path]:
    _, x, y = digits_mlp
    root = tmp_path_factory.mktemp("cli-adaptive")
    paths = {"data": root / "digits.npz", "py": root / "nets.py"}
    np.savez(paths["data"], x=x[:100].reshape(-1, 1, 8, 8).numpy(), y=y[:100].numpy())
    paths["py"].write_text(FACTORIES)
    mlp = train_digits_mlp(0)
    state = {f"1.{k}": v for k, v in mlp.state_dict().items()}
    torch.save(state, root / "mlp.pt")
    torch.save({f"1.{k}": v for k, v in state.items()}, root / "wrapped.pt")
    torch.save(
        {f"1.{k}": v for k, v in train_digits_mlp(1, 128).state_dict().items()}, root / "wide.pt"
    )
    paths.update(mlp=root / "mlp.pt", wrapped=root / "wrapped.pt", wide=root / "wide.pt")
    return paths


def _run(setup, out: Path, model: str, weights: str, *extra: str) -> dict:
    argv = [
        "evaluate",
        "--model",
        f"{setup['py']}:{model}",
        "--weights",
        str(setup[weights]),
        "--data",
        str(setup["data"]),
        "--norm",
        "linf",
        "--eps",
        "0.15",
        "--out",
        str(out),
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text())


def test_bpda_flag_breaks_quantization(setup, tmp_path):
    plain = _run(setup, tmp_path / "a", "quantized", "wrapped", "--attacks", "pgd")
    adaptive = _run(
        setup, tmp_path / "b", "quantized", "wrapped", "--attacks", "pgd", "--bpda", "identity"
    )
    assert adaptive["config"]["bpda"] == "identity"
    assert adaptive["robust_accuracy"] < plain["robust_accuracy"] - 0.3
    assert any("exactly zero" in w for w in plain["warnings"])


def test_eot_flag_on_a_randomised_model(setup, tmp_path):
    report = _run(setup, tmp_path, "noisy", "wrapped", "--attacks", "pgd", "--eot", "8")
    assert report["config"]["eot"] == 8
    # 8 draws per point per step: the backward count shows the expectation was taken.
    pgd = report["attacks"][0]
    assert pgd["backward_calls"] >= 8 * pgd["attacked"]


def test_eot_silences_the_randomised_warning_and_flags_a_deterministic_model(setup, tmp_path):
    # Without --eot the noisy model is flagged as needing EOT; with it, no longer.
    plain = _run(setup, tmp_path / "a", "noisy", "wrapped", "--attacks", "pgd", "--steps", "5")
    assert any("need expectation over transformation" in w for w in plain["warnings"])
    noisy = _run(
        setup, tmp_path / "b", "noisy", "wrapped", "--attacks", "pgd", "--steps", "5", "--eot", "8"
    )
    assert not any("randomised" in w or "EOT" in w for w in noisy["warnings"])
    # On a deterministic model --eot is redundant at 8x the cost: said so.
    det = _run(
        setup, tmp_path / "c", "mlp", "mlp", "--attacks", "pgd", "--steps", "5", "--eot", "8"
    )
    assert any("deterministic" in w and "redundant" in w and "8x" in w for w in det["warnings"])
    assert "8x" in (tmp_path / "c" / "report.html").read_text()
    # Behind a deterministic input defense, --eot is not used: said so too.
    guarded = _run(
        setup, tmp_path / "d", "mlp", "mlp", "--attacks", "pgd", "--steps", "5", "--eot", "8",
        "--defense", "squeeze:bits=4",
    )  # fmt: skip
    assert any(w.startswith("--eot 8: not used") for w in guarded["warnings"])


def test_detector_only_evaluate_has_no_defense_none_line(setup, tmp_path, capsys):
    extra = ("--attacks", "pgd", "--steps", "5", "--n", "30", "--detector", "squeeze")
    report = _run(setup, tmp_path, "mlp", "mlp", *extra)
    assert report["defense"]["detector"]["spec"] == "squeeze"
    out = capsys.readouterr().out
    assert "detector squeeze:" in out
    assert "defense none" not in out
    html = (tmp_path / "report.html").read_text()
    assert "Detector <code>squeeze</code>" in html
    assert "<code>none</code>" not in html and "naive versus adaptive" not in html


def test_surrogate_flag_runs_a_transfer_attack(setup, tmp_path):
    report = _run(
        setup,
        tmp_path,
        "mlp",
        "mlp",
        "--attacks",
        "transfer",
        "--surrogate",
        f"{setup['py']}:wide",
        "--surrogate-weights",
        str(setup["wide"]),
    )
    assert report["attacks"][0]["name"] == "transfer"
    assert report["robust_accuracy"] < report["clean_accuracy"] - 0.2


def test_transfer_without_surrogate_is_bad_input(setup, tmp_path, capsys):
    argv = [
        "evaluate",
        "--model",
        f"{setup['py']}:mlp",
        "--weights",
        str(setup["mlp"]),
        "--data",
        str(setup["data"]),
        "--norm",
        "linf",
        "--eps",
        "0.1",
        "--attacks",
        "transfer",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "needs --surrogate" in capsys.readouterr().err


def test_check_masking_adds_the_full_range_sweep(setup, tmp_path):
    report = _run(setup, tmp_path, "mlp", "mlp", "--attacks", "pgd", "--check-masking")
    sweep = report["masking_sweep"]
    assert sweep[-1]["eps"] == pytest.approx(1.0)
    assert sweep[-1]["robust_accuracy"] <= 0.15


def _comparable(report: dict) -> dict:
    """The report without what legitimately differs between runs: timings and topology."""
    drop_keys = {"seconds", "timestamp", "world_size"}

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in drop_keys}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(report)


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(setup, tmp_path):
    common = [
        "evaluate",
        "--model",
        f"{setup['py']}:mlp",
        "--weights",
        str(setup["mlp"]),
        "--data",
        str(setup["data"]),
        "--norm",
        "linf",
        "--eps",
        "0.05,0.1",
        "--attacks",
        "fgsm,pgd,square",
        "--batch-size",
        "16",
        "--seed",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "adversa", *common, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            "-m",
            "adversa",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["config"]["world_size"] == 2
    assert double.stdout.count("clean accuracy") == 1, "only rank 0 reports"
    assert _comparable(one) == _comparable(two)


def test_evaluate_with_certify_checks_certified_against_robust(setup, tmp_path):
    report = _run(
        setup,
        tmp_path,
        "mlp",
        "mlp",
        "--attacks",
        "pgd",
        "--eps",
        "0.01,0.05",
        "--certify",
        "crown",
    )
    entries = report["certified"]
    assert [e["eps"] for e in entries] == [0.01, 0.05]
    for entry, result in zip(entries, report["results"], strict=True):
        assert entry["certified_accuracy"] <= result["robust_accuracy"]
        assert entry["certified_but_broken"] == 0
    assert entries[0]["certified_accuracy"] > 0.5  # CROWN verifies most points at eps 0.01
    assert not any(w.startswith("BUG") for w in report["warnings"])
