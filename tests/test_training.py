"""The training loop: resume equality, metrics, cards, loading the result, bad input, and
2-process data-parallel training under torchrun matching a 1-process run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adversa.cli.main import main
from adversa.defenses import DEFENSES
from adversa.errors import BadInput, UnknownName
from adversa.load import load_model
from adversa.threat import ThreatModel
from adversa.train.config import TrainConfig
from adversa.train.loop import train

PER_EPOCH = 23  # digits: 1,438 training images in batches of 64


def _config(defense: str = "none", **changes: object) -> TrainConfig:
    """A run on scikit-learn's 8x8 digits that takes a fraction of a second per epoch."""
    options = {
        "none": {},
        "pgd-at": {"eps": 0.1, "steps": 2},
        "free-at": {"eps": 0.1, "replays": 2},
        "trades": {"eps": 0.1, "steps": 2},
        "distillation": {"temperature": 20.0},
    }[defense]
    base: dict[str, object] = {
        "data": "digits",
        "arch": "mlp",
        "defense": DEFENSES.get(defense, **options),
        "epochs": 2,
        "lr": 1e-2,
        "final_eval": (),
    }
    return TrainConfig(**{**base, **changes})


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        if atol == 0.0:
            assert torch.equal(sa[key], sb[key]), key
        else:
            torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=0.0, msg=key)


def _without_times(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if "seconds" not in k} for line in lines]


class Killed(Exception):
    pass


@pytest.mark.parametrize(
    ("defense", "kill_at"),
    [("pgd-at", PER_EPOCH + 5), ("free-at", PER_EPOCH + 5), ("distillation", 3 * PER_EPOCH + 5)],
)
def test_resume_after_a_kill_mid_epoch_gives_the_uninterrupted_weights(
    tmp_path: Path, defense: str, kill_at: int
) -> None:
    config = _config(defense)
    whole = train(config, tmp_path / "whole")

    def kill(description: str, done: int, total: int) -> None:
        if done == kill_at:
            raise Killed

    with pytest.raises(Killed):
        train(config, tmp_path / "run", progress=kill)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == kill_at // PER_EPOCH  # every finished epoch, and only those
    assert not (tmp_path / "run" / "model.pt").exists()

    resumed = train(config, tmp_path / "run", resume=True)
    _assert_same_weights(whole.module, resumed.module)
    assert _without_times(resumed.history) == _without_times(whole.history)
    on_disk = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert _without_times(on_disk) == _without_times(whole.history)


def test_resuming_a_finished_run_returns_it(tmp_path: Path) -> None:
    config = _config()
    first = train(config, tmp_path)
    calls: list[int] = []
    again = train(config, tmp_path, resume=True, progress=lambda *a: calls.append(a[1]))
    assert not calls
    _assert_same_weights(first.module, again.module)
    assert again.card == first.card


def test_training_is_seeded_and_leaves_global_rng_alone() -> None:
    config = _config("pgd-at", epochs=1)
    before = torch.get_rng_state()
    a, b = train(config), train(config)
    assert torch.equal(torch.get_rng_state(), before)
    _assert_same_weights(a.module, b.module)
    c = train(dataclasses.replace(config, seed=1))
    assert not torch.equal(a.module[1].weight, c.module[1].weight)


def test_metrics_jsonl_and_card(tmp_path: Path) -> None:
    config = _config("pgd-at", eval_size=40, final_eval=("apgd-ce",), train_size=640)
    result = train(config, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    for line in lines:
        for key in ("loss", "clean_loss", "clean_accuracy", "adv_loss", "adv_accuracy"):
            assert isinstance(line[key], float), key
        assert 0 <= line["adv_accuracy"] <= line["clean_accuracy"] + 0.2
        assert 0 <= line["test_clean_accuracy"] <= 1 and line["seconds"] > 0
        assert line["samples"] == 640 and line["stage"] == "train"
    assert lines[0]["lr"] == pytest.approx(1e-2) and lines[1]["lr"] < lines[0]["lr"]
    assert lines[1]["steps"] == 20

    card = json.loads((tmp_path / "card.json").read_text())
    assert card == result.card
    assert card["data"] == "digits" and card["arch"] == "mlp"
    assert card["input_shape"] == [1, 8, 8] and card["num_classes"] == 10
    assert card["defense"]["name"] == "pgd-at"
    assert card["defense"]["options"]["eps"] == 0.1 and card["defense"]["options"]["steps"] == 2
    assert card["hyperparameters"]["epochs"] == 2 and card["hyperparameters"]["lr"] == 1e-2
    assert card["seed"] == 0 and card["versions"]["torch"] == torch.__version__
    assert card["train_seconds"] > 0 and len(card["weights_sha256"]) == 64
    assert TrainConfig.from_dict(card["config"]) == config
    evaluation = card["evaluation"]
    assert evaluation["clean_accuracy"] == pytest.approx(lines[-1]["test_clean_accuracy"])
    robust = evaluation["robust"]
    assert robust["eps"] == 0.1 and robust["norm"] == "linf" and robust["n"] == 40
    assert [a["name"] for a in robust["attacks"]] == ["apgd-ce"]
    assert 0 <= robust["robust_accuracy"] <= robust["clean_accuracy"]


def test_saved_model_loads_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = train(_config(), tmp_path / "run")
    model = load_model(str(tmp_path / "run"))
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(model(x), result.module(x), rtol=0, atol=0)
    assert model.num_classes == 10 and not model.module.training
    args = ["evaluate", "--model", str(tmp_path / "run"), "--data", "digits", "--norm", "linf"]
    args += ["--eps", "0.05", "--attacks", "fgsm", "--n", "50", "--out", str(tmp_path / "ev")]
    code = main(args)
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["n"] == 50 and 0.5 < report["clean_accuracy"] <= 1


def test_cli_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--arch", "mlp", "--defense", "trades", "--eps", "0.1"]
    args += ["--beta", "3", "--steps", "2", "--epochs", "1", "--lr", "0.01", "--out", str(out)]
    assert main([*args, "--eval-size", "20"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "robust accuracy" in printed and str(out / "model.pt") in printed
    card = json.loads((out / "card.json").read_text())
    assert card["defense"]["options"]["beta"] == 3.0
    assert card["evaluation"]["robust"]["attacks_run"] == ["apgd-ce", "apgd-t"]
    # the same command again is refused, with --resume it returns the finished run
    assert main([*args, "--eval-size", "20"]) == 2
    assert "already holds this run" in capsys.readouterr().err
    assert main([*args, "--eval-size", "20", "--resume"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--defense", "pgd"], "unknown defense 'pgd'; did you mean 'pgd-at'"),
        (["--defense", "pgd-at", "--eps", "-0.1"], "eps must be >= 0, got -0.1"),
        (["--defense", "none", "--eps", "0.1"], "defense 'none' has no option eps"),
        (["--arch", "resnet"], "unknown architecture 'resnet'"),
        (["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
        (["--data", "no-such-data"], "unknown dataset 'no-such-data'"),
    ],
)
def test_cli_bad_input_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    args = ["train", "--data", "digits", "--arch", "mlp", "--epochs", "1", "--out", str(tmp_path)]
    code = main([*args, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.count("\n") == 1  # one line
    assert not any(tmp_path.iterdir())  # nothing written


def test_out_dir_with_a_different_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    train(_config(epochs=1), tmp_path)
    base = ["train", "--data", "digits", "--arch", "mlp", "--lr", "0.01", "--out", str(tmp_path)]
    base += ["--final-eval", "none"]
    assert main([*base, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds a different run (epochs 1 -> 2)" in err and "--overwrite" in err
    assert main([*base, "--epochs", "2", "--resume"]) == 2
    assert "holds a different run" in capsys.readouterr().err
    assert main([*base, "--epochs", "2", "--overwrite"]) == 0
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["hyperparameters"]["epochs"] == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"  # overwrite touches only run files
    with pytest.raises(BadInput, match="resume and overwrite exclude each other"):
        train(_config(), tmp_path, resume=True, overwrite=True)


def test_config_validation() -> None:
    with pytest.raises(BadInput, match="lr must be a finite number > 0, got 0"):
        _config(lr=0)
    with pytest.raises(BadInput, match="optimizer must be one of adam, sgd, got 'lbfgs'"):
        _config(optimizer="lbfgs")
    with pytest.raises(UnknownName, match="unknown attack 'apgd-x'"):
        _config(final_eval=("apgd-x",))
    with pytest.raises(BadInput, match="defense 'trades' has no option lam"):
        DEFENSES.get("trades", eps=0.1, lam=1.0)
    with pytest.raises(BadInput, match="eps must be >= 0"):
        DEFENSES.get("pgd-at", eps=-1.0)
    assert _config("none").eval_threat() is None
    pgd = _config("pgd-at", final_eval=("apgd-ce",)).eval_threat()
    assert pgd == ThreatModel(norm="linf", eps=0.1)
    plain = _config("none", final_eval=("apgd-ce",), eval_eps=0.2).eval_threat()
    assert plain == ThreatModel(norm="linf", eps=0.2)


def test_sgd_and_a_file_dataset(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200, 6, generator=gen)
    y = (x[:, 0] > 0.5).long()
    path = tmp_path / "table.npz"
    import numpy as np

    np.savez(path, x=x.numpy(), y=y.numpy())
    config = TrainConfig(
        data=str(path),
        arch="mlp",
        optimizer="sgd",
        lr=0.5,
        epochs=5,
        batch_size=32,
        final_eval=(),
    )
    result = train(config)
    assert result.card["n_train"] == 160 and result.card["n_test"] == 40
    assert result.card["evaluation"]["clean_accuracy"] > 0.8


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path: Path) -> None:
    """DDP over 2 gloo processes with the same global batch equals 1 process: each rank trains
    on its shard, gradients are averaged weighted by shard size (999 = 15 x 64 + 39, so the
    last batch splits 20 / 19)."""
    config = _config(train_size=999)
    single = train(config)
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "adversa", "train", "--data", "digits"]
    command += ["--arch", "mlp", "--epochs", "2", "--lr", "0.01", "--train-size", "999"]
    command += ["--final-eval", "none", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("clean accuracy on the test split") == 1  # rank 0 prints
    card = json.loads((out / "card.json").read_text())
    assert card["world_size"] == 2 and TrainConfig.from_dict(card["config"]) == config
    ddp = load_model(str(out))
    _assert_same_weights(single.module, ddp.module, atol=1e-5)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for mine, theirs in zip(lines, single.history, strict=True):
        assert mine["samples"] == theirs["samples"] == 999
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)


def test_zoo_trains_with_this_loop_and_resumes_an_interrupted_first_use(tmp_path: Path) -> None:
    from adversa.zoo import load_zoo_entry, zoo_entry, zoo_paths

    entry = dataclasses.replace(zoo_entry("breast-cancer-mlp"), epochs=3)
    whole = load_zoo_entry(entry, cache_dir=tmp_path / "a")
    calls: list[int] = []

    def kill(description: str, done: int, total: int) -> None:
        calls.append(done)
        if done == total // 3 + 2:
            raise Killed

    with pytest.raises(Killed):  # two batches into the second epoch
        load_zoo_entry(entry, cache_dir=tmp_path / "b", progress=kill)
    per_epoch = calls[-1] - 2
    runs = tmp_path / "b" / "runs"
    assert [p.name for p in runs.iterdir()] == [zoo_paths(entry, tmp_path / "b")[0].stem]
    calls.clear()
    resumed = load_zoo_entry(
        entry, cache_dir=tmp_path / "b", progress=lambda *a: calls.append(a[1])
    )
    assert calls[0] == per_epoch + 1  # picked up after the finished epoch
    _assert_same_weights(whole, resumed)
    assert not runs.exists()  # the run's files go once the model is cached


@pytest.mark.slow
def test_zoo_model_first_used_under_torchrun_trains_on_rank_0_alone(tmp_path: Path) -> None:
    """Rank 0 trains the zoo model (a local run: no collectives) while rank 1 waits."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "adversa", "evaluate", "--model"]
    command += ["breast-cancer-mlp", "--data", "breast-cancer", "--norm", "linf", "--eps"]
    command += ["0.05", "--attacks", "fgsm", "--out", str(tmp_path / "ev")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVERSA_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ev" / "report.json").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["zoo"]  # run removed


def test_train_size_above_the_data_warns(caplog: pytest.LogCaptureFixture) -> None:
    """A train_size larger than the training split trains on all of it, and says so."""
    from adversa.train.config import TrainConfig, load_splits

    config = TrainConfig(data="digits", arch="mlp", train_size=10**6)
    with caplog.at_level("WARNING", logger="adversa.train.config"):
        train, _ = load_splits(config)
    assert any("larger than the" in r.getMessage() for r in caplog.records)
    assert len(train) < 10**6
