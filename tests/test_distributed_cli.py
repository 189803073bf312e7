"""`adversa` under torchrun: every option has a spelling torchrun passes through, and a sharded
evaluation of fewer points than batch size x processes gives every rank work and reports what
one process reports with that smaller batch size.

torchrun parses its own options with argparse, which (Python 3.11) classifies every argument,
the script's included, against them: an abbreviation of several torchrun options (`--n` for
--nnodes, --nproc-per-node, ...) stops the launch before adversa starts. Such an option needs
a second spelling (`--n-points`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import digits_split, train_digits_mlp
from torch.distributed.run import get_args_parser

from adversa import distributed
from adversa.cli.main import build_parser, main

NETS = """
from torch import nn


def mlp():
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
"""


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **commands.choices}


def _passes_through(command: str, argv: list[str]) -> bool:
    """torchrun --nproc_per_node=2 -m adversa COMMAND ARGV... hands ARGV to adversa as given."""
    script_args = [command, *argv] if command else argv
    launch = ["--nproc_per_node=2", "-m", "adversa", *script_args]
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            parsed = get_args_parser().parse_args(launch)
        except SystemExit:
            return False
    return parsed.training_script_args == script_args


def test_every_option_of_every_command_has_a_spelling_torchrun_passes_through() -> None:
    without: list[str] = []
    checked = 0
    for command, parser in _subcommands().items():
        for action in parser._actions:
            if not action.option_strings:
                continue
            checked += 1
            ok = [
                s
                for s in action.option_strings
                if _passes_through(command, [s, "1"]) and _passes_through(command, [f"{s}=1"])
            ]
            if not ok:
                without.append(f"{command or 'adversa'} {'/'.join(action.option_strings)}")
    assert checked > 200  # every command's options were looked at
    assert not without, f"options torchrun swallows or refuses: {without}"


def test_n_points_is_n_where_n_cannot_pass_torchrun() -> None:
    refused = {
        command
        for command, parser in _subcommands().items()
        for action in parser._actions
        if "--n" in action.option_strings
    }
    assert refused == {
        "evaluate",
        "certify",
        "privacy",
        "text-attack",
        "train-reformer",
        "patch",
        "universal",
    }
    for command in refused:
        assert not _passes_through(command, ["--n", "100"])  # what the issue saw
        assert _passes_through(command, ["--n-points", "100"])
    argv = ["evaluate", "--model", "m", "--data", "d", "--norm", "linf", "--eps", "0.1"]
    args = build_parser().parse_args([*argv, "--out", "o", "--n-points", "7"])
    assert args.n == 7  # the same option as --n


@pytest.mark.parametrize("world", [2, 3, 4])
def test_every_rank_gets_a_batch_when_points_are_fewer_than_batch_size_times_ranks(
    monkeypatch: pytest.MonkeyPatch, world: int
) -> None:
    batch_size = 8
    for n in range(world, batch_size * world + 3):
        counts, seen = [], []
        for rank in range(world):
            monkeypatch.setattr(distributed, "world", lambda r=rank: (r, world))
            size = distributed.batch_size_for(n, batch_size)
            assert size == batch_size or n < batch_size * world
            mine = list(distributed.my_batches(torch.arange(n), size))
            counts.append(len(mine))
            seen += [int(i) for batch in mine for i in batch]
        assert min(counts) >= 1, (n, counts)
        assert sorted(seen) == list(range(n))  # every point once


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _, _, x, y = digits_split()
    root = tmp_path_factory.mktemp("distributed-cli")
    paths = {"data": root / "digits.npz", "nets": root / "nets.py", "weights": root / "mlp.pt"}
    np.savez(paths["data"], x=x[:40].numpy(), y=y[:40].numpy())
    paths["nets"].write_text(NETS)
    torch.save(train_digits_mlp(0).state_dict(), paths["weights"])
    return paths


def _report(out: Path) -> dict:
    """report.json without what differs between runs by design: timings and topology."""

    def strip(value: object) -> object:
        if isinstance(value, dict):
            drop = {"seconds", "timestamp", "world_size", "batch_size"}
            return {k: strip(v) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads((out / "report.json").read_text()))  # type: ignore[return-value]


@pytest.mark.slow
@pytest.mark.parametrize(("n", "batch_size"), [(20, 10), (1, 1)])
def test_torchrun_evaluate_with_n_points_equals_one_process_at_the_shard_batch_size(
    files: dict[str, Path], tmp_path: Path, n: int, batch_size: int
) -> None:
    """20 points, batch size 256, 2 processes: batches of 10, one per rank; 1 point: rank 1
    has nothing to do and the run still finishes. Either way the report is the one a single
    process writes with that batch size (the sanity checks' cost tells 10 from 256)."""
    model = ["--model", f"{files['nets']}:mlp", "--weights", str(files["weights"])]
    common = ["evaluate", *model, "--data", str(files["data"]), "--norm", "linf"]
    common += ["--eps", "0.1", "--attacks", "fgsm,pgd", "--seed", "3"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc_per_node=2", "-m", "adversa", *common, "--n-points", str(n)]
    launch += ["--out", str(tmp_path / "two")]  # --batch-size left at its default, 256
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("clean accuracy") == 1  # rank 0 reports
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["config"]["world_size"] == 2 and two["n"] == n
    for size in (batch_size, 256):
        argv = [*common, "--n", str(n), "--batch-size", str(size)]
        assert main([*argv, "--out", str(tmp_path / str(size))]) == 0
    assert _report(tmp_path / "two") == _report(tmp_path / str(batch_size))
    if batch_size != 256 and n > 1:
        assert _report(tmp_path / "two") != _report(tmp_path / "256")
