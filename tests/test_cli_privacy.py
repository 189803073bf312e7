"""`adversa privacy` and `adversa invert` on a deliberately overfitted digits MLP (120
members, TorchScript), in-process through `adversa.cli.main.main`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from conftest import digits_split
from sklearn.linear_model import LogisticRegression

from adversa.cli.main import main
from adversa.privacy import StackedTraining, train_stacked

N = 120
FAST = ["--shadows", "4", "--shadow-steps", "60", "--shadow-hidden", "32"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    x_train, y_train, x_test, y_test = digits_split()
    root = tmp_path_factory.mktemp("cli-privacy")
    members = (x_train[:N], y_train[:N])
    masks = torch.ones(1, N, dtype=torch.bool)
    net = train_stacked(*members, masks, StackedTraining(hidden=(128,), steps=150), 10)
    paths = {name: root / f"{name}.npz" for name in ("members", "nonmembers", "shadow", "all")}
    np.savez(paths["members"], x=members[0].numpy(), y=members[1].numpy())
    np.savez(paths["nonmembers"], x=x_test[:N].numpy(), y=y_test[:N].numpy())
    np.savez(paths["shadow"], x=x_train[N : 3 * N].numpy(), y=y_train[N : 3 * N].numpy())
    np.savez(paths["all"], x=x_train[:400].numpy(), y=y_train[:400].numpy())
    paths["model"] = root / "model.pt"
    with warnings.catch_warnings():  # torch deprecates TorchScript; users still hand it to us
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net.member(0)), paths["model"])
    paths["sklearn"] = root / "lr.joblib"
    joblib.dump(
        LogisticRegression(max_iter=200).fit(x_train[:300], y_train[:300]), paths["sklearn"]
    )
    return paths


def _known(files: dict[str, Path]) -> list[str]:
    return [
        "--model",
        str(files["model"]),
        "--members",
        str(files["members"]),
        "--nonmembers",
        str(files["nonmembers"]),
    ]


def test_privacy_all_attacks_writes_reports(files, tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["privacy", *_known(files), "--shadow-data", str(files["shadow"]), "--attack", "all"]
    assert main([*argv, *FAST, "--seed", "3", "--out", str(out)]) == 0
    data = json.loads((out / "privacy.json").read_text())
    names = [a["name"] for a in data["attacks"]]
    assert names == ["loss-threshold", "shadow", "lira-online", "lira-offline", "boundary"]
    assert data["config"]["reference_arch"] == "mlp"  # a TorchScript file: arch unknown
    assert data["config"]["boundary_attack"] == "deepfool"  # gradients: deepfool
    assert data["baseline"] == "loss-threshold" and data["seed"] == 3
    assert data["config"]["n_members"] == N and data["config"]["shadow_pool"] == 2 * N
    assert "torch" in data["versions"]
    base = data["attacks"][0]
    print({a["name"]: round(a["auc"], 3) for a in data["attacks"]})
    assert base["auc"] > 0.6  # 120 members, 150 full-batch steps: overfitted
    assert set(base["tpr_at_fpr"]) == {"0.01", "0.001"}
    assert all(0.0 <= a["balanced_accuracy"] <= 1.0 for a in data["attacks"])
    html = (out / "privacy.html").read_text()
    assert "<svg" in html and "(baseline)" in html and "TPR at 0.1% FPR" in html


def test_privacy_default_split_from_data(files, tmp_path) -> None:
    out = tmp_path / "split"
    argv = ["privacy", "--model", str(files["model"]), "--data", str(files["all"])]
    assert main([*argv, "--attack", "threshold", "--n", "50", "--out", str(out)]) == 0
    data = json.loads((out / "privacy.json").read_text())
    assert [a["name"] for a in data["attacks"]] == ["loss-threshold"]
    assert data["attacks"][0]["n_members"] == 50
    assert "assumed to be the training data" in data["membership_source"]


def test_privacy_flags_auc_below_chance_and_unresolvable_fpr(files, tmp_path, capsys) -> None:
    """Swapped membership: the threshold attack's AUC falls below 0.5 and is flagged; 120
    non-members cannot resolve 0.1% FPR, so that TPR prints n/a and JSON flags it."""
    out = tmp_path / "swapped"
    argv = ["privacy", "--model", str(files["model"]), "--attack", "threshold"]
    argv += ["--members", str(files["nonmembers"]), "--nonmembers", str(files["members"])]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    attack = json.loads((out / "privacy.json").read_text())["attacks"][0]
    assert attack["auc"] < 0.5 and "below 0.5" in attack["warnings"][0]
    assert "warning: loss-threshold: AUC" in printed and "below 0.5" in printed
    assert isinstance(attack["tpr_at_fpr"]["0.001"], float)  # the value stays, flagged
    assert attack["tpr_at_fpr_resolvable"] == {"0.01": True, "0.001": False}
    assert attack["min_fpr"] == pytest.approx(1 / N)
    assert "TPR@0.1%FPR n/a (needs >= 1,000 non-members)" in printed
    assert "TPR@1%FPR" in printed and "TPR@1%FPR n/a" not in printed
    assert f"smallest FPR they resolve is 1/{N} = 0.833%" in printed
    html = (out / "privacy.html").read_text()
    assert "n/a (needs &gt;= 1,000 non-members)" in html and "below 0.5" in html


@pytest.mark.parametrize("fpr", ["0", "1", "1.5", "-0.01,0.01", "nan"])
def test_fpr_outside_unit_interval_exits_2(files, tmp_path, capsys, fpr) -> None:
    argv = ["privacy", *_known(files), "--attack", "threshold", f"--fpr={fpr}"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "must lie strictly inside (0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_too_few_shadows_for_lira_online_exits_2(files, tmp_path, capsys) -> None:
    argv = ["privacy", *_known(files), "--attack", "lira", "--shadows", "2"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "num_references must be >= 4 for LiRA online" in err
    assert not (tmp_path / "o").exists()


def test_privacy_bad_input(files, tmp_path, capsys) -> None:
    out = str(tmp_path / "o")
    model = ["--model", str(files["model"])]
    assert main(["privacy", *model, "--members", str(files["members"]), "--out", out]) == 2
    assert "--members and --nonmembers go together" in capsys.readouterr().err
    assert main(["privacy", *_known(files), "--attack", "rmia", "--out", out]) == 2
    assert "attack must be one or more of" in capsys.readouterr().err
    assert main(["privacy", *model, "--out", out]) == 2
    assert "--data is required" in capsys.readouterr().err
    argv = ["privacy", *_known(files), "--attack", "shadow"]  # known members: no pool left
    assert main([*argv, *FAST, "--out", out]) == 2
    assert "shadow pool" in capsys.readouterr().err
    argv = ["privacy", *_known(files), "--attack", "lira", "--reference-arch", "same"]
    assert main([*argv, "--out", out]) == 2
    assert "--reference-arch same needs the target's architecture" in capsys.readouterr().err
    argv = ["privacy", *_known(files), "--attack", "boundary", "--boundary-queries", "0"]
    assert main([*argv, "--out", out]) == 2
    assert "--boundary-queries" in capsys.readouterr().err


def test_privacy_same_architecture_references(tmp_path, capsys) -> None:
    """An `adversa train` directory names its architecture and recipe: references default
    to them (here the zoo's "mlp" 64-64-32-10 on the first 100 digits, 30 epochs)."""
    run = tmp_path / "run"
    train = [
        "train", "--data", "digits", "--arch", "mlp", "--epochs", "30", "--batch-size", "10",
        "--lr", "5e-3", "--train-size", "100", "--final-eval", "none", "--out", str(run),
    ]  # fmt: skip
    assert main(train) == 0, capsys.readouterr().err
    out = tmp_path / "mia"
    argv = ["privacy", "--model", str(run), "--attack", "lira,boundary", "--shadows", "4"]
    assert main([*argv, "--n", "100", "--fixed-variance", "--out", str(out)]) == 0
    data = json.loads((out / "privacy.json").read_text())
    config = data["config"]
    print({a["name"]: round(a["auc"], 3) for a in data["attacks"]})
    assert config["reference_arch"] == "same"
    assert config["shadow_training"]["arch"] == "mlp"
    recipe = config["shadow_training"]
    assert recipe["epochs"] == 30 and recipe["batch_size"] == 10 and recipe["lr"] == 5e-3
    assert config["n_members"] == 100
    assert [a["name"] for a in data["attacks"]] == [
        "loss-threshold",
        "lira-online-fixed",
        "lira-offline-fixed",
        "boundary",
    ]
    assert "the model's recipe" in data["membership_source"] and data["warnings"] == []
    aucs = {a["name"]: a["auc"] for a in data["attacks"]}
    # measured: LiRA offline 0.683, online 0.650 with 4 same-recipe references, where the
    # loss threshold gets 0.518: per-example calibration finds what a global threshold misses
    assert aucs["lira-offline-fixed"] > 0.6 and aucs["lira-online-fixed"] > 0.58
    assert aucs["lira-offline-fixed"] > aucs["loss-threshold"] + 0.08


def test_invert_writes_reports(files, tmp_path) -> None:
    out = tmp_path / "inv"
    argv = ["invert", "--model", str(files["model"]), "--data", str(files["all"])]
    opts = ["--classes", "0,3,7", "--init", "zeros,mean", "--steps", "150", "--seed", "1"]
    assert main([*argv, *opts, "--out", str(out)]) == 0
    data = json.loads((out / "inversion.json").read_text())
    assert data["classes"] == [0, 3, 7] and data["inits"] == ["zeros", "mean"]
    m = data["measures"]
    print(m)
    assert m["target_rate"] == 1.0 and m["target_confidence"] > 0.9
    assert m["independent_rate"] > 1 / 3  # chance is 0.1; measured 1.0 (6 of 6)
    assert data["backward_calls"] > 0 and data["config"]["seed"] == 1
    html = (out / "inversion.html").read_text()
    assert html.count("data:image/png") == 3 * (1 + 2)  # class mean + 2 inits per class


def test_invert_bad_input(files, tmp_path, capsys) -> None:
    out = str(tmp_path / "o")
    base = ["invert", "--data", str(files["all"]), "--out", out]
    sk = ["--model", f"sklearn:{files['sklearn']}", "--trust-model-file"]
    assert main([*base, *sk]) == 2
    assert "MIFace needs gradient access" in capsys.readouterr().err
    model = ["--model", str(files["model"])]
    assert main([*base, *model, "--classes", "3,12"]) == 2
    assert "--classes must lie in [0, 10)" in capsys.readouterr().err
    assert main([*base, *model, "--init", "noise"]) == 2
    assert "inits must be" in capsys.readouterr().err
    assert main([*base, *model, "--tv", "-1"]) == 2
    assert "--tv must be >= 0" in capsys.readouterr().err


def test_reference_recipe_warns_about_a_defense_it_does_not_replay() -> None:
    """A PGD-trained target's references take its architecture and optimiser, not its
    adversarial training; the report says so."""
    from adversa.defenses import DEFENSES
    from adversa.jobs.privacy import MembershipPlan, TrainingRecipe
    from adversa.privacy import ArchTraining
    from adversa.train.config import TrainConfig

    config = TrainConfig(
        data="mnist", arch="small-cnn", defense=DEFENSES.get("pgd-at", eps=0.3), epochs=7
    )
    recipe = TrainingRecipe("mnist", None, config)
    plan = MembershipPlan(attacks="threshold", reference_epochs=2, shadow_hidden=8, shadow_steps=5)
    training, warnings = plan.reference_training(recipe)
    assert isinstance(training, ArchTraining) and training.arch == "small-cnn"
    assert training.epochs == 2 and training.lr == config.lr
    assert len(warnings) == 1 and "without its defense (pgd-at)" in warnings[0]
    plan = MembershipPlan(attacks="threshold", reference_arch="mlp", shadow_hidden=8)
    training, warnings = plan.reference_training(recipe)
    assert not isinstance(training, ArchTraining) and warnings == []
