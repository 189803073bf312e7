"""The bad-input catalogue of the public Python API: each case calls one function or builds one
config with something wrong and must raise the named `AdversaError` subclass (BadInput,
ShapeError, BoundsError, UnknownName, ModelLoadError, AccessError) with a message that names
the offending argument or value; never a bare TypeError, ValueError, KeyError or a torch
error. The command line has its own catalogue in tests/test_bad_input_catalogue.py.

Each case is (id, call, exception class, pattern); `call` takes the `ctx` fixture (a tiny
linear model, a batch of 8 digits in [0, 1], a threat model and a few files) and returns
nothing: the exception is the result.
"""

from __future__ import annotations

import contextlib
import math
import re

import numpy as np
import pytest
import torch
from conftest import NaNOutput, TupleOutput
from sklearn.datasets import load_digits
from torch import nn

import adversa
from adversa import Model, ThreatModel, get_attack
from adversa.errors import (
    AccessError,
    AdversaError,
    BadInput,
    BoundsError,
    ModelLoadError,
    ShapeError,
    UnknownName,
)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("catalogue-api")
    digits = load_digits()
    x = torch.tensor(digits.data[:8] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(digits.target[:8], dtype=torch.long)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    np.savez(root / "data.npz", x=x.numpy(), y=y.numpy())
    np.savez(root / "scaled.npz", x=x.numpy() * 16, y=y.numpy())
    np.savez(root / "labels.npz", x=x.numpy(), y=y.numpy() + 10)
    np.savez(root / "empty.npz")
    np.savez(root / "emptyx.npz", x=x.numpy()[:0], y=y.numpy()[:0])
    np.savez(root / "mismatch.npz", x=x.numpy(), y=y.numpy()[:3])
    (root / "data.csv").write_text("f0,f1,label\n0.1,0.2,0\n0.3,0.4,1\n0.5,0.6,0\n")
    (root / "notes.txt").write_text("notes\n")
    (root / "garbage.pt").write_bytes(b"this is not a model")
    (root / "net.py").write_text(
        "from torch import nn\n\n\ndef make():\n    return nn.Sequential(nn.Flatten(), "
        "nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n"
    )
    torch.save(nn.Linear(3, 2).state_dict(), root / "wrong.pt")
    (root / "model.joblib").write_bytes(b"never read without trust_model_file")
    import zipfile

    with zipfile.ZipFile(root / "model.pt2", "w") as archive:
        archive.writestr("model/archive_format", "pt2")
    return {
        "root": root,
        "x": x,
        "y": y,
        "net": net,
        "model": Model(net, num_classes=10, name="tiny"),
        "threat": ThreatModel(norm="linf", eps=0.1),
        "l2": ThreatModel(norm="l2", eps=0.5),
    }


def _data(ctx: dict, name: str) -> str:
    return str(ctx["root"] / name)


# --------------------------------------------------------------------------------------------
# ThreatModel


def _tm(**kw):
    return lambda c: ThreatModel(**{"norm": "linf", "eps": 0.1, **kw})


THREAT = [
    ("threat-norm-unknown", _tm(norm="l3"), BadInput, r"norm must be one of .*'l3'"),
    ("threat-norm-none", _tm(norm=None), BadInput, r"norm must be one of"),
    ("threat-eps-negative", _tm(eps=-0.1), BadInput, r"eps must be >= 0, got -0\.1"),
    ("threat-eps-nan", _tm(eps=math.nan), BadInput, r"eps must be >= 0, got nan"),
    ("threat-eps-too-big", _tm(eps=2.0), BadInput, r"eps=2\.0 is larger than the bounds"),
    ("threat-bounds-reversed", _tm(bounds=(1.0, 0.0)), BadInput, r"bounds must be finite"),
    ("threat-bounds-empty", _tm(bounds=(0.5, 0.5)), BadInput, r"lo < hi"),
    ("threat-bounds-infinite", _tm(bounds=(0.0, math.inf)), BadInput, r"bounds must be finite"),
    ("threat-with-eps-negative", lambda c: c["threat"].with_eps(-1.0), BadInput, r"eps must be"),
    # type validation: a typed BadInput, never a TypeError or a silent coercion
    ("threat-eps-string", _tm(eps="abc"), BadInput, r"eps"),
    ("threat-eps-none", _tm(eps=None), BadInput, r"eps"),
    ("threat-targeted-string", _tm(targeted="no"), BadInput, r"targeted"),
    ("threat-bounds-string", _tm(bounds="01"), BadInput, r"bounds"),
    ("threat-bounds-three", _tm(bounds=(0.0, 0.5, 1.0)), BadInput, r"bounds"),
]

# --------------------------------------------------------------------------------------------
# Model and model loading

MODEL = [
    ("model-not-a-module", lambda c: Model("net"), BadInput, r"module"),
    ("model-none", lambda c: Model(None), BadInput, r"module"),
    (
        "load-model-missing-file",
        lambda c: _load(c, "nowhere/model.pt"),
        ModelLoadError,
        r"model\.pt: no such file",
    ),
    ("load-model-unknown-name", lambda c: _load(c, "mnist-cnnn"), UnknownName, r"'mnist-cnnn'"),
    (
        "load-model-garbage",
        lambda c: _load(c, _data(c, "garbage.pt")),
        ModelLoadError,
        r"garbage\.pt: not a TorchScript",
    ),
    (
        "load-model-py-without-factory",
        lambda c: _load(c, _data(c, "net.py")),
        ModelLoadError,
        r"net\.py: .*FACTORY",
    ),
    (
        "load-model-factory-missing",
        lambda c: _load(c, _data(c, "net.py") + ":nope"),
        ModelLoadError,
        r"nope",
    ),
    (
        "load-model-wrong-weights",
        lambda c: _load(c, _data(c, "net.py") + ":make", weights=_data(c, "wrong.pt")),
        ModelLoadError,
        r"wrong\.pt: state_dict does not",
    ),
    (
        "load-model-missing-weights",
        lambda c: _load(c, _data(c, "net.py") + ":make", weights=_data(c, "none.pt")),
        ModelLoadError,
        r"none\.pt: weights file not found",
    ),
    (
        "load-model-sklearn-untrusted",
        lambda c: _load(c, "sklearn:" + _data(c, "model.joblib")),
        BadInput,
        r"trust_model_file",  # one spelling of the keyword
    ),
    (
        "load-model-pt2-untrusted",
        lambda c: _load(c, _data(c, "model.pt2")),
        AdversaError,
        r"trust_model_file",
    ),
    (
        "load-model-directory-without-card",
        lambda c: _load(c, str(c["root"])),
        ModelLoadError,
        r"card\.json",
    ),
]


def _load(ctx: dict, spec: str, **kw):
    from adversa.load import load_model

    return load_model(spec, **kw)


# --------------------------------------------------------------------------------------------
# attacks


def _attack(name: str, threat: str = "threat", **kw):
    return lambda c: get_attack(name, c[threat], **kw)


def _run(name: str, x=None, y=None, model=None, threat: str = "threat"):
    def call(c: dict) -> None:
        attack = (
            get_attack(name, c[threat], steps=2) if name != "fgsm" else get_attack(name, c[threat])
        )
        attack(
            c["model"] if model is None else model(c),
            c["x"] if x is None else x(c),
            c["y"] if y is None else y(c),
        )

    return call


ATTACKS = [
    ("attack-unknown", _attack("pgdd"), UnknownName, r"unknown attack 'pgdd'; did you mean 'pgd'"),
    ("attack-unknown-option", _attack("pgd", stepz=3), BadInput, r"has no option stepz"),
    ("attack-steps-zero", _attack("pgd", steps=0), BadInput, r"steps must be >= 1, got 0"),
    ("attack-restarts-zero", _attack("pgd", restarts=0), BadInput, r"restarts must be >= 1"),
    ("attack-step-size-negative", _attack("pgd", step_size=-1.0), BadInput, r"step_size must be"),
    ("attack-apgd-rho", _attack("apgd-ce", rho=0.0), BadInput, r"rho must be in \(0, 1\]"),
    ("attack-fab-alpha-max", _attack("fab", alpha_max=2.0), BadInput, r"alpha_max must be in"),
    ("attack-fab-beta", _attack("fab", beta=1.0), BadInput, r"beta must be in \(0, 1\)"),
    ("attack-hsj-gamma", _attack("hsj", gamma=0.0), BadInput, r"gamma must be > 0"),
    ("attack-simba-queries", _attack("simba", "l2", queries=0), BadInput, r"queries must be >= 1"),
    ("attack-simba-basis", _attack("simba", "l2", basis="fourier"), BadInput, r"basis must be"),
    ("attack-deepfool-candidates", _attack("deepfool", candidates=1), BadInput, r"candidates"),
    ("attack-deepfool-overshoot", _attack("deepfool", overshoot=-1.0), BadInput, r"overshoot"),
    ("attack-cw-lr", _attack("cw", "l2", lr=-1.0), BadInput, r"lr must be > 0, got -1\.0"),
    (
        "attack-threat-not-threat",
        lambda c: get_attack("pgd", "linf"),
        BadInput,
        r"threat must be a ThreatModel, got str",
    ),
    (
        "attack-y-length",
        _run("fgsm", y=lambda c: c["y"][:3]),
        ShapeError,
        r"\by\b",
    ),
    (
        "attack-x-integer",
        _run("fgsm", x=lambda c: (c["x"] * 16).long()),
        BadInput,
        r"x must be floating point",
    ),
    (
        "attack-x-out-of-bounds",
        _run("fgsm", x=lambda c: c["x"] * 16),
        BoundsError,
        r"outside the declared bounds",
    ),
    ("attack-model-not-module", _run("fgsm", model=lambda c: "net"), BadInput, r"model must be"),
    (
        "attack-x-shape-vs-model",
        _run("fgsm", x=lambda c: c["x"].reshape(8, -1)[:, :32]),
        ShapeError,
        r"shape",
    ),
    (
        "attack-labels-beyond-model",
        _run("fgsm", y=lambda c: c["y"] + 10),
        BadInput,
        r"labels must lie in \[0, 9\]",
    ),
    (
        "attack-x-nan",
        _run("fgsm", x=lambda c: c["x"].clone().fill_(math.nan)),
        BadInput,
        r"NaN",
    ),
]

# --------------------------------------------------------------------------------------------
# adversa.evaluate


def _evaluate(**kw):
    def call(c: dict) -> None:
        args = {
            "model": c["model"],
            "x": c["x"],
            "y": c["y"],
            "threat": c["threat"],
            "attacks": ["fgsm"],
        }
        args.update({k: v(c) if callable(v) and k != "model" else v for k, v in kw.items()})
        if callable(kw.get("model")):
            args["model"] = kw["model"](c)
        adversa.evaluate(
            args.pop("model"), args.pop("x"), args.pop("y"), args.pop("threat"), **args
        )

    return call


EVALUATE = [
    (
        "evaluate-batch-size-zero",
        _evaluate(batch_size=0),
        BadInput,
        r"batch_size must be a positive",
    ),
    ("evaluate-batch-size-float", _evaluate(batch_size=2.5), BadInput, r"batch_size .*2\.5"),
    ("evaluate-batch-size-bool", _evaluate(batch_size=True), BadInput, r"batch_size"),
    ("evaluate-threat-string", _evaluate(threat="linf"), BadInput, r"threat must be a ThreatModel"),
    (
        "evaluate-targeted-threat",
        _evaluate(threat=ThreatModel(norm="linf", eps=0.1, targeted=True)),
        BadInput,
        r"untargeted.*targeted=False",
    ),
    (
        "evaluate-x-integer",
        _evaluate(x=lambda c: (c["x"] * 16).long()),
        BadInput,
        r"x must be floating point",
    ),
    ("evaluate-x-string", _evaluate(x="images"), BadInput, r"x must be a tensor or an array"),
    ("evaluate-y-length", _evaluate(y=lambda c: c["y"][:5]), ShapeError, r"\by\b.*\b5\b|\b5\b"),
    (
        "evaluate-x-out-of-bounds",
        _evaluate(x=lambda c: c["x"] * 16),
        BoundsError,
        r"x has values in \[0, 16\], outside the declared bounds",
    ),
    ("evaluate-x-nan", _evaluate(x=lambda c: c["x"] * math.nan), BadInput, r"NaN"),
    (
        "evaluate-labels-beyond-model",
        _evaluate(y=lambda c: c["y"] + 10),
        BadInput,
        r"labels must lie in \[0, 9\]",
    ),
    ("evaluate-labels-float", _evaluate(y=lambda c: c["y"].float()), BadInput, r"\by\b"),
    ("evaluate-no-attacks", _evaluate(attacks=[]), BadInput, r"at least one attack"),
    ("evaluate-unknown-attack", _evaluate(attacks=["fgsmm"]), UnknownName, r"'fgsmm'"),
    ("evaluate-attack-object", _evaluate(attacks=[3]), BadInput, r"registry names or attack"),
    (
        "evaluate-attack-wrong-norm",
        _evaluate(threat=ThreatModel(norm="l1", eps=1.0), attacks=["deepfool"]),
        BadInput,
        r"none of the attacks supports the l1 norm",
    ),
    ("evaluate-model-not-module", _evaluate(model=lambda c: "net"), BadInput, r"model must be"),
    (
        "evaluate-shape-vs-model",
        _evaluate(x=lambda c: c["x"].reshape(8, -1)[:, :32]),
        ShapeError,
        r"shape",
    ),
    (
        "evaluate-sweep-no-eps",
        lambda c: adversa.evaluate_sweep(c["model"], c["x"], c["y"], c["threat"], [], ["fgsm"]),
        BadInput,
        r"eps_values must hold at least one eps",
    ),
    (
        "evaluate-sweep-negative-eps",
        lambda c: adversa.evaluate_sweep(
            c["model"], c["x"], c["y"], c["threat"], [0.1, -0.1], ["fgsm"]
        ),
        BadInput,
        r"eps must be >= 0",
    ),
    (
        "evaluate-model-returns-nan",
        _evaluate(model=lambda c: NaNOutput(c["net"])),
        BadInput,
        r"NaN",
    ),
]

# --------------------------------------------------------------------------------------------
# training


def _tc(**kw):
    def call(c: dict) -> None:
        from adversa.train.config import TrainConfig

        TrainConfig(**{"data": _data(c, "data.npz"), "arch": "mlp", **kw})

    return call


def _train(**kw):
    def call(c: dict) -> None:
        from adversa.train.config import TrainConfig
        from adversa.train.loop import train

        config = {"data": _data(c, "data.npz"), "arch": "mlp", "epochs": 1, "final_eval": ()}
        train(TrainConfig(**{**config, **{k: v(c) if callable(v) else v for k, v in kw.items()}}))

    return call


def _defense(name: str, **kw):
    def call(c: dict) -> None:
        from adversa.defenses import DEFENSES

        DEFENSES.get(name, **kw)

    return call


TRAIN = [
    ("train-arch-unknown", _tc(arch="resnet"), UnknownName, r"unknown architecture 'resnet'"),
    ("train-epochs-zero", _tc(epochs=0), BadInput, r"epochs must be an integer >= 1, got 0"),
    ("train-epochs-float", _tc(epochs=1.5), BadInput, r"epochs must be an integer >= 1, got 1\.5"),
    ("train-batch-size-zero", _tc(batch_size=0), BadInput, r"batch_size must be an integer"),
    ("train-lr-zero", _tc(lr=0.0), BadInput, r"lr must be a finite number > 0"),
    ("train-lr-nan", _tc(lr=math.nan), BadInput, r"lr must be a finite number > 0, got nan"),
    ("train-lr-string", _tc(lr="fast"), BadInput, r"lr must be .*fast"),
    ("train-optimizer", _tc(optimizer="rmsprop"), BadInput, r"optimizer must be one of"),
    ("train-momentum", _tc(momentum=1.0), BadInput, r"momentum must be in \[0, 1\)"),
    ("train-weight-decay", _tc(weight_decay=-1.0), BadInput, r"weight_decay must be >= 0"),
    ("train-seed-string", _tc(seed="a"), BadInput, r"seed must be an integer, got 'a'"),
    ("train-train-size-zero", _tc(train_size=0), BadInput, r"train_size must be an integer"),
    ("train-eval-size-zero", _tc(eval_size=0), BadInput, r"eval_size must be an integer"),
    ("train-final-eval-unknown", _tc(final_eval=("pgdd",)), UnknownName, r"'pgdd'"),
    ("train-eval-eps-negative", _tc(eval_eps=-1.0), BadInput, r"eval_eps must be a finite"),
    ("train-eval-norm", _tc(eval_norm="l3"), BadInput, r"eval_norm must be one of"),
    ("train-defense-unknown", _tc(defense="pgd-att"), UnknownName, r"'pgd-att'"),
    ("train-defense-not-config", _tc(defense=3), BadInput, r"defense must be a defense config"),
    ("train-data-empty", _tc(data=""), BadInput, r"data must name a dataset"),
    ("train-data-missing", _train(data="nowhere/data.npz"), BadInput, r"data\.npz: no such file"),
    (
        "train-test-labels-beyond-train",
        _train(test_data=lambda c: _data(c, "labels.npz")),
        BadInput,
        r"test data 'labels' has labels up to 1\d, beyond the \d+ classes",
    ),
    (
        "train-arch-vs-data",
        _train(
            arch="small-cnn",
            data=lambda c: _data(c, "data.csv"),
            test_data=lambda c: _data(c, "data.csv"),
            label_column="label",
        ),
        BadInput,
        r"CNN needs .* inputs",
    ),
    (
        "train-data-out-of-bounds",
        _train(data=lambda c: _data(c, "scaled.npz"), test_data=lambda c: _data(c, "data.npz")),
        BoundsError,
        r"bounds",
    ),
    (
        "train-config-not-config",
        lambda c: __import__("adversa.train.loop", fromlist=["train"]).train({"arch": "mlp"}),
        BadInput,
        r"config must be a TrainConfig",
    ),
    (
        "train-config-unknown-key",
        lambda c: __import__(
            "adversa.train.config", fromlist=["TrainConfig"]
        ).TrainConfig.from_dict({"data": "digits", "arch": "mlp", "bogus": 1}),
        BadInput,
        r"unknown keys: bogus",
    ),
    ("defense-unknown", _defense("pgd-att"), UnknownName, r"unknown defense 'pgd-att'"),
    ("defense-unknown-option", _defense("none", eps=0.1), BadInput, r"has no option eps"),
    ("defense-eps-negative", _defense("pgd-at", eps=-0.1), BadInput, r"eps must be >= 0"),
    ("defense-trades-beta", _defense("trades", eps=0.1, beta=-1.0), BadInput, r"beta"),
    ("defense-missing-eps", _defense("pgd-at"), BadInput, r"eps"),
]

# --------------------------------------------------------------------------------------------
# data


def _load_data(name: str, **kw):
    def call(c: dict) -> None:
        from adversa.data import load_data

        load_data(_data(c, name) if "." in name else name, **kw)

    return call


DATA = [
    ("data-unknown-name", _load_data("mnistt"), UnknownName, r"unknown dataset 'mnistt'"),
    ("data-split", _load_data("digits", split="val"), BadInput, r"split must be one of .*'val'"),
    ("data-missing-file", _load_data("missing.npz"), BadInput, r"missing\.npz: no such file"),
    ("data-csv-no-label", _load_data("data.csv"), BadInput, r"label column"),
    ("data-csv-label-unknown", _load_data("data.csv", label_column="y"), BadInput, r"'y'"),
    ("data-npz-no-points", _load_data("emptyx.npz"), ShapeError, r"x is empty"),
    ("data-npz-no-arrays", _load_data("empty.npz"), BadInput, r"empty\.npz"),
    ("data-npz-y-length", _load_data("mismatch.npz"), ShapeError, r"y must have shape \(8,\)"),
    ("data-wrong-kind", _load_data("notes.txt"), BadInput, r"notes\.txt"),
    (
        "data-take-zero",
        lambda c: (
            __import__("adversa.data", fromlist=["load_data"])
            .load_data(_data(c, "data.npz"))
            .take(0)
        ),
        BadInput,
        r"n must be >= 1, got 0",
    ),
]

# --------------------------------------------------------------------------------------------
# poisoning


def _poison(name: str, **kw):
    def call(c: dict) -> None:
        from adversa.poisoning import POISONS

        POISONS.get(name, **kw)

    return call


def _poison_run(name: str, **kw):
    def call(c: dict) -> None:
        from adversa.data import load_data
        from adversa.poisoning import POISONS

        POISONS.get(name, **kw)(load_data(_data(c, "data.npz")), seed=0)

    return call


def _detector(name: str, **kw):
    def call(c: dict) -> None:
        from adversa.poisoning import get_detector

        get_detector(name, **kw)

    return call


def _asr_all_target(c: dict) -> None:
    from adversa.poisoning import Trigger, attack_success_rate

    trigger = Trigger(torch.ones(1, 8, 8), torch.zeros(1, 8, 8))
    attack_success_rate(c["model"], c["x"], torch.zeros(8, dtype=torch.long), trigger, 0)


POISONING = [
    ("poison-unknown", _poison("badnet"), UnknownName, r"'badnet'"),
    ("poison-rate-zero", _poison("badnets", rate=0.0), BadInput, r"rate must be in \(0, 1\)"),
    ("poison-rate-one", _poison("blend", rate=1.0), BadInput, r"rate must be in \(0, 1\)"),
    ("poison-unknown-option", _poison("badnets", alpha=0.5), BadInput, r"has no option alpha"),
    ("poison-corner", _poison("badnets", corner="middle"), BadInput, r"corner must be one of"),
    ("poison-blend-alpha", _poison("blend", alpha=0.0), BadInput, r"alpha must be in \(0, 1\]"),
    ("poison-flip-mode", _poison("label-flip", mode="chaos"), BadInput, r"mode must be one of"),
    (
        "poison-flip-targeted-alone",
        _poison("label-flip", mode="targeted"),
        BadInput,
        r"needs source_class and target_class",
    ),
    (
        "poison-flip-random-with-target",
        _poison("label-flip", target_class=3),
        BadInput,
        r"apply to mode 'targeted' only",
    ),
    (
        "poison-target-out-of-range",
        _poison_run("badnets", rate=0.2, target_class=10),
        BadInput,
        r"target_class must be a class .*got 10",
    ),
    (
        "poison-patch-too-big",
        _poison_run("badnets", rate=0.2, target_class=0, patch_size=9),
        BadInput,
        r"patch_size",
    ),
    ("detector-unknown", _detector("spectra"), UnknownName, r"'spectra'"),
    ("detector-unknown-option", _detector("spectral", bogus=1), BadInput, r"no option bogus"),
    ("detector-rate", _detector("spectral", rate=1.5), BadInput, r"rate must be in \(0, 1\)"),
    (
        "trigger-shapes-differ",
        lambda c: __import__("adversa.poisoning", fromlist=["Trigger"]).Trigger(
            torch.ones(1, 8, 8), torch.ones(1, 4, 4)
        ),
        ShapeError,
        r"mask",
    ),
    ("asr-no-source-inputs", _asr_all_target, BadInput, r"outside the target class 0"),
]

# --------------------------------------------------------------------------------------------
# certification


def _smooth(**kw):
    def call(c: dict) -> None:
        from adversa.certify import Smooth

        Smooth(**{"sigma": 0.25, **kw})

    return call


def _bounds(method: str = "ibp", threat: object = None, model: object = None):
    def call(c: dict) -> None:
        from adversa.certify import bounds

        bounds(
            c["net"] if model is None else model,
            c["x"],
            c["threat"] if threat is None else threat,
            method=method,
        )

    return call


def _certify(**kw):
    def call(c: dict) -> None:
        from adversa.certify import run_certification

        args = {"method": "ibp", "batch_size": 8}
        args.update(kw)
        run_certification(c["model"], c["x"], c["y"], c["threat"], [0.01], **args)

    return call


CERTIFY = [
    ("smooth-sigma-zero", _smooth(sigma=0.0), BadInput, r"sigma must be .*> 0"),
    ("smooth-sigma-nan", _smooth(sigma=math.nan), BadInput, r"sigma must be .*nan"),
    ("smooth-sigma-string", _smooth(sigma="big"), BadInput, r"sigma must be .*'big'"),
    ("smooth-alpha", _smooth(alpha=1.5), BadInput, r"alpha must be in \(0, 1\), got 1\.5"),
    ("smooth-n-zero", _smooth(n=0), BadInput, r"\bn must be an integer >= 1, got 0"),
    ("smooth-n0-zero", _smooth(n0=0), BadInput, r"n0 must be an integer >= 1, got 0"),
    ("smooth-batch-size", _smooth(batch_size=0), BadInput, r"batch_size must be an integer"),
    ("bounds-method", _bounds(method="lp"), BadInput, r"method must be one of .*'lp'"),
    (
        "bounds-l1",
        _bounds(threat=ThreatModel(norm="l1", eps=1.0)),
        BadInput,
        r"linf and l2 norms, not 'l1'",
    ),
    ("bounds-threat-string", _bounds(threat="linf"), BadInput, r"threat must be a ThreatModel"),
    (
        "bounds-unsupported-layer",
        _bounds(model=nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))),
        BadInput,
        r"unsupported layer Softmax",
    ),
    ("bounds-model-string", _bounds(model="net"), BadInput, r"model must be"),
    ("certify-method", _certify(method="lp"), BadInput, r"method must be one of .*'lp'"),
    ("certify-smoothing-alone", _certify(method="smoothing"), BadInput, r"smooth=Smooth"),
    ("certify-batch-size", _certify(batch_size=0), BadInput, r"batch_size must be a positive"),
    (
        "certify-and-attack-none",
        lambda c: __import__("adversa.certify", fromlist=["x"]).certify_and_attack(
            c["model"], c["x"], c["y"], c["threat"], method="ibp", attacks=[]
        ),
        BadInput,
        r"at least one attack",
    ),
    (
        "margins-no-methods",
        lambda c: __import__("adversa.certify", fromlist=["x"]).margins(
            c["net"], c["x"], c["y"], c["threat"], methods=[]
        ),
        BadInput,
        r"methods must name at least one method",
    ),
    (
        "min-n-alpha",
        lambda c: __import__("adversa.certify", fromlist=["x"]).min_n_to_certify(2.0),
        BadInput,
        r"alpha must be in \(0, 1\)",
    ),
]

# --------------------------------------------------------------------------------------------
# privacy


def _priv(cls: str, **kw):
    def call(c: dict) -> None:
        import adversa.privacy as privacy

        getattr(privacy, cls)(**kw)

    return call


def _invert(classes=None, model=None):
    def call(c: dict) -> None:
        from adversa.privacy import MIFace

        target = c["model"] if model is None else model(c)
        MIFace(steps=2, inits=("zeros",))(target, (1, 8, 8), classes)

    return call


def _roc(scores, members):
    def call(c: dict) -> None:
        from adversa.privacy import roc_curve

        roc_curve(torch.tensor(scores), torch.tensor(members))

    return call


def _fpr(value: float):
    def call(c: dict) -> None:
        from adversa.privacy.metrics import check_fpr

        check_fpr(value)

    return call


PRIVACY = [
    ("miface-steps", _priv("MIFace", steps=0), BadInput, r"steps must be >= 1, got 0"),
    ("miface-step-size", _priv("MIFace", step_size=0.0), BadInput, r"step_size must be > 0"),
    ("miface-step-size-nan", _priv("MIFace", step_size=math.nan), BadInput, r"step_size.*nan"),
    ("miface-step-size-inf", _priv("MIFace", step_size=math.inf), BadInput, r"step_size.*inf"),
    ("miface-tv", _priv("MIFace", tv_weight=-1.0), BadInput, r"tv_weight must be >= 0"),
    ("miface-gamma", _priv("MIFace", gamma=0.0), BadInput, r"gamma must be in \(0, 1\]"),
    ("miface-patience", _priv("MIFace", patience=0), BadInput, r"patience must be >= 1"),
    ("miface-objective", _priv("MIFace", objective="loss"), BadInput, r"objective must be"),
    ("miface-inits", _priv("MIFace", inits=("noise",)), BadInput, r"inits must be .*noise"),
    ("miface-no-inits", _priv("MIFace", inits=()), BadInput, r"inits must be a non-empty"),
    (
        "miface-classes-beyond",
        _invert(classes=torch.tensor([10])),
        BadInput,
        r"classes must lie in \[0, 10\)",
    ),
    (
        "miface-scores-only",
        _invert(model=lambda c: c["model"].scores_only()),
        AccessError,
        r"gradient",
    ),
    ("audit-shadows", _priv("MembershipAudit", num_shadows=0), BadInput, r"shadows must be >= 1"),
    (
        "audit-attack-unknown",
        _priv("MembershipAudit", attacks=("liraa",)),
        BadInput,
        r"liraa",
    ),
    (
        "membership-attacks-parse",
        lambda c: __import__("adversa.privacy", fromlist=["x"]).parse_membership_attacks("foo"),
        BadInput,
        r"'foo'",
    ),
    ("fpr-zero", _fpr(0.0), BadInput, r"fpr must lie strictly inside \(0, 1\), got 0"),
    ("fpr-one", _fpr(1.0), BadInput, r"fpr must lie strictly inside \(0, 1\), got 1"),
    ("fpr-nan", _fpr(math.nan), BadInput, r"fpr must lie strictly inside \(0, 1\), got nan"),
    ("dpsgd-noise", _priv("DPSGD", noise_multiplier=-1.0), BadInput, r"noise_multiplier must"),
    ("dpsgd-noise-nan", _priv("DPSGD", noise_multiplier=math.nan), BadInput, r"noise_multiplier"),
    ("dpsgd-clip", _priv("DPSGD", max_grad_norm=0.0), BadInput, r"max_grad_norm must be > 0"),
    ("dpsgd-delta", _priv("DPSGD", delta=2.0), BadInput, r"delta must lie in \(0, 1\)"),
    ("target-epochs", _priv("TargetTraining", epochs=0), BadInput, r"epochs must be .*got 0"),
    ("target-batch-size", _priv("TargetTraining", batch_size=0), BadInput, r"batch_size must be"),
    ("target-lr-nan", _priv("TargetTraining", lr=math.nan), BadInput, r"lr must be .*nan"),
    (
        "target-label-smoothing",
        _priv("TargetTraining", label_smoothing=1.0),
        BadInput,
        r"label_smoothing must be in \[0, 1\)",
    ),
    ("stacked-steps", _priv("StackedTraining", steps=0), BadInput, r"steps must be >= 1"),
    ("stacked-hidden", _priv("StackedTraining", hidden=(0,)), BadInput, r"hidden widths"),
    ("roc-shapes", _roc([0.1, 0.2, 0.3], [True, False]), ShapeError, r"scores \(3,\) .*\(2,\)"),
    ("roc-one-side", _roc([0.1, 0.2], [True, True]), BadInput, r"both members and non-members"),
    ("roc-nan", _roc([0.1, math.nan], [True, False]), BadInput, r"scores must be finite"),
    (
        "tradeoff-no-options",
        lambda c: __import__("adversa.privacy", fromlist=["x"]).defense_tradeoff(
            (c["x"], c["y"]), (c["x"], c["y"]), (c["x"], c["y"]), 10, {}
        ),
        BadInput,
        r"options must name at least one",
    ),
]

# --------------------------------------------------------------------------------------------
# randomness, input defenses, text


def _rng(*args, **kw):
    def call(c: dict) -> None:
        from adversa.rng import make_generator

        make_generator(*args, **kw)

    return call


def _defense_spec(spec: str):
    def call(c: dict) -> None:
        from adversa.input_defenses.spec import parse_defense

        parse_defense(spec)

    return call


def _text_attack(name: str, **kw):
    def call(c: dict) -> None:
        from adversa.text import TEXT_ATTACKS

        TEXT_ATTACKS.get(name, **kw)

    return call


def _text_run(texts, labels):
    def call(c: dict) -> None:
        from adversa.text import TEXT_ATTACKS, train_text_classifier
        from adversa.text.base import run_text_attack

        words = ["good fine film", "bad dull film"] * 4
        model = train_text_classifier(words, torch.tensor([0, 1] * 4))
        run_text_attack(TEXT_ATTACKS.get("deepwordbug"), model, texts, labels)

    return call


OTHER = [
    ("rng-seed-string", _rng("abc"), BadInput, r"seed"),
    ("rng-seed-too-big", _rng(2**70), BadInput, r"seed"),
    ("rng-device-unknown", _rng(0, device="tpu"), BadInput, r"device"),
    ("defense-spec-empty", _defense_spec(""), BadInput, r"at least one defense"),
    ("defense-spec-unknown", _defense_spec("squeez"), UnknownName, r"'squeez'"),
    (
        "defense-build-option",
        lambda c: __import__("adversa.input_defenses.spec", fromlist=["x"]).build_defense(
            "squeeze:bits=0"
        ),
        BadInput,
        r"bits must be an integer in 1\.\.8, got 0",
    ),
    ("defense-spec-format", _defense_spec("squeeze:bits"), BadInput, r"key=value"),
    ("defense-spec-type", _defense_spec("jpeg:quality=high"), BadInput, r"quality .*'high'"),
    ("text-attack-unknown", _text_attack("pwwz"), UnknownName, r"'pwwz'"),
    ("text-max-change", _text_attack("pwws", max_change=2.0), BadInput, r"max_change must be"),
    (
        "text-min-similarity",
        _text_attack("deepwordbug", min_similarity=-1.0),
        BadInput,
        r"min_similarity must be",
    ),
    ("text-no-texts", _text_run([], torch.tensor([])), BadInput, r"texts is empty"),
    (
        "text-labels-count",
        _text_run(["good film", "bad film"], torch.tensor([0])),
        BadInput,
        r"one label per text: 2 texts, 1 labels",
    ),
    (
        "text-not-strings",
        _text_run([1, 2], torch.tensor([0, 1])),
        BadInput,
        r"texts must all be strings",
    ),
    (
        "text-data-unknown",
        lambda c: __import__("adversa.text", fromlist=["x"]).load_text_data("movie-reviewz"),
        UnknownName,
        r"'movie-reviewz'",
    ),
]

CASES = THREAT + MODEL + ATTACKS + EVALUATE + TRAIN + DATA + POISONING + CERTIFY + PRIVACY + OTHER


def test_catalogue_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("call", "error", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_raises_a_named_adversa_error(call, error, pattern, ctx):
    with pytest.raises(AdversaError) as info:
        call(ctx)
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
    first_line = str(info.value).strip().splitlines()[0]  # all the command line shows
    assert re.search(pattern, first_line), f"{pattern!r} not in: {first_line}"


def test_catalogue_size():
    """The issue asks for at least 150 cases; the API alone has more than 150."""
    assert len(CASES) >= 150


def test_a_model_returning_a_tuple_is_never_an_untyped_error(ctx):
    """Its logits are taken by the documented rule, or it is refused with an AdversaError."""
    with contextlib.suppress(AdversaError):
        adversa.evaluate(TupleOutput(ctx["net"]), ctx["x"], ctx["y"], ctx["threat"], ["fgsm"])
