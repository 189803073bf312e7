"""The foundation's headline numbers on real data: the zoo's standard MNIST CNN (trained once per
session) under each white-box attack, and the CLI end to end on built-in data and model."""

from __future__ import annotations

import json
import math

import torch

from adversa import ThreatModel, get_attack
from adversa.cli.main import main


def _robust(result, y) -> float:
    return float((~result.success).float().mean())


def test_pgd_breaks_the_standard_cnn(mnist_cnn):
    model, test = mnist_cnn
    x, y = test.x, test.y
    clean = float((model.predict(x) == y).float().mean())
    pgd = get_attack("pgd", ThreatModel(norm="linf", eps=0.3), steps=40)(model, x, y)
    fgsm = get_attack("fgsm", ThreatModel(norm="linf", eps=0.3))(model, x, y)
    assert clean >= 0.94
    assert _robust(pgd, y) < 0.05  # the bar: below 5% at eps 0.3
    # Iterative is at least as strong as single-step on the same points, per example.
    assert int((fgsm.success & ~pgd.success).sum()) <= 0.01 * y.shape[0]
    assert _robust(pgd, y) <= _robust(fgsm, y)


def test_minimum_norm_attacks_on_the_standard_cnn(mnist_cnn):
    model, test = mnist_cnn
    x, y = test.x[:200], test.y[:200]
    unbounded = ThreatModel(norm="l2", eps=math.inf)
    cw = get_attack("cw", unbounded)(model, x, y)
    deepfool = get_attack("deepfool", unbounded)(model, x, y)
    assert cw.success.float().mean() > 0.95 and deepfool.success.float().mean() > 0.95
    # MNIST's typical minimal L2 perturbations are around 1-2; both land there.
    assert 0.5 < float(cw.distance[cw.success].median()) < 2.5
    assert float(deepfool.distance.median()) < 2 * float(cw.distance.median())
    at_two = get_attack("deepfool", ThreatModel(norm="l2", eps=2.0))(model, x, y)
    assert _robust(at_two, y) < 0.3


def test_targeted_pgd_reaches_targets_on_mnist(mnist_cnn):
    model, test = mnist_cnn
    x, y = test.x[:200], test.y[:200]
    target = (y + 3) % 10
    result = get_attack("pgd", ThreatModel(norm="linf", eps=0.3, targeted=True), steps=60)(
        model, x, target
    )
    assert result.success.float().mean() > 0.9
    assert torch.equal(result.pred[result.success], target[result.success])


def test_cli_on_builtin_data_and_zoo_model(mnist_cnn, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--model",
            "mnist-cnn",
            "--data",
            "mnist",
            "--norm",
            "linf",
            "--eps",
            "0.1,0.3",
            "--attacks",
            "fgsm,pgd",
            "--n",
            "100",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report.json").read_text())
    for key in (
        "clean_accuracy",
        "robust_accuracy",
        "n",
        "attacks",
        "warnings",
        "config",
        "versions",
    ):
        assert key in report
    assert report["n"] == 100 and report["clean_accuracy"] > 0.9
    assert [r["eps"] for r in report["results"]] == [0.1, 0.3]
    assert report["results"][1]["robust_accuracy"] < 0.05
    for row in report["attacks"]:
        assert {"name", "robust_accuracy", "forward_calls", "backward_calls", "seconds"} <= set(row)
    html = (tmp_path / "report.html").read_text()
    assert "<img" in html and "<svg" in html
