"""One spelling of the threat model on defense and poison configs, `DefenseBase`'s state
handling, and `adversa train` options derived from the registered defenses' fields."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
from conftest import digits_split
from torch import nn

from adversa.cli.train import add_train_parser, config_from_args
from adversa.data import load_data
from adversa.defenses import DefenseBase, StepContext, defense_options
from adversa.errors import BadInput
from adversa.poisoning import POISONS
from adversa.rng import make_generator
from adversa.threat import THREAT_OPTIONS, ThreatModel
from adversa.train import DEFENSES


def _mlp(seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def test_flat_options_build_the_one_threat_model() -> None:
    flat = DEFENSES.get("pgd-at", eps=0.3, norm="l2", bounds=(0.0, 2.0), steps=7)
    given = DEFENSES.get("pgd-at", threat=ThreatModel(norm="l2", eps=0.3, bounds=(0, 2)), steps=7)
    assert flat == given and flat.ball() == ThreatModel(norm="l2", eps=0.3, bounds=(0.0, 2.0))
    assert not any(f.name in THREAT_OPTIONS for f in dataclasses.fields(flat))
    assert defense_options(flat) == {
        "eps": 0.3,
        "norm": "l2",
        "bounds": (0.0, 2.0),
        "eps_ramp": 0.0,
        "steps": 7,
        "step_size": None,
    }
    with pytest.raises(BadInput, match="give threat= or eps, not both"):
        DEFENSES.get("pgd-at", threat=ThreatModel(norm="linf", eps=0.1), eps=0.2)
    with pytest.raises(BadInput, match="defense 'pgd-at': steps must be an integer, got True"):
        DEFENSES.get("pgd-at", eps=0.1, steps=True)
    with pytest.raises(BadInput, match="defense 'ibp': warmup must be a number, got 'x'"):
        DEFENSES.get("ibp", eps=0.1, warmup="x")


def test_every_defense_has_the_base_defaults() -> None:
    for name in DEFENSES.list():
        options = {"eps": 0.1} if "eps" in DEFENSES.options(DEFENSES.factory(name)) else {}
        if name == "gaussian":
            options = {"sigma": 0.25}
        defense = DEFENSES.get(name, **options)
        assert isinstance(defense, DefenseBase)
        assert defense.steps_per_batch >= 1 and defense.stages()[-1][1] is defense
        ball = defense.ball()
        assert ball is None or ball.eps == 0.1
    assert [s for s, _ in DEFENSES.get("distillation").stages()] == ["teacher", "student"]


def test_free_at_state_is_outside_the_config_and_resumes_identically() -> None:
    """The carried perturbation lives in `new_state()`, not in the frozen config: a run split
    in two, with the state restored from `state_dict()` into a fresh one, gives the weights
    of the uninterrupted run; without a state the defense refuses to guess."""
    x, y, _, _ = digits_split()
    defense = DEFENSES.get("free-at", eps=0.1, replays=2)
    assert defense == DEFENSES.get("free-at", eps=0.1, replays=2)  # no state to compare

    def run(net, opt, state, steps) -> None:
        for s in steps:
            ctx = StepContext(step=s, total=6, epoch=0, seed=0, gen=make_generator(s), state=state)
            defense.train_batch(net, opt, x[s * 64 : (s + 1) * 64], y[s * 64 : (s + 1) * 64], ctx)

    straight = _mlp(0)
    opt = torch.optim.SGD(straight.parameters(), lr=0.1)
    run(straight, opt, defense.new_state(), range(6))

    first = _mlp(0)
    opt = torch.optim.SGD(first.parameters(), lr=0.1)
    carried = defense.new_state()
    run(first, opt, carried, range(3))
    saved = {k: None if v is None else v.clone() for k, v in carried.state_dict().items()}
    resumed_state = defense.new_state()
    resumed_state.load_state_dict(saved)
    run(first, opt, resumed_state, range(3, 6))
    for a, b in zip(straight.state_dict().values(), first.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    ctx = StepContext(step=0, total=1, epoch=0, seed=0, gen=make_generator(0))
    with pytest.raises(BadInput, match=r"carries its perturbation.*new_state"):
        defense.train_batch(_mlp(0), opt, x[:8], y[:8], ctx)


def _expected_flags() -> set[str]:
    """Every option field of every registered defense, as `adversa train` spells it: a
    `threat` field as its eps, norm and bounds (--bounds is the run's input range)."""
    flags: set[str] = set()
    for name in DEFENSES.list():
        for field in dataclasses.fields(DEFENSES.factory(name)):
            if not (field.init and field.compare):
                continue  # state such as a distillation teacher, not an option
            names = THREAT_OPTIONS if field.name == "threat" else (field.name,)
            flags.update("--" + n.replace("_", "-") for n in names)
    return flags


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adversa")
    add_train_parser(parser.add_subparsers(), argparse.ArgumentParser(add_help=False))
    return parser


def test_train_cli_exposes_every_defense_field(capsys) -> None:
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["train", "--help"])
    text = capsys.readouterr().out
    missing = sorted(flag for flag in _expected_flags() if f"  {flag} " not in text)
    assert not missing, missing
    for legacy in ("--eps", "--norm", "--steps", "--step-size", "--eps-ramp", "--beta"):
        assert legacy in _expected_flags()  # the spellings users have keep working


def test_train_cli_options_reach_the_defense_config() -> None:
    common = ["train", "--data", "digits", "--arch", "mlp", "--out", "unused"]
    args = _train_parser().parse_args(
        [
            *common,
            "--defense",
            "crown-ibp",
            "--eps",
            "0.2",
            "--norm",
            "l2",
            "--bounds",
            "0,2",
            "--kappa-end",
            "0.25",
            "--beta-start",
            "0.5",
            "--warmup",
            "0.1",
        ]
    )
    defense = config_from_args(args).defense
    assert defense.threat == ThreatModel(norm="l2", eps=0.2, bounds=(0.0, 2.0))
    assert (defense.kappa_end, defense.beta_start, defense.warmup) == (0.25, 0.5, 0.1)
    free = ["--defense", "free-at", "--eps", "0.1", "--replays", "3", "--step-size", "0.05"]
    args = _train_parser().parse_args([*common, *free])
    defense = config_from_args(args).defense
    assert (defense.replays, defense.step_size, defense.threat.eps) == (3, 0.05, 0.1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_poison_threat_bounds_its_perturbation(norm: str) -> None:
    """Clean-label poisons stay inside their threat's ball (outside the stamped patch) and
    inside the data's box."""
    data = load_data("digits", split="train").take(400)
    eps = 0.2 if norm == "linf" else 1.0
    attack = POISONS.get(
        "clean-label",
        rate=0.05,
        target_class=0,
        model=nn.Sequential(nn.Flatten(), _mlp(0)),
        eps=eps,
        norm=norm,
        steps=5,
    )
    assert attack.threat == ThreatModel(norm=norm, eps=eps)
    poisoned = attack(data, seed=0)
    idx = poisoned.poisoned_idx
    mask = poisoned.trigger.mask.expand_as(data.x[0]).bool()
    delta = torch.where(mask, 0.0, poisoned.x[idx] - data.x[idx])
    assert float(delta.abs().amax()) > 0  # the poisons did move
    assert bool(attack.threat.contains(data.x[idx] + delta, data.x[idx]).all())
    assert float(poisoned.x.amin()) >= data.bounds[0] and float(poisoned.x.amax()) <= data.bounds[1]
    assert POISONS.get("gradient-matching", eps=0.3).threat == ThreatModel(norm="linf", eps=0.3)
    with pytest.raises(BadInput, match="norm must be 'linf'"):
        POISONS.get("gradient-matching", norm="l2")
    with pytest.raises(BadInput, match=r"'clean-label': steps must be an integer, got 2\.5"):
        POISONS.get("clean-label", steps=2.5)
