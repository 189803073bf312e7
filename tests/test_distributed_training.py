"""Data-parallel training under torchrun gives the weights of one process, for every defense.

One torchrun launch (2 gloo processes) trains every registered defense through `adversa
train`'s command line; the same commands then run in this process alone, and the weights must
agree within float tolerance. 200 = 3 x 64 + 8 training points, so the last batch of each
epoch is smaller than the others and splits 4 / 4 (free-AT's carried perturbation crosses
the change of shard). A defense registered without an entry in OPTIONS fails the test.
With rank-seeded draws (before), fast-AT's weights differed by 0.07 and free-AT's by 0.03.

The runs use SGD: Adam divides by the root of the second moments, which for near-zero
gradients turns rounding differences (the all-reduce sums in another order) into visible
ones; TRADES then differs by about 1e-2, as two 1-process runs do whose initial weights
differ by 1e-7 relative.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adversa.cli.main import main
from adversa.defenses import StepContext
from adversa.errors import BadInput
from adversa.rng import make_generator
from adversa.threat import ThreatModel
from adversa.train import DEFENSES

OPTIONS: dict[str, list[str]] = {  # small but non-trivial settings for each defense
    "none": [],
    "pgd-at": ["--eps", "0.1", "--steps", "2"],
    "trades": ["--eps", "0.1", "--steps", "2"],
    "mart": ["--eps", "0.1", "--steps", "2"],
    "fast-at": ["--eps", "0.1"],
    "free-at": ["--eps", "0.1", "--replays", "2"],
    "igr": ["--lam", "0.3"],
    "distillation": ["--temperature", "20"],
    "ibp": ["--eps", "0.05", "--eps-ramp", "0.5"],
    "crown-ibp": ["--eps", "0.05", "--eps-ramp", "0.5"],
    "gaussian": ["--sigma", "0.25"],
    "patch-ablation": ["--arch", "ablated-cnn-column2"],  # the last --arch wins
}

COMMON = ["--data", "digits", "--arch", "mlp", "--train-size", "200", "--batch-size", "64"]
COMMON += [
    "--epochs",
    "2",
    "--optimizer",
    "sgd",
    "--lr",
    "0.1",
    "--seed",
    "3",
    "--final-eval",
    "none",
]

# Each rank runs the commands in one process group (joined once, so `adversa train` uses it).
LAUNCHED = """
import json, sys
import torch.distributed as dist
from adversa.cli.main import main

dist.init_process_group("gloo")
for argv in json.loads(open(sys.argv[1]).read()):
    code = main(argv)
    if code:
        sys.exit(code)
dist.destroy_process_group()
"""


def _commands(root: Path) -> list[list[str]]:
    return [
        ["train", *COMMON, "--defense", name, *OPTIONS[name], "--out", str(root / name)]
        for name in DEFENSES.list()
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


def test_every_defense_trains_the_same_weights_on_two_processes_as_on_one(
    tmp_path: Path,
) -> None:
    assert sorted(OPTIONS) == DEFENSES.list(), "give every registered defense its options"
    script, commands = tmp_path / "launched.py", tmp_path / "commands.json"
    script.write_text(LAUNCHED)
    commands.write_text(json.dumps(_commands(tmp_path / "two")))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc_per_node=2", str(script), str(commands)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    worst: dict[str, float] = {}
    for argv in _commands(tmp_path / "one"):
        assert main(argv) == 0
        name = argv[argv.index("--defense") + 1]
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        card = json.loads((two / "card.json").read_text())
        assert card["world_size"] == 2, name
        a, b = _weights(one), _weights(two)
        assert a.keys() == b.keys()
        worst[name] = max(float((a[k] - b[k]).abs().max()) for k in a)
        lines = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
        assert [line["samples"] for line in lines] == [200] * len(lines), name
    assert all(diff < 1e-5 for diff in worst.values()), json.dumps(worst)


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_shards_draw_the_rows_one_process_draws_for_the_whole_batch(norm: str) -> None:
    """Random starts through `StepContext.draw`, for a batch of 9 split 5 / 4: each shard gets
    its rows of what one process draws for all 9 (the generators seeded alike)."""
    threat = ThreatModel(norm=norm, eps=0.3)
    x = torch.rand(9, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def start(offset: int, rows: int | None, part: torch.Tensor) -> torch.Tensor:
        ctx = StepContext(
            step=0, total=1, epoch=0, seed=0, gen=make_generator(7), offset=offset, rows=rows
        )
        return ctx.draw(part, lambda batch: threat.random_start(batch, ctx.gen))

    whole = start(0, None, x)
    shards = torch.cat([start(0, 9, x[:5]), start(5, 9, x[5:])])
    assert torch.equal(shards, whole)
    assert not torch.equal(start(0, None, x[5:]), whole[5:])  # a rank-local draw would differ
    with pytest.raises(BadInput, match="does not fit a batch of 9"):
        start(6, 9, x[5:])
