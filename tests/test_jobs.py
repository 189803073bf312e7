"""The assembly layer (`adversa.jobs`) called directly: each plan refuses bad fields with a
`BadInput` naming them, and a plan run on tiny data gives the numbers the command gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from adversa.cli.main import main
from adversa.data import load_data
from adversa.errors import AdversaError, BadInput
from adversa.jobs.certify import CertifyPlan
from adversa.jobs.inversion import InversionPlan
from adversa.jobs.poison import InspectPlan, PoisonPlan
from adversa.jobs.privacy import MembershipPlan, candidates
from adversa.jobs.privacy_defense import PrivacyDefensePlan
from adversa.jobs.text import TextAttackPlan
from adversa.load import load_model

NET = """
from torch import nn


def make():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """64 digits as an .npz and a small MLP as file.py:factory plus its weights."""
    root = tmp_path_factory.mktemp("jobs")
    digits = load_digits()
    x = (digits.data[:64] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    np.savez(root / "data.npz", x=x, y=digits.target[:64].astype(np.int64))
    (root / "net.py").write_text(NET)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    torch.save(net.state_dict(), root / "weights.pt")
    return {
        "data": str(root / "data.npz"),
        "model": f"{root / 'net.py'}:make",
        "weights": str(root / "weights.pt"),
    }


@pytest.mark.parametrize(
    "fields,pattern",
    [
        ({"method": "lp", "eps": (0.1,)}, r"method must be one of"),
        ({"method": "smoothing"}, r"method smoothing needs sigma"),
        ({"method": "crown"}, r"method crown needs eps"),
        ({"method": "ibp", "eps": (0.1,), "sigma": 0.25}, r"sigma 0\.25: applies to"),
        ({"method": "smoothing", "sigma": 0.25, "norm": "linf"}, r"use norm l2"),
        ({"method": "smoothing", "sigma": 0.0}, r"sigma must be > 0"),
        ({"method": "ibp", "eps": "0.1"}, r"eps must be a tuple"),
        ({"method": "ibp", "eps": (0.1,), "eot": 0}, r"eot must be an integer >= 1"),
        ({"method": "ibp", "eps": (0.1,), "batch_size": 1.5}, r"batch_size must be an integer"),
    ],
)
def test_certify_plan_refuses_bad_fields(fields: dict, pattern: str) -> None:
    with pytest.raises(BadInput, match=pattern):
        CertifyPlan(**fields)


def test_certify_plan_gives_the_command_s_numbers(files: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["certify", "--model", files["model"], "--weights", files["weights"]]
    argv += ["--data", files["data"], "--method", "crown", "--eps", "0.01,0.03"]
    argv += ["--n-points", "32", "--out", str(out)]
    assert main(argv) == 0
    written = json.loads((out / "certify.json").read_text())
    plan = CertifyPlan(method="crown", eps=(0.01, 0.03))
    model = load_model(files["model"], weights=files["weights"], bounds=(0.0, 1.0))
    report = plan.run(model, load_data(files["data"], split="test").take(32))
    assert report["clean_accuracy"] == written["clean_accuracy"]
    assert [r["certified_accuracy"] for r in report["results"]] == [
        r["certified_accuracy"] for r in written["results"]
    ]
    assert report["config"]["eps"] == [0.01, 0.03] and report["config"]["n"] == 32


def test_poison_plan_refuses_bad_options() -> None:
    with pytest.raises(AdversaError, match="badnet"):
        PoisonPlan(attack="badnet", rate=0.1)
    with pytest.raises(BadInput, match=r"rate must be in \(0, 1\), got 0"):
        PoisonPlan(attack="badnets", rate=0, target_class=0)
    with pytest.raises(BadInput, match="has no option alpha"):
        PoisonPlan(attack="badnets", rate=0.1, target_class=0, alpha=0.5)
    with pytest.raises(BadInput, match="retrain_epochs must be an integer >= 1"):
        InspectPlan(retrain_epochs=0)
    with pytest.raises(AdversaError, match="spectra"):
        InspectPlan(detector="spectra")


def test_poison_plan_writes_what_the_command_writes(files: dict[str, str], tmp_path: Path) -> None:
    argv = ["poison", "--data", files["data"], "--attack", "badnets", "--rate", "0.1"]
    assert (
        main([*argv, "--target-class", "0", "--patch-size", "2", "--out", str(tmp_path / "a")]) == 0
    )
    plan = PoisonPlan(
        attack="badnets",
        rate=0.1,
        target_class=0,
        patch_size=2,
        provenance={"data": files["data"], "label_column": None},
    )
    run = plan.run(load_data(files["data"], split="train"))
    run.write(tmp_path / "b")
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab"]
    assert manifests[0] == manifests[1]
    arrays = [np.load(tmp_path / d / "poisoned.npz") for d in "ab"]
    for key in ("x", "y", "poisoned_idx"):
        np.testing.assert_array_equal(arrays[0][key], arrays[1][key])


def test_inspect_plan_scores_the_poisoned_set(files: dict[str, str], tmp_path: Path) -> None:
    run = PoisonPlan(attack="badnets", rate=0.1, target_class=0, patch_size=2).run(
        load_data(files["data"], split="train")
    )
    run.write(tmp_path)
    source = str(tmp_path / "poisoned.npz")
    model = load_model(files["model"], weights=files["weights"], bounds=(0.0, 1.0))
    report = InspectPlan(detector="spectral", rate=0.1).run(
        model, load_data(source, split="train"), source
    )
    assert len(report["scores"]) == 64 and 0.0 <= report["metrics"]["auc"] <= 1.0


def test_membership_and_inversion_plans_refuse_bad_fields(files: dict[str, str]) -> None:
    with pytest.raises(BadInput, match="liraa"):
        MembershipPlan(attacks="liraa")
    with pytest.raises(BadInput, match=r"got 0"):
        MembershipPlan(attacks="threshold", fprs=(0.0,))
    with pytest.raises(BadInput, match=r"must be >= 4 .*got 1"):
        MembershipPlan(attacks="lira", shadows=1)
    with pytest.raises(BadInput, match="--reference-arch same needs the target's"):
        MembershipPlan(attacks="threshold", reference_arch="same").reference_training(None)
    with pytest.raises(BadInput, match="--members and --nonmembers go together"):
        candidates(files["model"], files["data"], members=files["data"])
    with pytest.raises(BadInput, match="inits must be"):
        InversionPlan(inits=("noise",))
    with pytest.raises(BadInput, match=r"classes must lie in \[0, 10\)"):
        InversionPlan(classes=(12,)).class_tensor(10)


def test_membership_plan_gives_the_command_s_numbers(files: dict[str, str], tmp_path: Path) -> None:
    argv = ["privacy", "--model", files["model"], "--weights", files["weights"]]
    argv += ["--data", files["data"], "--attack", "threshold", "--n", "16"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "privacy.json").read_text())
    parts = candidates(files["model"], files["data"], n=16)
    model = load_model(files["model"], weights=files["weights"], bounds=(0.0, 1.0))
    report = MembershipPlan(attacks="threshold").run(model, parts)
    assert [a["auc"] for a in report["attacks"]] == [a["auc"] for a in written["attacks"]]
    assert report["membership_source"] == written["membership_source"]


def test_privacy_defense_and_text_plans_refuse_bad_fields() -> None:
    with pytest.raises(BadInput, match=r"--defenses: unknown \['nope'\]"):
        PrivacyDefensePlan(defenses=("nope",))
    with pytest.raises(BadInput, match="members must be an integer >= 1"):
        PrivacyDefensePlan(members=0)
    with pytest.raises(AdversaError, match="pwwz"):
        TextAttackPlan(attacks=("pwwz",))
    with pytest.raises(BadInput, match="n must be an integer >= 1"):
        TextAttackPlan(n=0)
    with pytest.raises(BadInput, match="augment must be an integer >= 1"):
        TextAttackPlan(augment=0)
