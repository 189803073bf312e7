"""`adversa evaluate --constraints`: tabular constraints on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adversa.cli.main import main


@pytest.fixture(scope="module")
def fraud_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fraud") / "model"
    args = ["train", "--data", "fraud", "--arch", "mlp", "--epochs", "60", "--lr", "3e-3", "--out"]
    code = main([*args, str(out)])
    assert code == 0
    return out


def _evaluate(model: Path, out: Path, *extra: str) -> dict:
    args = [
        "--data",
        "fraud",
        "--norm",
        "linf",
        "--eps",
        "0.05",
        "--attacks",
        "pgd,categorical-search",
    ]
    code = main(["evaluate", "--model", str(model), *args, "--out", str(out), *extra])
    assert code == 0
    return json.loads((out / "report.json").read_text())


def test_constraints_from_the_data_set_bind_every_attack(fraud_model: Path, tmp_path: Path):
    plain = _evaluate(fraud_model, tmp_path / "plain")
    constrained = _evaluate(fraud_model, tmp_path / "constrained", "--constraints", "data")
    assert constrained["config"]["constraints"] == "data"
    pgd_plain, _ = plain["attacks"]
    pgd_constrained, search = constrained["attacks"]
    # The constraints take moves away from PGD; the category search wins them back and more.
    assert pgd_constrained["robust_accuracy"] >= pgd_plain["robust_accuracy"]
    assert search["robust_accuracy"] <= pgd_constrained["robust_accuracy"] - 0.03
    changed = [c for entry in constrained["feature_changes"] for c in entry["changes"]]
    assert changed, "the report lists the features each fooled example changed"
    for change in changed:
        assert change["feature"] != "account_age_days"  # immutable
        if change["feature"] == "tx_last_24h":  # integer, may only increase
            assert change["delta"] > 0
            assert abs(change["after"] - round(change["after"])) < 1e-4


def test_constraints_bad_input_exits_2(fraud_model: Path, tmp_path: Path, capsys):
    spec = tmp_path / "c.json"
    spec.write_text(json.dumps({"immutable": ["amount"], "monotone": ["hour"]}))
    base = ["evaluate", "--model", str(fraud_model), "--data", "fraud", "--norm", "linf"]
    base += ["--eps", "0.05", "--attacks", "pgd", "--out", str(tmp_path / "o")]
    assert main([*base, "--constraints", str(spec)]) == 2
    assert "unknown key(s) ['monotone']" in capsys.readouterr().err
    spec.write_text(json.dumps({"immutable": ["no_such_feature"]}))
    assert main([*base, "--constraints", str(spec)]) == 2
    assert "no feature 'no_such_feature'" in capsys.readouterr().err
    assert main([*base, "--constraints", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
