"""`adversa extract` in-process through `adversa.cli.main.main`, on a TorchScript digits MLP
with a digits pool: the reports, their numbers and the exit-2 paths."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import digits_split, train_digits_mlp

from adversa.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    x_train, y_train, x_test, y_test = digits_split()
    root = tmp_path_factory.mktemp("cli-extract")
    paths = {name: root / f"{name}.npz" for name in ("pool", "test", "own")}
    np.savez(paths["pool"], x=x_train[:700].numpy(), y=y_train[:700].numpy())
    np.savez(paths["own"], x=x_train[700:].numpy(), y=y_train[700:].numpy())
    np.savez(paths["test"], x=x_test.numpy(), y=y_test.numpy())
    paths["model"] = root / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(train_digits_mlp(0)), paths["model"])
    return paths


def _argv(files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "extract",
        "--model",
        str(files["model"]),
        "--data",
        str(files["pool"]),
        "--test-data",
        str(files["test"]),
        *extra,
    ]


def test_extract_writes_reports_with_curves_defense_and_transfer(files, tmp_path) -> None:
    out = tmp_path / "out"
    argv = _argv(files, "--method", "copycat,knockoff", "--queries", "400", "--curve", "2")
    argv += ["--defense", "round:1", "--surrogate-data", str(files["own"]), "--transfer-n", "60"]
    assert main([*argv, "--seed", "1", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["queries"] == 400 and report["backward_calls"] == 0
    assert report["fidelity"] >= 0.7 and report["best_method"] in ("copycat", "knockoff")
    for row in report["methods"]:
        assert set(row["curves"]) == {"none", "round:1"}
        assert [p["queries"] for p in row["curves"]["round:1"]] == [200, 400]
        assert row["fidelity_drop"] == pytest.approx(row["fidelity"] - row["defended_fidelity"])
    defense = report["defense"]
    assert defense["defense"] == "round:1" and 0 < defense["probability_change_mean"] < 0.25
    transfer = report["transfer"]
    assert transfer["eps"] == 0.3 and transfer["n"] == 60
    assert transfer["robust_accuracy"] < transfer["clean_accuracy"]
    assert 0 <= transfer["independent_robust_accuracy"] <= 1
    box = transfer["blackbox"]  # square with the best copy's 400 queries over 60 points
    assert box["attack"] == "square" and box["total_budget"] == 400
    assert box["queries_per_point"] == 400 // 60 and 0 < box["queries"] <= 400
    assert 0 <= box["robust_accuracy"] <= transfer["clean_accuracy"]
    html = (out / "report.html").read_text()
    assert "fidelity versus queries" in html and "knockoff + round:1" in html
    assert "same number of queries" in html
    assert report["warnings"] == []


def test_extract_poison_defense_and_adaptive_knockoff(files, tmp_path, capsys) -> None:
    """Two defenses in one run: MAD-argmax keeps every returned label and lowers both
    Knockoff variants' fidelity by >= 5 points; the pool file's labels are the adaptive
    strategy's groups; simba replaces square at the same budget."""
    out = tmp_path / "out"
    argv = _argv(files, "--method", "knockoff,knockoff-adaptive", "--queries", "500")
    argv += ["--curve", "1", "--defense", "poison:eps=1,argmax=1", "--defense", "top1"]
    argv += ["--surrogate-data", "none", "--transfer-n", "50", "--blackbox-attack", "simba"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    poison, top1 = report["defenses"]
    assert report["defense"] == poison and top1["defense"] == "top1"
    assert poison["defense"] == "poison:eps=1,argmax=1" and poison["labels_changed"] == 0
    assert 0.3 <= poison["probability_change_mean"] <= 0.5
    for row in report["methods"]:
        assert set(row["curves"]) == {"none", "poison:eps=1,argmax=1", "top1"}
        assert row["queries"] == 500 and row["fidelity_drop"] >= 0.05
        assert row["defended"]["poison:eps=1,argmax=1"]["fidelity_drop"] == row["fidelity_drop"]
    html = (out / "report.html").read_text()
    assert "knockoff-adaptive + top1" in html and "fidelity with poison:eps=1,argmax=1" in html
    adaptive = report["methods"][1]["curves"]["none"][-1]
    assert adaptive["groups"] == 10 and sum(adaptive["group_queries"]) == 500
    assert report["transfer"]["blackbox"]["attack"] == "simba"
    assert "simba at the same 500 queries" in capsys.readouterr().out


def test_extract_equivalent_reports_weight_error_and_small_pool_warning(files, tmp_path) -> None:
    out = tmp_path / "out"
    argv = _argv(files, "--method", "equivalent,copycat", "--queries", "30000", "--curve", "1")
    assert main([*argv, "--surrogate-data", "none", "--transfer-n", "30", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    equivalent, copycat = report["methods"]
    assert equivalent["fidelity"] >= 0.95 and equivalent["queries"] <= 30000
    assert equivalent["weight_error"]["weight_error_mean"] <= 0.05
    assert copycat["queries"] == 700  # the whole pool, each input once
    assert "independent_robust_accuracy" not in report["transfer"]
    assert report["warnings"] and "700 inputs, fewer than --queries 30000" in report["warnings"][0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--queries", "0"], "--queries must be >= 1, got 0"),
        (["--method", "copycta"], "copycat"),
        (["--data", "digits-28"], "--data: pool inputs of shape (1, 28, 28) do not fit"),
        (["--defense", "round:x"], "--defense 'round:x'"),
        (["--method", "jbda", "--eps", "2"], "--eps must be in [0, 1], got 2.0"),
        (["--defense", "poison"], "--defense 'poison': expected poison:eps=E"),
        (["--defense", "poison:eps=3"], "--defense poison:eps=3: eps must be in (0, 2]"),
        (["--blackbox-attack", "pgd"], "--blackbox-attack 'pgd': expected a score-based"),
    ],
)
def test_extract_bad_input_exits_2_with_one_line(files, tmp_path, capsys, extra, message) -> None:
    assert main([*_argv(files, *extra), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adversa: error:") and len(err.splitlines()) == 1
    assert message in err
    assert not (tmp_path / "o" / "report.json").exists()
