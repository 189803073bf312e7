"""Bad arguments to the library's entry points raise the `AdversaError` tree with a message
naming the argument, the value and the expectation (issue 13, section 2): `ThreatModel`,
`Model` and its output rule, the model/data check every command runs first, `make_generator`,
`get_attack`, `evaluate`, `TrainConfig` and `train`; plus the training bounds check and the
NaN-logits refusal (section 3)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import adversa
from adversa import Model, ThreatModel, get_attack, list_attacks
from adversa.defenses import DEFENSES
from adversa.errors import AdversaError, BadInput, BoundsError, ShapeError
from adversa.model import check_model_accepts
from adversa.rng import make_generator
from adversa.train.config import TrainConfig
from adversa.train.loop import train


def _net() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


NET = _net()
DIGITS = load_digits()
X = torch.tensor(DIGITS.data[:8] / 16.0, dtype=torch.float32)
Y = torch.tensor(DIGITS.target[:8], dtype=torch.long)
LINF = ThreatModel(norm="linf", eps=0.1)
L2 = ThreatModel(norm="l2", eps=0.5)


class _Wrap(nn.Module):
    """NET with its output passed through `out(logits, x)`."""

    def __init__(self, out) -> None:
        super().__init__()
        self.net = NET
        self.out = out

    def forward(self, x: torch.Tensor):
        return self.out(self.net(x), x)


class _Raise(nn.Module):
    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.exc


class _MixedDtype(nn.Module):
    """A float32 layer behind a float64 buffer: a dtype clash inside the model."""

    def __init__(self) -> None:
        super().__init__()
        self.net = NET
        self.register_buffer("scale", torch.ones(64, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale)


@dataclasses.dataclass
class _ModelOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


def _tm(**kw):
    return lambda: ThreatModel(**{"norm": "linf", "eps": 0.1, **kw})


def _model(**kw):
    return lambda: Model(kw.pop("module", NET), **kw)


def _accepts(module: nn.Module, x: torch.Tensor = X, **kw):
    return lambda: check_model_accepts(Model(module, **kw), x, data="--data digits")


def _evaluate(model=NET, x=X, y=Y, threat=LINF, attacks=("fgsm",), **kw):
    return lambda: adversa.evaluate(model, x, y, threat, list(attacks), **kw)


def _sweep(eps_values, **kw):
    return lambda: adversa.evaluate_sweep(NET, X, Y, LINF, eps_values, ["fgsm"], **kw)


def _tc(**kw):
    return lambda: TrainConfig(**{"data": "digits", "arch": "mlp", **kw})


def _train(**kw):
    config = TrainConfig(data="digits", arch="mlp", epochs=1, final_eval=(), train_size=64)
    return lambda: train(config, **kw)


def _partial_nan(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """NaN logits on the inputs whose first pixel is 0 but not on the first input."""
    nan = torch.zeros_like(logits[:, :1])
    nan[1:4] = float("nan")
    return logits + nan


CASES = [
    # ThreatModel: every field type-checked, nothing silently coerced
    (
        "threat-targeted-string",
        _tm(targeted="no"),
        BadInput,
        r"targeted must be True or False, got 'no'",
    ),
    ("threat-targeted-int", _tm(targeted=1), BadInput, r"targeted must be True or False, got 1"),
    (
        "threat-bounds-string",
        _tm(bounds="01"),
        BadInput,
        r"bounds must be a pair \(lo, hi\) of numbers, got '01'",
    ),
    (
        "threat-bounds-three",
        _tm(bounds=(0, 0.5, 1)),
        BadInput,
        r"bounds must be a pair .*\(0, 0\.5, 1\)",
    ),
    ("threat-bounds-none-inside", _tm(bounds=(0, None)), BadInput, r"bounds must be a pair"),
    ("threat-bounds-string-inside", _tm(bounds=(0, "1")), BadInput, r"bounds must be a pair"),
    ("threat-bounds-bool", _tm(bounds=(False, True)), BadInput, r"bounds must be a pair"),
    ("threat-bounds-scalar", _tm(bounds=1.0), BadInput, r"bounds must be a pair .*got 1\.0"),
    ("threat-eps-string", _tm(eps="0.1"), BadInput, r"eps must be a real number >= 0, got '0\.1'"),
    ("threat-eps-none", _tm(eps=None), BadInput, r"eps must be a real number >= 0, got None"),
    ("threat-eps-bool", _tm(eps=True), BadInput, r"eps must be a real number >= 0, got True"),
    (
        "threat-eps-tensor",
        _tm(eps=torch.tensor([0.1, 0.2])),
        BadInput,
        r"eps must be a real number",
    ),
    (
        "threat-norm-list",
        _tm(norm=["linf"]),
        BadInput,
        r"norm must be one of linf, l2, l1, got \['linf'\]",
    ),
    ("threat-norm-none", _tm(norm=None), BadInput, r"norm must be one of .*got None"),
    (
        "threat-with-eps-string",
        lambda: LINF.with_eps("big"),
        BadInput,
        r"eps must be a real number .*'big'",
    ),
    # Model(...)
    (
        "model-string",
        _model(module="net"),
        BadInput,
        r"module must be a torch\.nn\.Module, got 'net'",
    ),
    ("model-none", _model(module=None), BadInput, r"module must be a torch\.nn\.Module, got None"),
    (
        "model-num-classes-zero",
        _model(num_classes=0),
        BadInput,
        r"num_classes must be a positive integer or None, got 0",
    ),
    (
        "model-num-classes-float",
        _model(num_classes=2.5),
        BadInput,
        r"num_classes must be .*got 2\.5",
    ),
    (
        "model-num-classes-bool",
        _model(num_classes=True),
        BadInput,
        r"num_classes must be .*got True",
    ),
    (
        "model-num-classes-string",
        _model(num_classes="10"),
        BadInput,
        r"num_classes must be .*got '10'",
    ),
    ("model-bounds-string", _model(bounds="01"), BadInput, r"bounds must be a pair .*'01'"),
    (
        "model-bounds-reversed",
        _model(bounds=(1.0, 0.0)),
        BadInput,
        r"bounds must be finite with lo < hi",
    ),
    ("model-name-int", _model(name=3), BadInput, r"name must be a string, got 3"),
    # the output rule: anything without logits is refused by name
    (
        "output-dict-without-logits",
        lambda: Model(_Wrap(lambda z, x: {"out": z}))(X),
        BadInput,
        r"returned a dict with keys \['out'\], not logits",
    ),
    (
        "output-tuple-without-tensor",
        lambda: Model(_Wrap(lambda z, x: (1, "a")))(X),
        BadInput,
        r"returned a tuple of 2 items \(int, str\)",
    ),
    (
        "output-none",
        lambda: Model(_Wrap(lambda z, x: None))(X),
        BadInput,
        r"returned a NoneType, not logits",
    ),
    ("output-number", lambda: Model(_Wrap(lambda z, x: 3.0))(X), BadInput, r"returned a float"),
    # check_model_accepts: what the model raised, sorted
    (
        "accepts-linear-features",
        _accepts(NET, X[:, :32]),
        ShapeError,
        r"rejected an input of shape \(32,\) .*--data digits.*mat1 and mat2 .*takes 64 features",
    ),
    (
        "accepts-image-into-mlp",
        _accepts(NET, X.view(8, 1, 8, 8)),
        ShapeError,
        r"shape \(1, 8, 8\).*takes 64 features",
    ),
    (
        "accepts-conv-channels",
        _accepts(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), X.view(8, 1, 8, 8)),
        ShapeError,
        r"channels.*takes 3 channels",
    ),
    (
        "accepts-reshape",
        _accepts(_Wrap(lambda z, x: z.view(-1, 20))),
        ShapeError,
        r"shape '\[-1, 20\]' is invalid",
    ),
    (
        "accepts-rows",
        _accepts(_Wrap(lambda z, x: z.reshape(-1, 5))),
        ShapeError,
        r"returned 2 rows of logits for one input",
    ),
    (
        "accepts-1d-output",
        _accepts(_Wrap(lambda z, x: z.argmax(1))),
        ShapeError,
        r"must return logits of shape \(N, classes\), got shape \(1,\)",
    ),
    (
        "accepts-num-classes",
        _accepts(NET, num_classes=5),
        ShapeError,
        r"returns 10 logits per input, but it was declared with num_classes=5",
    ),
    (
        "accepts-nan",
        _accepts(_Wrap(lambda z, x: z * float("nan"))),
        BadInput,
        r"NaN or infinite logits for the first input of --data digits",
    ),
    ("accepts-dtype", _accepts(_MixedDtype()), BadInput, r"dtype error: .*dtype"),
    ("accepts-empty", _accepts(NET, X[:0]), ShapeError, r"--data digits is an empty batch"),
    (
        "accepts-not-a-batch",
        _accepts(NET, X[0]),
        ShapeError,
        r"must be a batch of shape \(N, \.\.\.\), got \(64,\)",
    ),
    # make_generator
    ("rng-float", lambda: make_generator(1.5), BadInput, r"seed must be an integer, got 1\.5"),
    ("rng-bool", lambda: make_generator(True), BadInput, r"seed must be an integer, got True"),
    ("rng-string", lambda: make_generator("1"), BadInput, r"seed must be an integer, got '1'"),
    ("rng-too-big", lambda: make_generator(2**64), BadInput, r"seed must fit in 64 bits"),
    (
        "rng-device",
        lambda: make_generator(0, "gpu"),
        BadInput,
        r"device must be a torch device .*'gpu'",
    ),
    (
        "rng-device-type",
        lambda: make_generator(0, 0.5),
        BadInput,
        r"device must be a torch\.device or a string",
    ),
    # get_attack and attack configs: the annotations are checked
    (
        "attack-name-int",
        lambda: get_attack(3, LINF),
        BadInput,
        r"attack name must be a string, got 3",
    ),
    (
        "attack-steps-bool",
        lambda: get_attack("pgd", LINF, steps=True),
        BadInput,
        r"attack 'pgd': steps must be an integer, got True",
    ),
    (
        "attack-steps-string",
        lambda: get_attack("pgd", LINF, steps="10"),
        BadInput,
        r"steps must be an integer, got '10'",
    ),
    (
        "attack-random-start",
        lambda: get_attack("pgd", LINF, random_start="no"),
        BadInput,
        r"random_start must be True or False, got 'no'",
    ),
    (
        "attack-step-size",
        lambda: get_attack("pgd", LINF, step_size="big"),
        BadInput,
        r"step_size must be a number or None, got 'big'",
    ),
    (
        "attack-seed-string",
        lambda: get_attack("fgsm", LINF, seed="0"),
        BadInput,
        r"attack 'fgsm': seed must be an integer, got '0'",
    ),
    (
        "attack-seed-float",
        lambda: get_attack("square", LINF, seed=1.0),
        BadInput,
        r"seed must be an integer, got 1\.0",
    ),
    (
        "attack-abort-early",
        lambda: get_attack("cw", L2, abort_early=None),
        BadInput,
        r"abort_early must be True or False, got None",
    ),
    (
        "attack-image-shape",
        lambda: get_attack("square", LINF, image_shape="1x8x8"),
        BadInput,
        r"image_shape must be a tuple or None",
    ),
    ("attack-list-pattern", lambda: list_attacks(3), BadInput, r"pattern must be a string"),
    (
        "attack-registry-name",
        lambda: DEFENSES.get(3),
        BadInput,
        r"defense name must be a string, got 3",
    ),
    # adversa.evaluate / evaluate_sweep
    (
        "evaluate-threat-string",
        _evaluate(threat="linf"),
        BadInput,
        r"threat must be a ThreatModel, got str",
    ),
    (
        "evaluate-attacks-int",
        lambda: adversa.evaluate(NET, X, Y, LINF, 3),
        BadInput,
        r"attacks must be a registry name, an attack object or a list of them, got 3",
    ),
    ("evaluate-seed-string", _evaluate(seed="1"), BadInput, r"seed must be an integer, got '1'"),
    (
        "evaluate-progress",
        _evaluate(progress=3),
        BadInput,
        r"progress must be a callable or None, got 3",
    ),
    (
        "evaluate-checks",
        _evaluate(checks="no"),
        BadInput,
        r"checks must be True or False, got 'no'",
    ),
    (
        "evaluate-check-masking",
        _evaluate(check_masking=1),
        BadInput,
        r"check_masking must be True or False, got 1",
    ),
    (
        "evaluate-batch-size-float",
        _evaluate(batch_size=2.0),
        BadInput,
        r"batch_size must be a positive integer, got 2\.0",
    ),
    ("evaluate-shape", _evaluate(x=X[:, :32]), ShapeError, r"rejected an input of shape \(32,\)"),
    (
        "evaluate-nan-some",
        _evaluate(model=_Wrap(_partial_nan)),
        BadInput,
        r"NaN or infinite logits for 3 of 8 inputs",
    ),
    (
        "evaluate-nan-all",
        _evaluate(model=_Wrap(lambda z, x: z * float("inf"))),
        BadInput,
        r"NaN or infinite logits",
    ),
    (
        "evaluate-dict-output",
        _evaluate(model=_Wrap(lambda z, x: {"scores": z})),
        BadInput,
        r"returned a dict with keys \['scores'\]",
    ),
    ("sweep-eps-scalar", _sweep(0.1), BadInput, r"eps_values must be a list of numbers, got 0\.1"),
    (
        "sweep-eps-string",
        _sweep("0.1"),
        BadInput,
        r"eps_values must be a list of numbers, got '0\.1'",
    ),
    ("sweep-eps-entry", _sweep([0.1, "a"]), BadInput, r"eps_values must hold numbers, got 'a'"),
    # TrainConfig and train(...)
    (
        "train-momentum",
        _tc(momentum="x"),
        BadInput,
        r"training config: momentum must be a number, got 'x'",
    ),
    (
        "train-weight-decay",
        _tc(weight_decay=None),
        BadInput,
        r"weight_decay must be a number, got None",
    ),
    ("train-optimizer", _tc(optimizer=["adam"]), BadInput, r"optimizer must be a string"),
    (
        "train-arch-list",
        _tc(arch=["mlp"]),
        BadInput,
        r"arch must be an architecture name, got \['mlp'\]",
    ),
    (
        "train-final-eval-string",
        _tc(final_eval="pgd"),
        BadInput,
        r"final_eval must be a tuple, got 'pgd'",
    ),
    (
        "train-final-eval-entry",
        _tc(final_eval=(3,)),
        BadInput,
        r"final_eval must hold attack names, got 3",
    ),
    ("train-eval-eps", _tc(eval_eps="1"), BadInput, r"eval_eps must be a number or None, got '1'"),
    ("train-test-data", _tc(test_data=3), BadInput, r"test_data must be a string or None, got 3"),
    ("train-lr-bool", _tc(lr=True), BadInput, r"lr must be a finite number > 0, got True"),
    (
        "train-bounds-string",
        _tc(bounds="01"),
        BadInput,
        r"bounds must be a tuple or None, got '01'",
    ),
    (
        "train-bounds-vs-defense",
        _tc(bounds=(0, 16), defense=DEFENSES.get("pgd-at", eps=0.1)),
        BadInput,
        r"bounds \(0\.0, 16\.0\) differ from the bounds \(0\.0, 1\.0\) of defense 'pgd-at'",
    ),
    (
        "train-from-dict-list",
        lambda: TrainConfig.from_dict([1]),
        BadInput,
        r"training config must be a mapping",
    ),
    (
        "train-from-dict-options",
        lambda: TrainConfig.from_dict({"data": "digits", "arch": "mlp", "defense_options": 3}),
        BadInput,
        r"defense_options must be a mapping, got 3",
    ),
    (
        "train-config-dict",
        lambda: train({"data": "digits"}),
        BadInput,
        r"config must be a TrainConfig, got dict",
    ),
    ("train-resume", _train(resume="yes"), BadInput, r"resume must be True or False, got 'yes'"),
    ("train-device", _train(device="gpu"), BadInput, r"device must be a torch device .*'gpu'"),
    (
        "train-progress",
        _train(progress="bar"),
        BadInput,
        r"progress must be a callable or None, got 'bar'",
    ),
    ("train-out-dir", _train(out_dir=3), BadInput, r"out_dir must be a path or None, got 3"),
]


@pytest.mark.parametrize(
    ("call", "exc", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_raises_a_named_adversa_error(call, exc, match):
    with pytest.raises(exc, match=match) as info:
        call()
    assert isinstance(info.value, AdversaError)
    assert "\n" not in str(info.value), "one line"


def test_case_ids_are_unique_and_many():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40


# What is accepted: numpy scalars, numpy bools and arrays are numbers, bools and pairs.


def test_numpy_values_are_accepted():
    threat = ThreatModel(
        norm="l2", eps=np.float32(0.5), bounds=np.array([0.0, 1.0]), targeted=np.bool_(False)
    )
    assert threat.eps == 0.5 and threat.bounds == (0.0, 1.0) and threat.targeted is False
    assert Model(NET, num_classes=np.int64(10), bounds=[0, 1]).bounds == (0.0, 1.0)
    assert make_generator(np.int64(3)).initial_seed() == 3
    result = adversa.evaluate_sweep(
        NET, X, Y, LINF, torch.tensor([0.0, 0.1]), ["fgsm"], batch_size=np.int64(4)
    )
    assert [r.eps for r in result] == pytest.approx([0.0, 0.1])


# The output rule: .logits, then the first tensor, with one warning.


@pytest.mark.parametrize(
    ("out", "taken"),
    [
        (lambda z, x: (z, x), "element 0"),
        (lambda z, x: [None, z], "element 1"),
        (lambda z, x: {"logits": z, "hidden": x}, "its 'logits' entry"),
        (lambda z, x: _ModelOutput(loss=None, logits=z), "its .logits"),
    ],
    ids=["tuple", "list-after-none", "dict", "model-output"],
)
def test_non_tensor_outputs_give_their_logits_with_one_warning(out, taken, caplog):
    model = Model(_Wrap(out), name="wrapped")
    with caplog.at_level(logging.WARNING, logger="adversa.model.wrapped"):
        first, second = model(X), model(X)
    assert torch.equal(first, NET(X)) and torch.equal(second, NET(X))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, "warned once per model"
    assert "model 'wrapped' returned" in warnings[0] and taken in warnings[0]


def test_evaluate_reads_a_tuple_model_like_its_logits():
    plain = adversa.evaluate(NET, X, Y, LINF, ["fgsm"], checks=False)
    wrapped = adversa.evaluate(_Wrap(lambda z, x: (z, x)), X, Y, LINF, ["fgsm"], checks=False)
    assert wrapped.clean_accuracy == plain.clean_accuracy
    assert wrapped.robust_accuracy == plain.robust_accuracy


# check_model_accepts does not turn every error into a shape error.


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"),
        ZeroDivisionError("division by zero"),
        KeyError("layer4"),
        RuntimeError("something unrelated went wrong"),
    ],
    ids=["cuda-oom", "cpu-oom", "zero-division", "key-error", "unknown-runtime"],
)
def test_internal_errors_propagate_unchanged(exc):
    with pytest.raises(type(exc)) as info:
        check_model_accepts(Model(_Raise(exc)), X)
    assert not isinstance(info.value, AdversaError)


def test_torchscript_shape_errors_name_the_real_line():
    scripted = torch.jit.script(NET)
    with pytest.raises(ShapeError, match=r"mat1 and mat2 shapes cannot be multiplied"):
        check_model_accepts(Model(scripted), X[:, :32])


def test_attacks_check_the_model_even_when_num_classes_is_known():
    model = Model(NET, num_classes=10)
    with pytest.raises(ShapeError, match=r"rejected an input of shape \(32,\)"):
        get_attack("pgd", LINF, steps=2)(model, X[:, :32], Y)


# Training checks its data against the declared bounds, as the evaluation does.


@pytest.fixture(scope="module")
def scaled_npz(tmp_path_factory: pytest.TempPathFactory) -> str:
    """200 digits in their raw 0-16 range."""
    path = tmp_path_factory.mktemp("scaled") / "scaled.npz"
    np.savez(path, x=DIGITS.data[:200].astype(np.float32), y=DIGITS.target[:200])
    return str(path)


def _config(data: str, **kw) -> TrainConfig:
    return TrainConfig(data=data, arch="mlp", epochs=1, final_eval=(), **kw)


@pytest.mark.parametrize(
    "defense",
    [None, DEFENSES.get("pgd-at", eps=0.1, steps=1)],
    ids=["none", "pgd-at"],
)
def test_training_refuses_data_outside_the_declared_bounds(scaled_npz, defense, tmp_path):
    options = {} if defense is None else {"defense": defense}
    out = tmp_path / "run"
    with pytest.raises(
        BoundsError,
        match=r"training data 'scaled' has values in \[0, 16\], outside the declared bounds "
        r"\[0\.0, 1\.0\]; .*--bounds LO,HI",
    ):
        train(_config(scaled_npz, **options), out)
    assert not out.exists(), "refused before the run directory is touched"


def test_training_with_declared_bounds_records_them(scaled_npz):
    result = train(_config(scaled_npz, bounds=(0, 16)))
    assert result.card["bounds"] == [0.0, 16.0]
    defense = DEFENSES.get("pgd-at", eps=0.5, steps=1, bounds=(0.0, 16.0))
    result = train(_config(scaled_npz, defense=defense))
    assert result.card["bounds"] == [0.0, 16.0]
