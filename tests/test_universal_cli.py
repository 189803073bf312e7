"""`adversa universal` in-process through `adversa.cli.main.main`: end to end on the zoo's
mnist-cnn (built-in train/test splits) and on a TorchScript digits MLP with an .npz (a seeded
half split), the reports and perturbation file, and the exit-2 paths.

Measured (seed 0): mnist-cnn, sgd-uap linf 0.2, 1,000 training points, 2 epochs: 78.2% of
500 held-out points fooled, random control 19.6%; digits MLP, uap l2 1.5, 3 passes: 65.7% of
899 held-out points, random control 7.3%.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import digits_split, refused, train_digits_mlp

from adversa.cli.main import main


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    x_train, y_train, x_test, y_test = digits_split()
    root = tmp_path_factory.mktemp("cli-universal")
    paths = {"data": root / "digits.npz", "model": root / "model.pt"}
    x, y = torch.cat([x_train, x_test]), torch.cat([y_train, y_test])
    np.savez(paths["data"], x=x.numpy(), y=y.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(train_digits_mlp(0)), paths["model"])
    return paths


def test_universal_mnist_writes_both_reports(mnist_cnn, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["universal", "--model", "mnist-cnn", "--data", "mnist", "--norm", "linf"]
    argv += ["--eps", "0.2", "--n", "1000", "--n-eval", "500", "--epochs", "2", "--seed", "0"]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "sgd-uap linf eps 0.2: fooling rate" in stdout and "report:" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "sgd-uap" and report["n"] == 500 and report["n_train"] == 1000
    assert report["fooling_rate"] >= 0.68  # measured 0.782
    assert report["fooling_rate"] >= report["baseline"]["fooling_rate"] + 0.45  # control 0.196
    assert report["perturbed_accuracy"] <= report["clean_accuracy"] - 0.6
    assert report["accuracy_drop"] == pytest.approx(
        report["clean_accuracy"] - report["perturbed_accuracy"]
    )
    assert len(report["per_class"]) == 10 and report["passes"] == len(report["history"]) == 2
    cost = report["cost"]
    assert cost["forward"] == 1000 + 2 * 2000 and cost["backward"] == 2 * 1000
    assert report["seed"] == 0 and report["config"]["eps"] == 0.2 and "torch" in report["versions"]
    assert report["warnings"] == []
    v = torch.load(out / "perturbation.pt")
    assert v.shape == (1, 28, 28) and float(v.abs().max()) <= 0.2 + 1e-6
    assert report["perturbation_norm"]["linf"] == pytest.approx(float(v.abs().max()))
    html = (out / "report.html").read_text()
    assert "perturbation (rescaled)" in html and "Rescaled for visibility" in html
    assert len(re.findall(r'<img alt="perturbed: ', html)) == 8  # eight examples
    assert "<th>fooling rate</th><th>random</th>" in html and "http" not in html.split("<body>")[1]


def test_universal_uap_on_a_data_file_splits_it(digits_files, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["universal", "--model", str(digits_files["model"]), "--data"]
    argv += [str(digits_files["data"]), "--norm", "l2", "--eps", "1.5", "--method", "uap"]
    assert main([*argv, "--epochs", "3", "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "uap" and report["norm"] == "l2"
    assert report["n_train"] + report["n"] == 1797 and abs(report["n_train"] - report["n"]) <= 1
    assert report["fooling_rate"] >= 0.5  # measured 0.657
    assert report["fooling_rate"] >= report["baseline"]["fooling_rate"] + 0.4  # control 0.073
    assert report["perturbation_norm"]["l2"] <= 1.5 + 1e-5
    assert (out / "report.html").is_file()


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--eps", "0"], r"--eps must be a finite number > 0, got 0"),
        (["--eps", "1.5"], r"--eps 1\.5 is larger than the bounds allow: an linf perturbation"),
        (["--eps", "0.1,0.2"], r"--eps takes one value, got '0\.1,0\.2'"),
        (["--eps", "abc"], r"--eps: cannot read 'abc' as a number"),
        (["--eps", "0.1", "--norm", "l1"], r"--norm must be one of linf, l2, got 'l1'"),
        (["--eps", "0.1", "--method", "uapp"], r"uapp"),
        (["--eps", "0.1", "--method", "uap", "--transforms", "noise=0.1"], r"--transforms: uap"),
        (["--eps", "0.1", "--transforms", "spin=2"], r"--transforms"),
        (["--eps", "0.1", "--transforms", "noise=0.1"], r"--transforms noise=0.1: .*need images"),
        (["--eps", "0.1", "--n", "0"], r"--n \(--n-points\) must be an integer >= 1, got 0"),
        (["--eps", "0.1", "--method", "uap", "--restarts", "2"], r"--restarts 2: only sgd-uap"),
    ],
)
def test_universal_bad_input_is_one_line_exit_2(digits_files, tmp_path, capsys, extra, pattern):
    argv = ["universal", "--model", str(digits_files["model"]), "--data"]
    argv += [str(digits_files["data"]), "--norm", "linf", *extra, "--out", str(tmp_path / "o")]
    refused(argv, capsys, pattern)
    assert not (tmp_path / "o" / "report.json").exists()


def test_universal_l2_eps_beyond_the_box_is_refused(digits_files, tmp_path, capsys) -> None:
    argv = ["universal", "--model", str(digits_files["model"]), "--data"]
    argv += [str(digits_files["data"]), "--norm", "l2", "--eps", "9", "--out", str(tmp_path)]
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert "--eps 9 is larger than the bounds allow" in line and "cannot exceed 8" in line
