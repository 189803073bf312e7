"""Imbalanced data through the command line (issue 15, item 5): a fraud model that catches
few frauds must not read as accurate or robust.

`adversa train` on the built-in fraud set (5 % fraud) warns that training collapsed to the
base rate, and `--class-balance sample` catches several times more frauds; `adversa
evaluate` reports recall and precision per class, warns, and counts the frauds that get
through (`--evade-class fraud`: only the fraud rows are attacked).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adversa.cli.main import main
from adversa.data import load_data
from adversa.errors import BadInput
from adversa.jobs.evaluate import EvaluationPlan
from adversa.jobs.text import _with_classes
from adversa.text.base import TextAttackResult

TRAIN = ["train", "--data", "fraud", "--arch", "mlp", "--epochs", "30", "--lr", "3e-3"]
ATTACK = ["--data", "fraud", "--norm", "linf", "--eps", "0.05", "--constraints", "data"]


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """The fraud MLP trained for 30 epochs without and with class-balanced sampling:
    (run directory, what `adversa train` printed)."""
    root = tmp_path_factory.mktemp("imbalanced")
    found = {}
    for balance in ("none", "sample"):
        out = root / balance
        printed = _run([*TRAIN, "--class-balance", balance, "--out", str(out)])
        found[balance] = (out, printed)
    return found


def _card(run: Path) -> dict:
    return json.loads((run / "card.json").read_text())


def _fraud(metrics: list[dict]) -> dict:
    (entry,) = [m for m in metrics if m["name"] == "fraud"]
    return entry


def test_train_warns_of_a_collapse_and_class_balance_catches_more_frauds(runs):
    plain, sampled = _card(runs["none"][0]), _card(runs["sample"][0])
    for card in (plain, sampled):
        metrics = card["evaluation"]["class_metrics"]
        assert sum(m["support"] for m in metrics) == card["n_test"]
        correct = sum(m["correct"] for m in metrics) / card["n_test"]
        assert correct == pytest.approx(card["evaluation"]["clean_accuracy"], abs=1e-6)
    assert any(w.startswith("training collapsed: ") for w in plain["warnings"])
    assert any("predicts 'legit' for" in w for w in plain["warnings"])
    assert "warning: training collapsed: " in runs["none"][1]
    assert "fraud recall" in runs["none"][1]
    assert sampled["hyperparameters"]["class_balance"] == "sample"
    assert sampled["config"]["class_balance"] == "sample"
    assert not any(w.startswith("training collapsed") for w in sampled["warnings"])
    caught, caught_balanced = (
        _fraud(plain["evaluation"]["class_metrics"]),
        _fraud(sampled["evaluation"]["class_metrics"]),
    )
    # The plain model is the base rate in disguise; balancing trades precision for recall.
    assert caught["recall"] < 0.25
    assert caught_balanced["recall"] >= caught["recall"] + 0.3
    assert caught_balanced["correct"] >= 3 * caught["correct"]


def test_evaluate_counts_the_frauds_that_get_through(runs, tmp_path: Path):
    model = runs["none"][0]
    test = load_data("fraud", split="test")
    n_fraud = int((test.y == 1).sum())
    out = tmp_path / "evade"
    argv = ["evaluate", "--model", str(model), *ATTACK, "--attacks", "pgd,categorical-search"]
    printed = _run([*argv, "--evade-class", "fraud", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    evaded = report["evasion"]
    assert report["n"] == n_fraud and report["config"]["evade_class"] == 1
    assert report["config"]["n_all"] == len(test)
    # caught frauds are the card's; the ones still robust are exactly those still caught
    assert evaded["caught"] == _fraud(_card(model)["evaluation"]["class_metrics"])["correct"]
    assert evaded["caught"] == round(report["clean_accuracy"] * n_fraud)
    assert evaded["still_caught"] == round(report["robust_accuracy"] * n_fraud)
    assert evaded["evaded"] + evaded["still_caught"] == evaded["caught"]
    assert evaded["missed"] == n_fraud - evaded["caught"]
    legit, fraud = report["class_metrics"]
    assert legit["support"] + fraud["support"] == len(test)  # clean metrics over all rows
    assert legit["robust_recall"] == legit["recall"]  # legitimate rows are not attacked
    assert fraud["robust_recall"] == pytest.approx(evaded["still_caught"] / n_fraud)
    assert any("no better than always predicting 'legit'" in w for w in report["warnings"])
    assert "positives that evade (fraud) at eps=0.05: " in printed
    assert f"(the fraud rows only, of {len(test)})" in printed
    html = (out / "report.html").read_text()
    assert "fraud rows that get through" in html and "<h2>Per class</h2>" in html
    assert "<th>forward calls (incl. queries)</th>" in html
    # Without the flag the fraud set still reports its frauds, over the attack on all rows.
    full = tmp_path / "all"
    _run(["evaluate", "--model", str(model), *ATTACK, "--attacks", "pgd", "--out", str(full)])
    everything = json.loads((full / "report.json").read_text())
    assert everything["n"] == len(test) and "evade_class" not in everything["config"]
    assert everything["evasion"]["caught"] == evaded["caught"]
    assert everything["results"][0]["evasion"] == everything["evasion"]


def test_evade_class_bad_input_exits_2_naming_the_flag(runs, tmp_path: Path, capsys):
    base = ["evaluate", "--model", str(runs["none"][0]), *ATTACK, "--attacks", "pgd"]
    base += ["--out", str(tmp_path / "o")]
    assert main([*base, "--evade-class", "frod"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--evade-class 'frod': expected a class index 0-1 or a class name (legit, fraud)" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert main([*base, "--evade-class", "2"]) == 2
    assert "--evade-class 2: expected a class index 0-1" in capsys.readouterr().err
    test = load_data("fraud", split="test")
    first = int((test.y == 1).nonzero()[0])  # the first rows before it hold no fraud
    assert main([*base, "--evade-class", "fraud", "--n", str(first)]) == 2
    assert f"none of the {first} evaluated rows is of that class" in capsys.readouterr().err
    assert main([*TRAIN, "--class-balance", "oversample", "--out", str(tmp_path / "t")]) == 2
    assert "--class-balance: invalid choice: 'oversample'" in capsys.readouterr().err
    with pytest.raises(BadInput, match="evade_class must be a class index, a class name"):
        EvaluationPlan(norm="linf", eps=(0.1,), evade_class=1.5)  # type: ignore[arg-type]


LAUNCHED = """
import sys
import torch.distributed as dist
from adversa.cli.main import main

dist.init_process_group("gloo")
code = main(sys.argv[1:])
dist.destroy_process_group()
sys.exit(code)
"""


def test_class_balanced_sampling_trains_the_same_weights_under_torchrun(tmp_path: Path):
    """Every rank draws the same balanced order: 2 gloo processes train what one does, with
    a defense that draws per batch (PGD-AT's random starts)."""
    argv = ["train", "--data", "fraud", "--arch", "mlp", "--train-size", "300", "--epochs", "2"]
    argv += ["--batch-size", "64", "--class-balance", "sample", "--defense", "pgd-at"]
    argv += ["--eps", "0.05", "--steps", "2", "--final-eval", "none", "--seed", "1"]
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    done = subprocess.run(
        [*launch, str(script), *argv, "--out", str(two)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path / "one"
    _run([*argv, "--out", str(one)])
    assert _card(two)["world_size"] == 2
    a = torch.load(one / "model.pt", weights_only=True)
    b = torch.load(two / "model.pt", weights_only=True)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    plain = tmp_path / "plain"
    _run([*[v if v != "sample" else "none" for v in argv], "--out", str(plain)])
    c = torch.load(plain / "model.pt", weights_only=True)
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-3  # the order did change


def test_certify_reports_recall_per_class_and_warns(runs, tmp_path: Path):
    model, out = runs["none"][0], tmp_path / "crown"
    argv = ["certify", "--model", str(model), "--data", "fraud", "--method", "crown"]
    printed = _run([*argv, "--eps", "0.005", "--n-points", "400", "--out", str(out)])
    report = json.loads((out / "certify.json").read_text())
    legit, fraud = report["class_metrics"]
    assert legit["support"] + fraud["support"] == report["n"] == 400
    assert (legit["correct"] + fraud["correct"]) / 400 == pytest.approx(report["clean_accuracy"])
    by_class = report["results"][0]["certified_by_class"]
    assert sum(c["certified"] for c in by_class) == report["results"][0]["n_certified"]
    assert by_class[1]["certified"] <= fraud["correct"]  # certified points are correct ones
    assert any("no better than always predicting 'legit'" in w for w in report["warnings"])
    assert "warning: the model is no better than always predicting 'legit'" in printed


def test_text_report_gets_recall_per_class_and_warnings():
    labels = torch.tensor([0] * 18 + [1] * 2)
    clean = torch.zeros(20, dtype=torch.long)  # a filter that lets everything through
    success = torch.zeros(20, dtype=torch.bool)
    success[:3] = True
    fields = {"texts": ["t"] * 20, "adv_texts": ["t"] * 20, "changes": [[]] * 20}
    result = TextAttackResult(
        name="pwws",
        config={},
        labels=labels,
        clean_pred=clean,
        adv_pred=1 - clean,
        attacked=clean == labels,
        success=success,
        similarity=torch.ones(20),
        words_changed=torch.zeros(20),
        queries=torch.ones(20),
        seconds=0.0,
        **fields,
    )
    report = _with_classes({"attacks": [{"name": "pwws"}]}, [result], ("ham", "spam"))
    ham, spam = report["class_metrics"]
    assert (ham["recall"], spam["recall"], spam["precision"]) == (1.0, 0.0, None)
    after = report["attacks"][0]["class_metrics"]
    assert after[0]["robust_recall"] == pytest.approx(15 / 18)
    assert any("predicts 'ham' for 100.0% of inputs" in w for w in report["warnings"])
