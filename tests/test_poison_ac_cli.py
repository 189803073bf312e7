"""Activation clustering through the documented pipeline (issue 15, item 1): `adversa poison`
(BadNets and blend, 5% and 10%) -> `adversa train --arch small-cnn` -> `adversa inspect-data
--detector activation-clustering`, with and without `--rate`, on 2,000 MNIST images and a
4-epoch model (the docs' pipeline, shortened)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adversa.cli.main import main
from adversa.data import load_data


@pytest.fixture(scope="module")
def mnist_2k(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mnist2k.npz"
    data = load_data("mnist", split="train").take(2000)
    np.savez(path, x=data.x.numpy(), y=data.y.numpy())
    return path


@pytest.fixture(scope="module", params=["badnets", "blend"])
def trained(request, mnist_2k, tmp_path_factory):
    """Per attack, both rates: {rate: (poisoned.npz, run dir)}; target class 3, seed 3."""
    runs = {}
    for rate in ("0.05", "0.1"):
        root = tmp_path_factory.mktemp(f"{request.param}_{rate}")
        poison = ["poison", "--data", str(mnist_2k), "--attack", request.param, "--rate", rate]
        assert main([*poison, "--target-class", "3", "--seed", "3", "--out", str(root / "bd")]) == 0
        train = ["train", "--data", str(root / "bd" / "poisoned.npz"), "--test-data", "mnist"]
        options = ["--arch", "small-cnn", "--epochs", "4", "--seed", "3", "--final-eval", "none"]
        assert main([*train, *options, "--out", str(root / "run")]) == 0
        runs[rate] = (root / "bd" / "poisoned.npz", root / "run")
    return runs


@pytest.mark.parametrize("rate", ["0.05", "0.1"])
def test_activation_clustering_finds_the_poisons(trained, rate, tmp_path, capsys):
    data, run = trained[rate]
    args = ["inspect-data", "--data", str(data), "--model", str(run)]
    metrics = {}
    for extra in ([], ["--rate", rate]):
        out = tmp_path / f"inspect{len(extra)}"
        code = main([*args, "--detector", "activation-clustering", *extra, "--out", str(out)])
        assert code == 0
        report = json.loads((out / "inspect.json").read_text())
        metrics[bool(extra)] = m = report["metrics"]
        # measured (seed 3, 4 epochs, 2,000 images): recall 1.00, precision 0.99-1.00, AUC
        # 1.00 in all four cases; 3 seeds x 4 cases on 4,000 images likewise (docs)
        assert m["recall"] >= 0.8 and m["precision"] >= 0.8, (rate, extra, m)
        assert m["auc"] >= 0.95, m
        poisoned = [c for c in report["classes"] if c["poisoned"]]
        assert [c["class"] for c in poisoned] == [3], report["classes"]
        clean = [c["separation_ratio"] for c in report["classes"] if not c["poisoned"]]
        assert poisoned[0]["separation_ratio"] >= 2.0 > max(clean)
    assert metrics[True] == metrics[False]  # the poisons are found with or without the prior
    printed = capsys.readouterr().out
    assert "activation-clustering: flagged" in printed and "recall" in printed
