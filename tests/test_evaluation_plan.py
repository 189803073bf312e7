"""`EvaluationPlan`: the one library entry of `adversa evaluate`.

The plan validates its fields on construction, gives the same numbers as the command line
for the same options, and (through the battery) builds each attack once per eps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import adversa.evaluation.attack_list as attack_list
from adversa.cli.main import main
from adversa.data import Dataset, load_data
from adversa.errors import BadInput, UnknownName
from adversa.jobs.evaluate import EvaluationPlan

BASE = {"norm": "linf", "eps": (0.05, 0.1)}


@pytest.mark.parametrize(
    "options, match",
    [
        ({"norm": "l3"}, r"norm must be one of linf, l2, l1"),
        ({"eps": ()}, r"eps must be a non-empty tuple"),
        ({"eps": "0.1"}, r"eps must be a non-empty tuple"),
        ({"eps": (0.1, "a")}, r"eps must hold numbers"),
        ({"bounds": (0.0,)}, r"bounds must be \(lo, hi\)"),
        ({"attacks": "pgd"}, r"attacks must be a tuple of names"),
        ({"steps": 0}, r"steps must be an integer >= 1"),
        ({"eot": 0}, r"eot must be an integer >= 1"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1"),
        ({"seed": 1.5}, r"seed must be an integer"),
        ({"check_masking": 1}, r"check_masking must be True or False"),
        ({"bpda": "zero"}, r"bpda must be one of identity"),
        ({"certify": "lp"}, r"certify must be one of ibp, crown"),
        ({"bpda": "identity", "defense": "squeeze:bits=4"}, r"bpda is implied by defense"),
        ({"detector_fpr": 1.5}, r"detector_fpr must be in \(0, 1\)"),
        ({"detector": "squeeze"}, r"detector needs detector_data"),
        ({"surrogate": torch.nn.Linear(64, 10)}, r"only the 'transfer' attack uses one"),
        ({"defense": "nonsense:x=1"}, r"nonsense"),
    ],
)
def test_plan_validates_its_fields(options, match):
    with pytest.raises(BadInput, match=match):
        EvaluationPlan(**{**BASE, **options})


def test_plan_names_unknown_attacks_and_bad_eps(digits_mlp):
    with pytest.raises(UnknownName, match="pgdd"):
        EvaluationPlan(**BASE, attacks=("fgsm", "pgdd"))
    model, _, _ = digits_mlp
    data = load_data("digits").take(8)
    plan = EvaluationPlan(norm="linf", eps=(0.1, -0.2), attacks=("fgsm",))
    with pytest.raises(BadInput, match=r"eps must be >= 0, got -0\.2"):
        plan.run(model, data)
    with pytest.raises(BadInput, match="Dataset"):
        EvaluationPlan(**BASE).run(model, (torch.zeros(2, 64), torch.zeros(2)))


def _digits_files(tmp_path, digits_mlp, n=60):
    model, x, y = digits_mlp
    np.savez(tmp_path / "digits.npz", x=x[:n].numpy(), y=y[:n].numpy())
    scripted = torch.jit.trace(model.module, x[:2])
    torch.jit.save(scripted, tmp_path / "mlp.pt")
    return tmp_path / "mlp.pt", tmp_path / "digits.npz"


def test_plan_run_matches_the_command_line(digits_mlp, tmp_path):
    model_path, data_path = _digits_files(tmp_path, digits_mlp)
    argv = (
        f"evaluate --model {model_path} --data {data_path} --norm linf --eps 0.05,0.1 "
        f"--attacks fgsm,pgd --steps 5 --seed 3 --batch-size 32 --out {tmp_path / 'cli'}"
    )
    assert main(argv.split()) == 0
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())

    plan = EvaluationPlan(
        norm="linf", eps=(0.05, 0.1), attacks=("fgsm", "pgd"), steps=5, seed=3, batch_size=32
    )
    report = plan.run(digits_mlp[0], load_data(str(data_path)), out=tmp_path / "lib").to_dict()
    assert report["n"] == cli["n"] == 60
    assert report["clean_accuracy"] == pytest.approx(cli["clean_accuracy"])
    assert report["robust_accuracy"] == pytest.approx(cli["robust_accuracy"])
    for ours, theirs in zip(report["results"], cli["results"], strict=True):
        assert ours["eps"] == theirs["eps"]
        assert ours["robust_accuracy"] == pytest.approx(theirs["robust_accuracy"])
        assert [a["config"] for a in ours["attacks"]] == [a["config"] for a in theirs["attacks"]]
    assert [a["config"]["steps"] for a in report["attacks"] if a["name"] == "pgd"] == [5]
    assert (tmp_path / "lib" / "report.json").exists()
    assert (tmp_path / "lib" / "report.html").exists()


def test_eps_sweep_builds_each_attack_once_per_eps(digits_mlp, monkeypatch):
    built: list[tuple[str, float]] = []
    real = attack_list.get_attack

    def counting(name, threat, **options):
        built.append((name, threat.eps))
        return real(name, threat, **options)

    monkeypatch.setattr(attack_list, "get_attack", counting)
    model, x, y = digits_mlp
    data = Dataset(name="digits-flat", x=x[:40], y=y[:40], num_classes=10, kind="tabular")
    plan = EvaluationPlan(norm="linf", eps=(0.02, 0.05, 0.1), attacks=("fgsm", "pgd"), steps=3)
    report = plan.run(model, data)
    assert sorted(built) == sorted(
        (name, eps) for name in ("fgsm", "pgd") for eps in (0.02, 0.05, 0.1)
    )
    assert [entry["eps"] for entry in report.results] == [0.02, 0.05, 0.1]


def test_default_attacks_follow_norm_and_overrides_follow_the_fields(digits_mlp):
    model, _, _ = digits_mlp
    plan = EvaluationPlan(norm="l2", eps=(0.5,), steps=2)
    assert plan.attack_names(model)[:2] == ("fgsm", "pgd")
    assert plan.battery(("pgd", "fgsm"))[0].options == {"steps": 2}
