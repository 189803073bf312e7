"""Every command that loads a model declares --model, --weights, --normalize and
--trust-model-file once, through `add_model_options`: the same spellings, order and dests
everywhere, each command's own help where it says more, and all four reach `load_model`."""

from __future__ import annotations

import importlib

import pytest

from adversa.cli.common import NORMALIZE_HELP, TRUST_HELP
from adversa.cli.main import main
from adversa.errors import BadInput

SHARED_MODEL = "zoo name, training directory, file, ..."
EVALUATE_MODEL = (
    "zoo name, TorchScript file, .pt2 archive (with --trust-model-file), path/file.py:factory "
    "(with --weights), or sklearn:path.joblib (with --trust-model-file)"
)
HELPS = {  # command: (--model help, --trust-model-file help)
    "evaluate": (EVALUATE_MODEL, f"{TRUST_HELP} (--model and --surrogate)"),
    "certify": ("zoo name, file.py:factory (with --weights)", TRUST_HELP),
    "backdoor-eval": (SHARED_MODEL, TRUST_HELP),
    "inspect-data": (SHARED_MODEL, TRUST_HELP),
    "privacy": (SHARED_MODEL, TRUST_HELP),
    "invert": (SHARED_MODEL, f"{TRUST_HELP} (--model and --independent)"),
    "extract": (SHARED_MODEL, TRUST_HELP),
    "patch": (SHARED_MODEL, TRUST_HELP),
    "universal": (SHARED_MODEL, TRUST_HELP),
}


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("command", sorted(HELPS))
def test_every_command_declares_the_model_options_alike(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a hyphenated option name
    assert main([command, "--help"]) == 0
    out = _words(capsys.readouterr().out)
    usage = "--model MODEL [--weights WEIGHTS] [--normalize NAME|MEANS/STDS] [--trust-model-file]"
    assert usage in out
    model_help, trust_help = HELPS[command]
    assert f"--model MODEL {model_help}" in out
    assert f"--trust-model-file {_words(trust_help)}" in out
    assert _words(NORMALIZE_HELP) in out
    assert main([command]) == 2  # --model is required everywhere
    assert "--model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def backdoor_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("poison") / "bd"
    args = ["poison", "--data", "digits", "--attack", "badnets", "--rate", "0.1"]
    assert main([*args, "--target-class", "0", "--out", str(out)]) == 0
    return out


def _argv(command: str, backdoor_dir, out: str) -> list[str]:
    """Everything but the model options that `command` needs to reach `load_model`."""
    return {
        "evaluate": ["--data", "digits", "--norm", "linf", "--eps", "0.1", "--out", out],
        "certify": ["--data", "digits", "--method", "ibp", "--eps", "0.1", "--out", out],
        "backdoor-eval": ["--backdoor", str(backdoor_dir)],
        "inspect-data": ["--data", "digits"],
        "privacy": ["--data", "digits", "--attack", "threshold", "--out", out],
        "invert": ["--data", "digits", "--out", out],
    }[command]


MODULES = {
    "evaluate": "evaluate",
    "certify": "certify",
    "backdoor-eval": "poison",
    "inspect-data": "poison",
    "privacy": "privacy",
    "invert": "privacy",
}


@pytest.mark.parametrize("command", sorted(MODULES))
def test_the_model_options_reach_the_loader(command, backdoor_dir, tmp_path, monkeypatch, capsys):
    calls = []

    def loader(name, **kwargs):
        calls.append((name, kwargs))
        raise BadInput("loader reached")

    module = importlib.import_module(f"adversa.cli.{MODULES[command]}")
    monkeypatch.setattr(module, "load_model", loader)
    model = ["--model", "net.py:build", "--weights", "w.pt", "--normalize", "0.5/0.25"]
    argv = [command, *model, "--trust-model-file", *_argv(command, backdoor_dir, str(tmp_path))]
    assert main(argv) == 2
    assert "adversa: error: loader reached" in capsys.readouterr().err
    [(name, kwargs)] = calls
    assert name == "net.py:build"
    assert kwargs["weights"] == "w.pt" and kwargs["normalize"] == "0.5/0.25"
    assert kwargs["trust_model_file"] is True
