"""Progress people can follow: plain timed lines when stderr is not a terminal (a log), rich
bars on a terminal, and counts that move within a batch, so that an evaluation of fewer points
than the batch size does not sit at 0 until it ends."""

from __future__ import annotations

import io
import itertools
import re
import warnings
from pathlib import Path

import pytest
import torch

import adversa.cli.common as common
from adversa import Model, ThreatModel
from adversa.cli.common import PlainProgress, RichProgress
from adversa.cli.main import main
from adversa.evaluation import evaluate
from adversa.evaluation.attack_progress import KNEE, batch_share, pass_budget

LINE = re.compile(
    r"^\[\d\d:\d\d:\d\d\] (?P<task>.+): (?P<done>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\), "
    r"(?:done in \d+ s|\d+ s elapsed(?:, ~\d+ s left)?)$"
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Flushed(io.StringIO):
    """A log stream that records how much had been written at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[int] = []

    def flush(self) -> None:
        self.flushed.append(len(self.getvalue()))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _plain(interval: float = 5.0) -> tuple[PlainProgress, Flushed, Clock]:
    stream, clock = Flushed(), Clock()
    return PlainProgress(stream, interval, clock=clock, wall=lambda: "12:03:05"), stream, clock


def test_a_long_task_prints_at_most_once_per_interval_and_its_end():
    show, stream, clock = _plain()
    for second in range(13):  # 13 reports, one a second, 0 .. 1000 points
        clock.now = float(second)
        show("pgd eps=0.1", min(100 * second, 1000), 1000)
    clock.now = 13.0
    show("pgd eps=0.1", 1000, 1000)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "[12:03:05] pgd eps=0.1: 500/1000 (50%), 5 s elapsed, ~5 s left",
        "[12:03:05] pgd eps=0.1: 1000/1000 (100%), done in 10 s",
    ]
    assert stream.flushed == [len(lines[0]) + 1, len(stream.getvalue())]  # each line flushed


def test_lines_every_interval_while_a_count_is_stuck():
    show, stream, clock = _plain(interval=2.0)
    for tick in range(11):  # 0, 0.5, ..., 5 s at 30/100
        clock.now = tick / 2
        show("square eps=0.1", 30, 100)
    lines = stream.getvalue().splitlines()
    assert [int(re.search(r"(\d+) s elapsed", x).group(1)) for x in lines] == [2, 4]
    assert all(LINE.match(x) and "30/100 (30%)" in x and "~" in x for x in lines)


def test_short_tasks_stay_silent_and_tasks_are_told_apart():
    show, stream, clock = _plain()
    show("fgsm eps=0.1", 0, 50)
    clock.now = 4.9
    show("fgsm eps=0.1", 50, 50)  # done within the interval: nothing
    show("training digits-mlp", 0, 10)
    clock.now = 9.0
    show("training digits-mlp", 4, 10)  # 4.1 s into its own run: still nothing
    assert stream.getvalue() == ""
    clock.now = 10.0
    show("training digits-mlp", 5, 10)
    assert stream.getvalue().splitlines() == [
        "[12:03:05] training digits-mlp: 5/10 (50%), 5 s elapsed, ~5 s left"
    ]


def test_a_description_reported_again_starts_a_new_task():
    show, stream, clock = _plain()
    show("pgd eps=0.1", 0, 10)
    clock.now = 6.0
    show("pgd eps=0.1", 10, 10)  # ran 6 s: its end is printed
    show("pgd eps=0.1", 0, 10)  # the same label again (another run): a fresh start
    clock.now = 8.0
    show("pgd eps=0.1", 10, 10)  # 2 s: silent
    assert stream.getvalue().splitlines() == ["[12:03:05] pgd eps=0.1: 10/10 (100%), done in 6 s"]


def test_long_durations_read_in_minutes_and_hours():
    show, stream, clock = _plain()
    show("training cifar10-wrn", 0, 100)
    clock.now = 125.0
    show("training cifar10-wrn", 1, 100)
    assert stream.getvalue().strip().endswith("2 min 05 s elapsed, ~3 h 26 min left")


def test_the_display_is_plain_off_a_terminal_and_bars_on_one(monkeypatch):
    monkeypatch.setattr(common, "PLAIN_INTERVAL", 0.0)
    log, tty = io.StringIO(), Terminal()
    for stream in (log, tty):
        with RichProgress(stream=stream) as show:
            show("pgd eps=0.1", 3, 10)
            show("pgd eps=0.1", 10, 10)
    assert [LINE.match(x)["done"] for x in log.getvalue().splitlines()] == ["3", "10"]
    assert "[" not in tty.getvalue().replace("\x1b[", "")  # rich's bars, no plain lines
    hidden = io.StringIO()
    with RichProgress(enabled=False, stream=hidden) as show:  # another torchrun rank
        show("pgd eps=0.1", 10, 10)
    assert hidden.getvalue() == ""


# --- counts that move within a batch ------------------------------------------------------


def test_pass_budget_and_batch_share():
    assert pass_budget({"steps": 40, "restarts": 3}) == 42  # restarts run as one batch
    assert pass_budget({"steps": 100, "n_target_classes": 9}) == 902
    assert pass_budget({"steps": 100, "binary_search_steps": 9}) == 902
    assert pass_budget({"queries": 5000}) == 5002
    assert pass_budget({"loss": "ce"}) is None and pass_budget({"steps": True}) is None
    shares = [batch_share(p, 100) for p in range(401)]  # up to 4 times the budget
    assert shares[50] == 0.5 and shares[80] == KNEE
    assert all(b > a for a, b in itertools.pairwise(shares))  # always moving
    assert shares[-1] < 1.0  # never the whole batch before it ends
    before, knee, after = (batch_share(p, 10_000) for p in (7_999, 8_000, 8_001))
    slope_before, slope_after = knee - before, after - knee  # no kink at the knee
    assert slope_after == pytest.approx(slope_before, rel=0.01)


def test_fewer_points_than_the_batch_size_still_move(digits_mlp):
    model, x, y = digits_mlp
    calls: list[tuple[str, int, int]] = []
    result = evaluate(
        model,
        x[:60],
        y[:60],
        ThreatModel(norm="linf", eps=0.1),
        ["fgsm", "pgd"],
        batch_size=256,
        progress=lambda *a: calls.append(a),
        checks=False,
    )
    pgd = [(done, total) for task, done, total in calls if task == "pgd eps=0.1"]
    todo = result.attacks[1].attacked
    assert todo > 10 and all(total == todo for _, total in pgd)
    counts = [done for done, _ in pgd]
    assert counts[0] == 0 and counts[-1] == todo  # announced at its start, exact at its end
    assert counts == sorted(counts)
    assert len({c for c in counts if 0 < c < todo}) >= 5  # moved within its one batch
    fgsm = [done for task, done, _ in calls if task == "fgsm eps=0.1"]
    assert fgsm[0] == 0 and fgsm[-1] == result.attacks[0].attacked


def test_a_torchscript_model_counts_whole_batches(digits_mlp):
    model, x, y = digits_mlp
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = Model(torch.jit.script(model.module), num_classes=10)
    calls: list[tuple[str, int, int]] = []
    result = evaluate(
        scripted,
        x[:40],
        y[:40],
        ThreatModel(norm="linf", eps=0.1),
        ["pgd"],
        batch_size=16,
        progress=lambda *a: calls.append(a),
        checks=False,
    )
    todo = result.attacks[0].attacked
    expected = [0, *range(16, todo, 16), todo]
    assert [done for _, done, _ in calls] == expected


# --- the command line, its stderr a log ----------------------------------------------------


def test_cli_writes_plain_progress_lines_to_a_log(tmp_path: Path, capsys, monkeypatch):
    """`adversa train` then `adversa evaluate` with stderr captured (not a terminal): timed
    lines for the training steps and for each attack, pgd's moving within its one batch."""
    monkeypatch.setattr(common, "PLAIN_INTERVAL", 0.0)  # every report prints
    run = tmp_path / "run"
    train = ["train", "--data", "digits", "--arch", "mlp", "--epochs", "1", "--train-size", "300"]
    assert main([*train, "--final-eval", "none", "--out", str(run)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(LINE.match(x) for x in lines), lines
    steps = [(int(m["done"]), int(m["total"])) for m in map(LINE.match, lines)]
    assert [done for done, _ in steps] == list(range(steps[-1][1] + 1))[-len(steps) :]
    assert "] training " in lines[-1] and "(100%), done in " in lines[-1]

    args = ["evaluate", "--model", str(run), "--data", "digits", "--norm", "linf"]
    args += ["--eps", "0.1", "--attacks", "pgd", "--steps", "20", "--n", "50"]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 0
    found = [LINE.match(x) for x in capsys.readouterr().err.splitlines()]
    assert all(found)
    pgd = [(int(m["done"]), int(m["total"])) for m in found if m["task"] == "pgd eps=0.1"]
    total = pgd[-1][1]
    assert pgd[0][0] == 0 and pgd[-1][0] == total and 0 < total <= 50
    assert any(0 < done < total for done, _ in pgd)  # 50 points < batch size 256, yet moving
