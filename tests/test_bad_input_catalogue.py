"""The bad-input catalogue of the command line: every subcommand, each of its options given
something wrong, must exit 2 with one line on stderr that names the offending argument or
value, never a traceback, and must not write a report.

Each case is (id, argv, pattern). argv is a shell-like string in which `<name>` stands for a
file or directory of the module-scoped `assets` fixture (tiny: 64 digits, a small MLP) or
for `<out>`, a fresh output directory of the test. Options appended after a subcommand's base
command line override the base's (argparse keeps the last value), so each case reads as "the
base command, plus one mistake". A test per subcommand checks that the base itself succeeds,
so that every refusal is the mistake's doing.

Messages: an `AdversaError` prints exactly `adversa: error: <message>`; an argparse usage error
prints argparse's usage lines and then `adversa <command>: error: <message>`; `pattern` is
searched (as a regular expression) in that last line. The public Python API has its own
catalogue in tests/test_bad_input_catalogue_api.py.
"""

from __future__ import annotations

import re
import shlex
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NaNOutput, TupleOutput
from sklearn.datasets import load_digits
from torch import nn

from adversa.cli.main import main

N = 64  # points in the test files

# --------------------------------------------------------------------------------------------
# assets


def _script(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():  # torch deprecates TorchScript; users still hand it to us
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), path)


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


def _run(command: str) -> None:
    code = main(shlex.split(command))
    assert code == 0, f"building an asset failed: adversa {command}"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every file and directory the cases name, built once (about a second)."""
    root = tmp_path_factory.mktemp("catalogue")
    digits = load_digits()
    x = (digits.data[:N] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target[:N].astype(np.int64)
    p: dict[str, Path] = {}

    def path(name: str, filename: str | None = None) -> Path:
        p[name] = root / (filename or name)
        return p[name]

    # data files
    np.savez(path("data", "data.npz"), x=x, y=y)
    np.savez(path("flat", "flat.npz"), x=x.reshape(N, -1)[:, :32], y=y)
    np.savez(path("scaled", "scaled.npz"), x=x * 16, y=y)
    np.savez(path("labels", "labels.npz"), x=x, y=y + 10)
    with_nan = x.copy()
    with_nan[3, 0, 2, 2] = np.nan
    np.savez(path("nan", "nan.npz"), x=with_nan, y=y)
    np.savez(path("odd", "odd.npz"), x=x[:, :, :7, :7], y=y)
    np.savez(path("empty", "empty.npz"))
    np.savez(path("emptyx", "emptyx.npz"), x=x[:0], y=y[:0])
    np.savez(path("nox", "nox.npz"), a=x, y=y)
    np.savez(path("mismatch", "mismatch.npz"), x=x, y=y[:10])
    np.savez(path("floaty", "floaty.npz"), x=x, y=y + 0.5)
    np.savez(path("negy", "negy.npz"), x=x, y=y - 1)
    np.savez(path("strx", "strx.npz"), x=np.full((N, 4), "a"), y=y)
    np.savez(path("objx", "objx.npz"), x=np.array([{"a": 1}] * N, dtype=object), y=y)
    path("notnpz", "notnpz.npz").write_bytes(b"this is not an npz archive")
    path("notes", "notes.txt").write_text("some notes\n")
    rng = np.random.default_rng(0)
    rows = ["f0,f1,f2,f3,label"] + [
        ",".join(f"{v:.3f}" for v in rng.random(4)) + f",{i % 2}" for i in range(40)
    ]
    path("csv", "data.csv").write_text("\n".join(rows) + "\n")
    path("badcsv", "bad.csv").write_text("f0,f1,label\n0.1,abc,0\n0.2,0.3,1\n")
    texts = ["a good fine great film", "a bad awful dull film"]
    lines = ["text,label"] + [f"{texts[i % 2]} number {i},{i % 2}" for i in range(40)]
    path("text", "text.csv").write_text("\n".join(lines) + "\n")
    lines = ["text,label"] + [f"{texts[0]} number {i},0" for i in range(20)]
    path("onetext", "onetext.csv").write_text("\n".join(lines) + "\n")
    # image folders
    for i in range(6):
        _png(root / "oneclass" / "cat" / f"{i}.png", x[i, 0] * 255)
        _png(root / "sizes" / str(i % 2) / f"{i}.png", np.zeros((8 + i % 2, 8)))
    p["oneclass"], p["sizes"] = root / "oneclass", root / "sizes"
    (root / "noimages" / "cat").mkdir(parents=True)
    (root / "noimages" / "cat" / "readme.txt").write_text("no images here\n")
    p["noimages"] = root / "noimages"
    (root / "badimage" / "0").mkdir(parents=True)
    (root / "badimage" / "0" / "a.png").write_bytes(b"not a png")
    (root / "badimage" / "1").mkdir(parents=True)
    (root / "badimage" / "1" / "b.png").write_bytes(b"not a png")
    p["badimage"] = root / "badimage"
    # models
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    _script(net, path("script", "model.pt"))
    _script(TupleOutput(net), path("tuple", "tuple.pt"))
    _script(NaNOutput(net), path("nanmodel", "nanmodel.pt"))
    torch.save(net.state_dict(), path("weights", "weights.pt"))
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(32, 10)).state_dict(), path("wrongw", "w.pt"))
    torch.save([1, 2, 3], path("notdict", "notdict.pt"))
    path("garbage", "garbage.pt").write_bytes(b"this is not a model")
    path("factory", "net.py").write_text(
        "from torch import nn\n\n\n"
        "def make():\n"
        "    layers = [nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)]\n"
        "    return nn.Sequential(*layers)\n\n\n"
        "def number():\n    return 3\n\n\n"
        "def boom():\n    raise RuntimeError('factory failed')\n\n\n"
        "class Pair(nn.Sequential):\n"
        "    def forward(self, x):\n        logits = super().forward(x)\n"
        "        return logits, logits\n\n\n"
        "def pair():\n    return Pair(*make())\n\n\n"
        "CONSTANT = 1\n"
    )
    path("broken", "broken.py").write_text("def make(:\n")
    path("joblib", "model.joblib").write_bytes(b"not read without --trust-model-file")
    with zipfile.ZipFile(path("pt2", "model.pt2"), "w") as archive:
        archive.writestr("model/archive_format", "pt2")
    (root / "nocard").mkdir()
    p["nocard"] = root / "nocard"
    path("textmodel", "textmodel.bin").write_bytes(b"not a text model")
    # constraints
    path("c_list", "c_list.json").write_text("[1, 2]")
    path("c_nonnum", "c_nonnum.json").write_text('{"lower": {"f0": "abc"}}')
    path("c_badjson", "c_badjson.json").write_text("{not json")
    path("c_unknown", "c_unknown.json").write_text('{"frozen": ["f0"]}')
    path("c_feature", "c_feature.json").write_text('{"immutable": ["nope"]}')
    # outputs of other commands
    p["run"] = root / "run"
    p["pois"], p["flip"] = root / "pois", root / "flip"
    _run(f"train --data {p['data']} --arch mlp --epochs 1 --final-eval none --out {p['run']}")
    _run(
        f"poison --data {p['data']} --attack badnets --rate 0.1 --target-class 0 --out {p['pois']}"
    )
    _run(f"poison --data {p['data']} --attack label-flip --rate 0.1 --out {p['flip']}")
    p["poisoned"] = p["pois"] / "poisoned.npz"
    p["badmanifest"] = root / "badmanifest"
    shutil.copytree(p["pois"], p["badmanifest"])
    (p["badmanifest"] / "manifest.json").write_text("{not json")
    p["badtrigger"] = root / "badtrigger"
    shutil.copytree(p["pois"], p["badtrigger"])
    (p["badtrigger"] / "trigger.npz").write_bytes(b"not an npz archive")
    p["report_badjson"] = root / "report_badjson"
    p["report_badjson"].mkdir()
    (p["report_badjson"] / "report.json").write_text("{not json")
    p["report_list"] = root / "report_list"
    p["report_list"].mkdir()
    (p["report_list"] / "report.json").write_text("[]")
    p["report_other"] = root / "report_other"
    p["report_other"].mkdir()
    (p["report_other"] / "report.json").write_text('{"hello": 1}')
    path("file", "a_file.txt").write_text("an existing file, not a directory\n")
    p["under_file"] = p["file"] / "out"
    return {name: str(value) for name, value in p.items()}


def _argv(template: str, assets: dict[str, str], out: Path) -> list[str]:
    def fill(token: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "out":
                return str(out)
            if name == "missing":
                return str(out.parent / "missing" / "nothing.npz")
            return assets[name]

        return re.sub(r"<(\w+)>", one, token)

    return [fill(t) for t in shlex.split(template)]


def _message(code: int, err: str) -> str:
    """The line of stderr that carries the refusal, after checking the refusal's form."""
    assert code == 2, f"exit {code}, expected 2; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "exit 2 without a message"
    if lines[0].startswith("usage:"):  # argparse
        assert re.match(r"adversa( [\w-]+)?: error: ", lines[-1]), err
        return lines[-1]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("adversa: error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------------
# base command lines: each succeeds (test_base_commands_succeed)

EV = (
    "evaluate --model <script> --data <data> --norm linf --eps 0.1 --attacks fgsm --n 4 --out <out>"
)
RF = "train-reformer --data <data> --epochs 1 --n 8 --width 4 --out <out>"
TR = "train --data <data> --arch mlp --epochs 1 --final-eval none --out <out>"
FACTORY = "--model <factory>:make --weights <weights>"
CE = f"certify {FACTORY} --data <data> --method ibp --eps 0.01 --n-points 4 --out <out>"
SM = (
    f"certify {FACTORY} --data <data> --method smoothing --sigma 0.25 --n0 10 --samples 20 "
    "--n 2 --out <out>"
)
PO = "poison --data <data> --attack badnets --rate 0.1 --target-class 0 --out <out>"
BE = "backdoor-eval --model <script> --backdoor <pois> --data <data>"
IN = f"inspect-data --data <poisoned> {FACTORY} --detector spectral"
TX = "text-attack --data <text> --attacks deepwordbug --n 2 --out <out>"
PR = "privacy --model <run> --attack threshold --n 8 --out <out>"
PF = "privacy --model <script> --data <data> --attack threshold --n 8 --out <out>"
IV = "invert --model <script> --data <data> --classes 0 --init zeros --steps 2 --out <out>"
PD = "privacy-defense --data digits --defenses none --members 10 --epochs 1 --out <out>"
CM = "compare <run> --out <out>"

BASES = {
    "evaluate": EV,
    "train-reformer": RF,
    "train": TR,
    "certify-ibp": CE,
    "certify-smoothing": SM,
    "poison": PO,
    "backdoor-eval": BE,
    "inspect-data": IN,
    "privacy": PR,
    "privacy-file-model": PF,
    "invert": IV,
    "compare": CM,
    "privacy-defense": PD,
    "text-attack": TX,
    "list": "list attacks",
}

# --------------------------------------------------------------------------------------------
# the catalogue: (id, argv, pattern the message must match)

OUT_CASES = [
    # --out must be a directory that can be created, checked before any work
    (f"{cmd}-out-is-a-file", f"{base} --out <file>", r"--out .*a_file\.txt")
    for cmd, base in (("evaluate", EV), ("certify", CE), ("poison", PO), ("train", TR))
] + [
    (f"{cmd}-out-under-a-file", f"{base} --out <under_file>", r"--out .*a_file\.txt")
    for cmd, base in (("evaluate", EV), ("certify", CE), ("poison", PO), ("train", TR))
]

EVALUATE = [
    # eps
    ("evaluate-eps-negative", f"{EV} --eps -0.1", r"eps must be >= 0, got -0\.1"),
    ("evaluate-eps-nan", f"{EV} --eps nan", r"--eps must be finite, got 'nan'"),
    ("evaluate-eps-inf", f"{EV} --eps inf", r"--eps must be finite, got 'inf'"),
    ("evaluate-eps-word", f"{EV} --eps abc", r"--eps: cannot read 'abc'"),
    ("evaluate-eps-division-by-zero", f"{EV} --eps 1/0", r"--eps: cannot read '1/0'"),
    ("evaluate-eps-empty-item", f"{EV} --eps 0.1,,0.2", r"--eps: cannot read ''"),
    ("evaluate-eps-sweep-negative", f"{EV} --eps 0.1,-0.2", r"eps must be >= 0, got -0\.2"),
    ("evaluate-eps-beyond-linf-bounds", f"{EV} --eps 1.5", r"eps=1\.5 is larger than the bounds"),
    (
        "evaluate-eps-beyond-l2-bounds",
        f"{EV} --norm l2 --eps 9",
        r"eps=9(\.0)? is larger than the bounds allow",
    ),
    ("evaluate-eps-missing", f"{EV} --eps", r"argument --eps: expected one argument"),
    # norm and attacks
    ("evaluate-norm-unknown", f"{EV} --norm l3", r"argument --norm: invalid choice: 'l3'"),
    ("evaluate-attack-unknown", f"{EV} --attacks fgsm,pgdd", r"unknown attack 'pgdd'"),
    ("evaluate-attacks-empty", f"{EV} --attacks ,", r"--attacks must name at least one attack"),
    (
        "evaluate-attack-wrong-norm",
        f"{EV} --norm l1 --eps 1 --attacks deepfool",
        r"deepfool.*l1|l1.*deepfool",
    ),
    ("evaluate-transfer-no-surrogate", f"{EV} --attacks transfer", r"needs --surrogate"),
    (
        "evaluate-surrogate-missing",
        f"{EV} --attacks transfer --surrogate <missing>",
        r"nothing\.npz: no such file",
    ),
    # counts
    ("evaluate-n-zero", f"{EV} --n 0", r"--n \(--n-points\) must be >= 1, got 0"),
    ("evaluate-n-negative", f"{EV} --n -3", r"--n \(--n-points\) must be >= 1, got -3"),
    ("evaluate-n-word", f"{EV} --n all", r"argument --n/--n-points: invalid int value: 'all'"),
    ("evaluate-n-float", f"{EV} --n 2.5", r"argument --n/--n-points: invalid int value: '2\.5'"),
    ("evaluate-batch-size-zero", f"{EV} --batch-size 0", r"--batch-size must be >= 1, got 0"),
    ("evaluate-batch-size-negative", f"{EV} --batch-size -8", r"--batch-size must be >= 1"),
    ("evaluate-steps-zero", f"{EV} --steps 0", r"--steps must be >= 1, got 0"),
    ("evaluate-steps-negative", f"{EV} --steps -1", r"--steps must be >= 1, got -1"),
    ("evaluate-seed-word", f"{EV} --seed x", r"argument --seed: invalid int value: 'x'"),
    (
        "evaluate-seed-too-small",
        f"{EV} --seed {-(2**63)}",
        r"--seed must be an integer between -2\*\*62 and 2\*\*62, got -9223372036854775808",
    ),
    ("evaluate-seed-too-big", f"{EV} --seed {2**64}", r"--seed must be .*got 18446744073709551616"),
    ("evaluate-eot-zero", f"{EV} --eot 0", r"--eot must be >= 1, got 0"),
    ("evaluate-device-unknown", f"{EV} --device tpu", r"--device must be cpu or cuda.*'tpu'"),
    ("evaluate-bpda-unknown", f"{EV} --bpda zero", r"argument --bpda: invalid choice: 'zero'"),
    ("evaluate-certify-unknown", f"{EV} --certify lp", r"argument --certify: invalid choice"),
    # bounds
    ("evaluate-bounds-one-number", f"{EV} --bounds 0", r"--bounds must be LO,HI.*'0'"),
    ("evaluate-bounds-three-numbers", f"{EV} --bounds 0,1,2", r"--bounds must be LO,HI"),
    ("evaluate-bounds-words", f"{EV} --bounds a,b", r"--bounds must be LO,HI.*'a,b'"),
    ("evaluate-bounds-reversed", f"{EV} --bounds 1,0", r"bounds must be finite with lo < hi"),
    ("evaluate-bounds-infinite", f"{EV} --bounds 0,inf", r"bounds must be finite"),
    ("evaluate-bounds-nan", f"{EV} --bounds nan,1", r"bounds must be finite"),
    ("evaluate-bounds-too-narrow", f"{EV} --bounds 0.2,0.8", r"outside the declared bounds"),
    # `--bounds -1,1` is read as the option's value
    ("evaluate-bounds-negative-lo", f"{EV} --bounds -1,1 --eps 3", r"eps=3(\.0)? is larger"),
    # data
    ("evaluate-data-missing-file", f"{EV} --data <missing>", r"nothing\.npz: no such file"),
    ("evaluate-data-unknown-name", f"{EV} --data mnistt", r"unknown dataset 'mnistt'"),
    ("evaluate-data-not-npz", f"{EV} --data <notnpz>", r"notnpz\.npz: not a readable \.npz"),
    ("evaluate-data-npz-without-x", f"{EV} --data <nox>", r"nox\.npz.*\bx\b"),
    ("evaluate-data-npz-y-length", f"{EV} --data <mismatch>", r"mismatch\.npz: y must have shape"),
    ("evaluate-data-npz-float-labels", f"{EV} --data <floaty>", r"floaty\.npz: labels must be"),
    ("evaluate-data-npz-negative-labels", f"{EV} --data <negy>", r"negy\.npz: labels must be >= 0"),
    ("evaluate-data-npz-string-x", f"{EV} --data <strx>", r"strx\.npz: x must be numeric"),
    ("evaluate-data-npz-object-x", f"{EV} --data <objx>", r"objx\.npz: .*pickle"),
    ("evaluate-data-npz-no-points", f"{EV} --data <emptyx>", r"emptyx\.npz: x is empty"),
    ("evaluate-data-npz-no-arrays", f"{EV} --data <empty>", r"empty\.npz: missing array\(s\) x, y"),
    ("evaluate-data-out-of-bounds", f"{EV} --data <scaled>", r"outside the declared bounds"),
    ("evaluate-data-nan", f"{EV} --data <nan>", r"NaN"),
    ("evaluate-data-labels-beyond-model", f"{EV} --data <labels>", r"labels must lie in \[0, 9\]"),
    ("evaluate-data-shape-vs-model", f"{EV} --data <flat>", r"model rejected an input of shape"),
    (
        "evaluate-data-shape-vs-run-dir",
        f"{EV} --model <run> --data <flat>",
        r"model rejected an input of shape \(32,\)",
    ),
    ("evaluate-data-wrong-kind", f"{EV} --data <notes>", r"notes\.txt"),
    ("evaluate-npz-label-column", f"{EV} --label-column y", r"--label-column y: only \.csv"),
    (
        "evaluate-surrogate-weights-alone",
        f"{EV} --surrogate-weights <weights>",
        r"--surrogate-weights .*needs --surrogate",
    ),
    ("evaluate-csv-no-label-column", f"{EV} --data <csv>", r"needs a label column.*--label-column"),
    (
        "evaluate-csv-unknown-label-column",
        f"{EV} --data <csv> --label-column nope",
        r"'nope'",
    ),
    ("evaluate-csv-non-numeric", f"{EV} --data <badcsv> --label-column label", r"bad\.csv"),
    ("evaluate-folder-one-class", f"{EV} --data <oneclass>", r"oneclass: only one class folder"),
    ("evaluate-folder-no-images", f"{EV} --data <noimages>", r"noimages: no images"),
    ("evaluate-folder-mixed-sizes", f"{EV} --data <sizes>", r"sizes"),
    ("evaluate-folder-unreadable-image", f"{EV} --data <badimage>", r"a\.png: not a readable"),
    # model
    ("evaluate-model-missing-file", f"{EV} --model <missing>", r"nothing\.npz: no such file"),
    ("evaluate-model-unknown-name", f"{EV} --model mnist-cnnn", r"unknown model 'mnist-cnnn'"),
    ("evaluate-model-garbage", f"{EV} --model <garbage>", r"garbage\.pt: not a TorchScript"),
    ("evaluate-model-py-no-factory", f"{EV} --model <factory>", r"net\.py: .*FACTORY"),
    ("evaluate-model-factory-missing", f"{EV} --model <factory>:nope", r"net\.py.*nope"),
    ("evaluate-model-factory-not-callable", f"{EV} --model <factory>:CONSTANT", r"CONSTANT"),
    ("evaluate-model-factory-not-module", f"{EV} --model <factory>:number", r"number"),
    ("evaluate-model-factory-raises", f"{EV} --model <factory>:boom", r"boom\(\) raised"),
    ("evaluate-model-syntax-error", f"{EV} --model <broken>:make", r"broken\.py: importing it"),
    ("evaluate-model-py-missing", f"{EV} --model nowhere/net.py:make", r"net\.py: no such file"),
    (
        "evaluate-weights-missing",
        f"{EV} --model <factory>:make --weights <missing>",
        r"nothing\.npz: weights file not found",
    ),
    (
        "evaluate-weights-wrong-shape",
        f"{EV} --model <factory>:make --weights <wrongw>",
        r"w\.pt: state_dict does not",
    ),
    (
        "evaluate-weights-not-state-dict",
        f"{EV} --model <factory>:make --weights <notdict>",
        r"notdict\.pt: does not hold a state_dict",
    ),
    (
        "evaluate-weights-garbage",
        f"{EV} --model <factory>:make --weights <garbage>",
        r"garbage\.pt",
    ),
    ("evaluate-model-directory-without-card", f"{EV} --model <nocard>", r"nocard.*card\.json"),
    ("evaluate-sklearn-untrusted", f"{EV} --model sklearn:<joblib>", r"--trust-model-file"),
    (
        "evaluate-sklearn-trusted-garbage",
        f"{EV} --model sklearn:<joblib> --trust-model-file",
        r"model\.joblib: not a joblib/pickle file",
    ),
    ("evaluate-pt2-untrusted", f"{EV} --model <pt2>", r"--trust-model-file"),
    ("evaluate-model-returns-nan", f"{EV} --model <nanmodel>", r"returned NaN or infinite logits"),
    # input-side defenses and detectors
    ("evaluate-defense-unknown", f"{EV} --defense squeez", r"unknown .*'squeez'"),
    ("evaluate-defense-bad-option", f"{EV} --defense squeeze:bitz=4", r"bitz"),
    ("evaluate-defense-option-type", f"{EV} --defense squeeze:bits=four", r"bits.*'four'"),
    ("evaluate-defense-option-format", f"{EV} --defense squeeze:bits", r"key=value.*'bits'"),
    ("evaluate-defense-empty", f"{EV} --defense +", r"defense spec.*'\+'"),
    (
        "evaluate-defense-trailing-plus",
        f"{EV} --defense squeeze:bits=4+",
        r"'squeeze:bits=4\+' has an empty part",
    ),
    ("evaluate-defense-magnet-no-dir", f"{EV} --defense magnet", r"magnet:dir=DIR"),
    ("evaluate-defense-magnet-bad-dir", f"{EV} --defense magnet:dir=<nocard>", r"nocard"),
    ("evaluate-defense-with-bpda", f"{EV} --defense squeeze --bpda identity", r"--bpda"),
    ("evaluate-defense-squeeze-bits", f"{EV} --defense squeeze:bits=0", r"bits must be .*got 0"),
    ("evaluate-defense-jpeg-quality", f"{EV} --defense jpeg:quality=0", r"quality must be .*got 0"),
    ("evaluate-defense-median-size", f"{EV} --defense median:size=0", r"size must be .*got 0"),
    ("evaluate-defense-noise-sigma", f"{EV} --defense noise:sigma=-1", r"sigma must be .*-1"),
    ("evaluate-defense-smooth-nan", f"{EV} --defense smooth:sigma=nan", r"sigma must be .*nan"),
    ("evaluate-defense-dropout-p", f"{EV} --defense dropout:p=2", r"\bp must be .*got 2"),
    ("evaluate-defense-tvm-weight", f"{EV} --defense tvm:weight=-1", r"weight must be .*-1"),
    ("evaluate-defense-resize-low", f"{EV} --defense resize-pad:low=2", r"low must be .*got 2"),
    ("evaluate-detector-lid-k", f"{EV} --detector lid:k=0", r"\bk must be .*got 0"),
    ("evaluate-detector-unknown", f"{EV} --detector lidd", r"unknown .*'lidd'"),
    (
        "evaluate-detector-fpr-above-one",
        f"{EV} --detector squeeze --detector-fpr 1.5",
        r"--detector-fpr must be in \(0, 1\), got 1\.5",
    ),
    (
        "evaluate-detector-fpr-without-detector",
        f"{EV} --detector-fpr 0.1",
        r"--detector-fpr 0\.1: applies with --detector only",
    ),
    (
        "evaluate-detector-fpr-word",
        f"{EV} --detector squeeze --detector-fpr low",
        r"argument --detector-fpr: invalid float value: 'low'",
    ),
    # constraints and backdoors
    (
        "evaluate-constraints-missing-file",
        f"{EV} --data <csv> --label-column label --constraints <missing>",
        r"--constraints",
    ),
    (
        "evaluate-constraints-on-images",
        f"{EV} --constraints data",
        r"--constraints data: .*declares no constraints",
    ),
    (
        "evaluate-constraints-not-json",
        f"{EV} --data <csv> --label-column label --constraints <c_badjson>",
        r"--constraints .*not valid JSON",
    ),
    (
        "evaluate-constraints-unknown-key",
        f"{EV} --data <csv> --label-column label --constraints <c_unknown>",
        r"--constraints .*frozen",
    ),
    (
        "evaluate-constraints-unknown-feature",
        f"{EV} --data <csv> --label-column label --constraints <c_feature>",
        r"'nope'",
    ),
    (
        "evaluate-constraints-list",
        f"{EV} --data <csv> --label-column label --constraints <c_list>",
        r"--constraints .*JSON object",
    ),
    (
        "evaluate-constraints-non-numeric",
        f"{EV} --data <csv> --label-column label --constraints <c_nonnum>",
        r"--constraints.*'abc'",
    ),
    (
        "evaluate-constraints-inline-string-immutable",
        f"""{EV} --data <csv> --label-column label --constraints '{{"immutable": "f0"}}'""",
        r"immutable",
    ),
    ("evaluate-backdoor-missing", f"{EV} --backdoor <missing>", r"--backdoor .*manifest\.json"),
    ("evaluate-backdoor-no-trigger", f"{EV} --backdoor <flip>", r"--backdoor .*has no trigger"),
    (
        "evaluate-backdoor-corrupt-trigger",
        f"{EV} --backdoor <badtrigger>",
        r"--backdoor .*trigger\.npz: not an \.npz",
    ),
    ("evaluate-backdoor-bad-manifest", f"{EV} --backdoor <badmanifest>", r"manifest\.json"),
    # usage
    (
        "evaluate-missing-out",
        "evaluate --model <script> --data <data> --norm linf --eps 0.1",
        r"required: --out",
    ),
    ("evaluate-unknown-option", f"{EV} --epochs 3", r"unrecognized arguments: --epochs"),
]

TRAIN_REFORMER = [
    ("train-reformer-epochs-zero", f"{RF} --epochs 0", r"epochs must be an integer >= 1, got 0"),
    ("train-reformer-batch-size-zero", f"{RF} --batch-size 0", r"batch_size must be .*>= 1"),
    ("train-reformer-lr-zero", f"{RF} --lr 0", r"lr must be a finite number > 0, got 0"),
    ("train-reformer-lr-nan", f"{RF} --lr nan", r"lr must be a finite number > 0, got nan"),
    ("train-reformer-lr-inf", f"{RF} --lr inf", r"lr must be a finite number > 0, got inf"),
    ("train-reformer-noise-nan", f"{RF} --noise nan", r"noise must be in \[0, 1\], got nan"),
    ("train-reformer-seed", f"{RF} --seed {2**64}", r"--seed must be .*got 18446744073709551616"),
    ("train-reformer-folder-sizes", f"{RF} --data <sizes>", r"all images must have the same size"),
    ("train-reformer-odd-size", f"{RF} --data <odd>", r"pooling needs even H and W.*--no-pool"),
    ("train-reformer-noise-negative", f"{RF} --noise -0.1", r"noise must be in \[0, 1\]"),
    ("train-reformer-noise-word", f"{RF} --noise lots", r"argument --noise: invalid float"),
    ("train-reformer-width-zero", f"{RF} --width 0", r"width must be an integer >= 1, got 0"),
    ("train-reformer-n-zero", f"{RF} --n 0", r"--n \(--n-points\) must be >= 1, got 0"),
    ("train-reformer-device", f"{RF} --device gpu", r"--device must be cpu or cuda"),
    ("train-reformer-tabular-data", f"{RF} --data <csv>", r"data\.csv"),
    ("train-reformer-unknown-data", f"{RF} --data digitz", r"unknown dataset 'digitz'"),
    ("train-reformer-missing-data", f"{RF} --data <missing>", r"nothing\.npz: no such file"),
    ("train-reformer-out-is-a-file", f"{RF} --out <file>", r"--out .*a_file\.txt"),
]

TRAIN = [
    ("train-arch-unknown", f"{TR} --arch resnet", r"unknown architecture 'resnet'"),
    ("train-defense-unknown", f"{TR} --defense pgd-att", r"unknown defense 'pgd-att'"),
    ("train-defense-option-foreign", f"{TR} --eps 0.1", r"has no option eps"),
    ("train-defense-eps-negative", f"{TR} --defense pgd-at --eps -0.1", r"eps must be >= 0"),
    ("train-defense-eps-word", f"{TR} --defense pgd-at --eps x", r"--eps: cannot read 'x'"),
    ("train-defense-eps-sweep", f"{TR} --defense pgd-at --eps 0.1,0.2", r"one eps, got 2"),
    ("train-defense-norm", f"{TR} --defense pgd-at --eps 0.1 --norm l5", r"norm.*'l5'"),
    (
        "train-defense-steps-zero",
        f"{TR} --defense pgd-at --eps 0.1 --steps 0",
        r"steps must be >= 1",
    ),
    ("train-defense-steps-word", f"{TR} --defense pgd-at --steps ten", r"argument --steps"),
    ("train-defense-beta-negative", f"{TR} --defense trades --eps 0.1 --beta -1", r"beta.*-1"),
    ("train-defense-replays-zero", f"{TR} --defense free-at --eps 0.1 --replays 0", r"replays.*0"),
    (
        "train-defense-temperature-zero",
        f"{TR} --defense distillation --temperature 0",
        r"temperature.*0",
    ),
    (
        "train-defense-temperature-nan",
        f"{TR} --defense distillation --temperature nan",
        r"temperature must be .*got nan",
    ),
    ("train-defense-eps-too-big", f"{TR} --defense pgd-at --eps 2", r"eps=2(\.0)? is larger"),
    (
        "train-defense-step-size",
        f"{TR} --defense pgd-at --eps 0.1 --step-size -1",
        r"step_size must be > 0, got -1",
    ),
    (
        "train-defense-step-size-nan",
        f"{TR} --defense pgd-at --eps 0.1 --step-size nan",
        r"step_size must be .*got nan",
    ),
    (
        "train-defense-eps-ramp",
        f"{TR} --defense pgd-at --eps 0.1 --eps-ramp -1",
        r"eps_ramp must be in \[0, 1\]",
    ),
    ("train-defense-lam", f"{TR} --defense igr --lam -1", r"lam must be >= 0, got -1"),
    ("train-defense-mart-beta", f"{TR} --defense mart --eps 0.1 --beta -1", r"beta must be > 0"),
    ("train-defense-trades-beta-nan", f"{TR} --defense trades --eps 0.1 --beta nan", r"beta.*nan"),
    ("train-defense-sigma", f"{TR} --defense gaussian --sigma -1", r"sigma must be .*got -1"),
    ("train-defense-sigma-nan", f"{TR} --defense gaussian --sigma nan", r"sigma must be .*nan"),
    ("train-defense-warmup", f"{TR} --defense ibp --eps 0.1 --warmup -1", r"warmup must be in"),
    ("train-defense-kappa", f"{TR} --defense ibp --eps 0.1 --kappa-start 2", r"kappa_start"),
    (
        "train-defense-beta-start",
        f"{TR} --defense crown-ibp --eps 0.1 --beta-start 2",
        r"beta_start must be in \[0, 1\]",
    ),
    ("train-defense-fast-alpha", f"{TR} --defense fast-at --eps 0.1 --alpha -1", r"alpha must be"),
    (
        "train-defense-kappa-end",
        f"{TR} --defense crown-ibp --eps 0.1 --kappa-end 2",
        r"kappa_end must be in \[0, 1\]",
    ),
    (
        "train-defense-beta-end",
        f"{TR} --defense crown-ibp --eps 0.1 --beta-end -1",
        r"beta_end must be in \[0, 1\]",
    ),
    ("train-epochs-zero", f"{TR} --epochs 0", r"epochs must be an integer >= 1, got 0"),
    ("train-epochs-word", f"{TR} --epochs many", r"argument --epochs: invalid int value"),
    ("train-batch-size-zero", f"{TR} --batch-size 0", r"batch_size must be an integer >= 1"),
    ("train-lr-zero", f"{TR} --lr 0", r"lr must be a finite number > 0, got 0"),
    ("train-lr-nan", f"{TR} --lr nan", r"lr must be a finite number > 0, got nan"),
    ("train-lr-inf", f"{TR} --lr inf", r"lr must be a finite number > 0, got inf"),
    ("train-optimizer-unknown", f"{TR} --optimizer rmsprop", r"argument --optimizer: invalid"),
    ("train-momentum-one", f"{TR} --momentum 1", r"momentum must be in \[0, 1\)"),
    ("train-momentum-nan", f"{TR} --momentum nan", r"momentum must be in \[0, 1\), got nan"),
    ("train-weight-decay-nan", f"{TR} --weight-decay nan", r"weight_decay must be >= 0, got nan"),
    ("train-seed-too-big", f"{TR} --seed {2**63}", r"--seed must be .*9223372036854775808"),
    (
        "train-cnn-on-tabular",
        f"{TR} --arch small-cnn --data <csv> --label-column label",
        r"CNN needs .* inputs, got \(4,\)",
    ),
    (
        "train-eval-eps-inf",
        f"{TR} --final-eval fgsm --eval-eps inf",
        r"--eps must be finite, got 'inf'",
    ),
    ("train-weight-decay-negative", f"{TR} --weight-decay -1", r"weight_decay must be >= 0"),
    ("train-train-size-zero", f"{TR} --train-size 0", r"train_size must be an integer >= 1"),
    ("train-eval-size-zero", f"{TR} --eval-size 0", r"eval_size must be an integer >= 1"),
    ("train-eval-eps-negative", f"{TR} --final-eval fgsm --eval-eps -1", r"eps must be >= 0"),
    (
        "train-eval-eps-without-final-eval",
        f"{TR} --eval-eps 0.1",
        r"--eval-eps 0\.1: .*--final-eval none",
    ),
    ("train-eval-eps-word", f"{TR} --final-eval fgsm --eval-eps big", r"--eps: cannot read 'big'"),
    ("train-final-eval-unknown", f"{TR} --final-eval apgd-cee", r"unknown attack 'apgd-cee'"),
    ("train-final-eval-empty", f"{TR} --final-eval ,", r"--attacks must name at least one"),
    ("train-device", f"{TR} --device npu", r"--device must be cpu or cuda.*'npu'"),
    ("train-resume-and-overwrite", f"{TR} --resume --overwrite", r"not allowed with argument"),
    ("train-data-missing", f"{TR} --data <missing>", r"nothing\.npz: no such file"),
    ("train-data-unknown", f"{TR} --data cifar11", r"unknown dataset 'cifar11'"),
    ("train-data-nan", f"{TR} --data <nan>", r"NaN"),
    (
        "train-data-out-of-bounds",
        f"{TR} --data <scaled>",
        r"'scaled' has values in \[0, 16\], outside the declared",
    ),
    ("train-test-data-missing", f"{TR} --test-data <missing>", r"nothing\.npz: no such file"),
    ("train-test-data-other-shape", f"{TR} --test-data <flat>", r"shape"),
    (
        "train-test-labels-beyond-train",
        f"{TR} --test-data <labels>",
        r"test data 'labels' has labels up to 19, beyond the 10 classes",
    ),
    ("train-csv-no-label-column", f"{TR} --data <csv>", r"--label-column"),
    ("train-npz-label-column", f"{TR} --label-column y", r"--label-column y: only \.csv"),
    ("train-bounds-format", f"{TR} --bounds 0", r"--bounds must be LO,HI"),
    ("train-bounds-reversed", f"{TR} --bounds 1,0", r"bounds must be finite with lo < hi"),
    (
        "train-bounds-too-narrow",
        f"{TR} --bounds 0.2,0.8",
        r"outside the declared bounds \[0\.2, 0\.8\]",
    ),
    ("train-out-holds-another-run", f"{TR} --epochs 2 --out <run_copy>", r"--overwrite"),
]

CERTIFY = [
    ("certify-method-unknown", f"{CE} --method lp", r"argument --method: invalid choice: 'lp'"),
    ("certify-ibp-without-eps", CE.replace(" --eps 0.01", ""), r"--method ibp needs --eps"),
    ("certify-eps-negative", f"{CE} --eps -0.1", r"eps must be >= 0, got -0\.1"),
    ("certify-eps-word", f"{CE} --eps wide", r"--eps: cannot read 'wide'"),
    ("certify-eps-too-large", f"{CE} --eps 2", r"eps=2(\.0)? is larger than the bounds"),
    ("certify-norm-l1", f"{CE} --norm l1", r"argument --norm: invalid choice: 'l1'"),
    ("certify-n-points-zero", f"{CE} --n-points 0", r"--n \(--n-points\) must be >= 1, got 0"),
    ("certify-n-zero-points", f"{CE} --n 0", r"--n \(--n-points\) must be >= 1, got 0"),
    ("certify-batch-size-zero", f"{CE} --batch-size 0", r"--batch-size must be >= 1, got 0"),
    ("certify-eot-zero", f"{CE} --attack-check --eot 0", r"--eot must be >= 1, got 0"),
    ("certify-eot-without-check", f"{CE} --eot 8", r"--eot 8: applies with --attack-check"),
    (
        "certify-attacks-without-check",
        f"{CE} --attacks pgd",
        r"--attacks pgd: applies with --attack-check",
    ),
    ("certify-device", f"{CE} --device tpu", r"--device must be cpu or cuda"),
    ("certify-bounds", f"{CE} --bounds 0;1", r"--bounds must be LO,HI"),
    ("certify-data-missing", f"{CE} --data <missing>", r"nothing\.npz: no such file"),
    ("certify-data-shape", f"{CE} --data <flat>", r"model rejected an input of shape \(32,\)"),
    ("certify-data-labels", f"{CE} --data <labels>", r"labels must lie in \[0, 9\]"),
    ("certify-data-out-of-bounds", f"{CE} --data <scaled>", r"outside the declared bounds"),
    ("certify-data-nan", f"{CE} --data <nan>", r"nan\.npz: x has 1 NaN"),
    ("certify-l2-eps-too-big", f"{CE} --method crown --norm l2 --eps 100", r"eps=100(\.0)? is"),
    ("certify-seed", f"{CE} --seed {-(2**64)}", r"--seed must be .*got -18446744073709551616"),
    ("certify-csv-label-column", f"{CE} --data <csv> --label-column y", r"'y'"),
    ("certify-pt2-untrusted", f"{CE} --model <pt2>", r"--trust-model-file"),
    (
        "certify-sklearn-trusted-garbage",
        f"{CE} --model sklearn:<joblib> --trust-model-file",
        r"model\.joblib: not a joblib/pickle file",
    ),
    ("certify-npz-label-column", f"{CE} --label-column y", r"--label-column y: only \.csv"),
    ("certify-n-points-word", f"{CE} --n-points few", r"argument --n/--n-points: invalid int"),
    ("certify-model-garbage", f"{CE} --model <garbage>", r"garbage\.pt: not a TorchScript"),
    ("certify-attack-unknown", f"{CE} --attack-check --attacks pgdd", r"unknown attack 'pgdd'"),
    ("certify-smoothing-without-sigma", SM.replace(" --sigma 0.25", ""), r"needs --sigma"),
    ("certify-smoothing-linf", f"{SM} --norm linf", r"--method smoothing .*--norm l2"),
    ("certify-sigma-zero", f"{SM} --sigma 0", r"sigma must be .*> 0, got 0"),
    ("certify-sigma-negative", f"{SM} --sigma -1", r"sigma must be .*> 0, got -1"),
    ("certify-sigma-nan", f"{SM} --sigma nan", r"sigma must be .*> 0, got nan"),
    ("certify-sigma-inf", f"{SM} --sigma inf", r"sigma must be .*> 0, got inf"),
    ("certify-smoothing-eps-negative", f"{SM} --eps -1", r"eps must be >= 0, got -1"),
    ("certify-alpha-nan", f"{SM} --alpha nan", r"alpha must be in \(0, 1\), got nan"),
    ("certify-n0-negative", f"{SM} --n0 -1", r"n0 must be an integer >= 1, got -1"),
    ("certify-n0-zero", f"{SM} --n0 0", r"n0 must be an integer >= 1, got 0"),
    ("certify-samples-zero", f"{SM} --samples 0", r"--samples must be >= 1, got 0"),
    ("certify-samples-negative", f"{SM} --samples -5", r"--samples must be >= 1, got -5"),
    ("certify-samples-word", f"{SM} --samples many", r"argument --samples: invalid int"),
    ("certify-alpha-zero", f"{SM} --alpha 0", r"alpha must be in \(0, 1\), got 0"),
    ("certify-alpha-above-one", f"{SM} --alpha 1.5", r"alpha must be in \(0, 1\), got 1\.5"),
]

POISON = [
    ("poison-attack-unknown", f"{PO} --attack badnet", r"unknown poison.*'badnet'"),
    ("poison-rate-zero", f"{PO} --rate 0", r"rate must be in \(0, 1\), got 0"),
    ("poison-rate-one", f"{PO} --rate 1", r"rate must be in \(0, 1\), got 1"),
    ("poison-rate-negative", f"{PO} --rate -0.5", r"rate must be in \(0, 1\), got -0\.5"),
    ("poison-rate-nan", f"{PO} --rate nan", r"rate must be in \(0, 1\), got nan"),
    ("poison-rate-word", f"{PO} --rate half", r"argument --rate: invalid float value: 'half'"),
    ("poison-rate-missing", PO.replace(" --rate 0.1", ""), r"required: --rate"),
    ("poison-target-class-too-big", f"{PO} --target-class 10", r"target_class.*10"),
    ("poison-target-class-negative", f"{PO} --target-class -1", r"target_class.*-1"),
    ("poison-patch-size-zero", f"{PO} --patch-size 0", r"patch_size must be >= 1, got 0"),
    ("poison-patch-size-too-big", f"{PO} --patch-size 9", r"patch_size.*9"),
    ("poison-option-foreign", f"{PO} --alpha 0.5", r"has no option alpha"),
    ("poison-blend-alpha-zero", f"{PO} --attack blend --alpha 0", r"alpha must be in \(0, 1\]"),
    ("poison-blend-alpha-big", f"{PO} --attack blend --alpha 2", r"alpha must be in \(0, 1\]"),
    ("poison-flip-mode", f"{PO} --attack label-flip --mode chaos", r"mode must be one of.*chaos"),
    (
        "poison-flip-random-ignores-target",
        f"{PO} --attack label-flip",
        r"target_class apply to mode 'targeted' only",
    ),
    (
        "poison-flip-source-out-of-range",
        f"{PO} --attack label-flip --mode targeted --source-class 12 --target-class 1",
        r"source_class must be a class .*got 12",
    ),
    ("poison-blend-alpha-nan", f"{PO} --attack blend --alpha nan", r"alpha must be in .*nan"),
    ("poison-clean-label-eps-nan", f"{PO} --attack clean-label --eps nan", r"eps must be .*nan"),
    ("poison-flat-data-badnets", f"{PO} --data <flat>", r"patch trigger needs \(C, H, W\)"),
    ("poison-option-rate-foreign", f"{PO} --attack feature-collision", r"has no option rate"),
    ("poison-seed-too-big", f"{PO} --seed {2**64}", r"--seed must be"),
    (
        "poison-flip-targeted-no-source",
        f"{PO} --attack label-flip --mode targeted",
        r"source_class",
    ),
    (
        "poison-flip-same-classes",
        f"{PO} --attack label-flip --mode targeted --source-class 0",
        r"source_class and target_class are both 0",
    ),
    ("poison-clean-label-eps", f"{PO} --attack clean-label --eps -1", r"eps.*-1"),
    ("poison-csv-no-label-column", f"{PO} --data <csv>", r"--label-column"),
    (
        "poison-tabular-badnets",
        f"{PO} --data <csv> --label-column label",
        r"patch trigger needs \(C, H, W\) images",
    ),
    ("poison-npz-label-column", f"{PO} --label-column y", r"--label-column y: only \.csv"),
    ("poison-data-missing", f"{PO} --data <missing>", r"nothing\.npz: no such file"),
    ("poison-seed-word", f"{PO} --seed one", r"argument --seed: invalid int value: 'one'"),
]

BACKDOOR_EVAL = [
    ("backdoor-eval-dir-missing", f"{BE} --backdoor <missing>", r"--backdoor .*manifest\.json"),
    ("backdoor-eval-no-trigger", f"{BE} --backdoor <flip>", r"--backdoor .*no trigger"),
    ("backdoor-eval-bad-manifest", f"{BE} --backdoor <badmanifest>", r"manifest\.json"),
    (
        "backdoor-eval-corrupt-trigger",
        f"{BE} --backdoor <badtrigger>",
        r"--backdoor .*trigger\.npz: not an \.npz",
    ),
    ("backdoor-eval-model-missing", f"{BE} --model <missing>", r"nothing\.npz: no such file"),
    ("backdoor-eval-model-garbage", f"{BE} --model <garbage>", r"garbage\.pt"),
    ("backdoor-eval-model-unknown", f"{BE} --model mnist-cnnx", r"unknown model 'mnist-cnnx'"),
    (
        "backdoor-eval-weights-missing",
        f"{BE} --model <factory>:make --weights <missing>",
        r"nothing\.npz: weights file not found",
    ),
    ("backdoor-eval-data-missing", f"{BE} --data <missing>", r"nothing\.npz: no such file"),
    (
        "backdoor-eval-data-shape",
        f"{BE} --data <flat>",
        r"model rejected an input of shape \(32,\)",
    ),
    ("backdoor-eval-data-nan", f"{BE} --data <nan>", r"nan\.npz: x has 1 NaN"),
    ("backdoor-eval-data-csv", f"{BE} --data <csv>", r"--label-column"),
    (
        "backdoor-eval-data-out-of-bounds",
        f"{BE} --data <scaled>",
        r"scaled\.npz has values in \[0, 16\], outside the declared",
    ),
    (
        "backdoor-eval-labels-beyond-model",
        f"{BE} --data <labels>",
        r"--data .*labels\.npz: labels must lie in \[0, 9\]",
    ),
    ("backdoor-eval-model-nan", f"{BE} --model <nanmodel>", r"returned NaN or infinite logits"),
    ("backdoor-eval-pt2-untrusted", f"{BE} --model <pt2>", r"--trust-model-file"),
    (
        "backdoor-eval-sklearn-trusted-garbage",
        f"{BE} --model sklearn:<joblib> --trust-model-file",
        r"model\.joblib: not a joblib/pickle file",
    ),
    ("backdoor-eval-no-backdoor", "backdoor-eval --model <script>", r"required: --backdoor"),
]

INSPECT = [
    ("inspect-detector-unknown", f"{IN} --detector spectra", r"unknown poison detector 'spectra'"),
    ("inspect-rate-zero", f"{IN} --rate 0", r"rate.*0"),
    ("inspect-rate-above-one", f"{IN} --rate 1.5", r"rate.*1\.5"),
    ("inspect-rate-negative", f"{IN} --rate -0.1", r"rate.*-0\.1"),
    ("inspect-rate-nan", f"{IN} --rate nan", r"rate must be in \(0, 1\), got nan"),
    ("inspect-loss-rate", f"{IN} --detector loss --rate 2", r"rate must be in \(0, 1\), got 2"),
    (
        "inspect-option-foreign",
        f"{IN} --detector strip --rate 0.1",
        r"--rate 0\.1: applies to spectral, activation-clustering and loss, not strip",
    ),
    (
        "inspect-retrain-epochs-negative",
        f"{IN} --retrain --retrain-epochs -1",
        r"--retrain-epochs must",
    ),
    (
        "inspect-retrain-epochs-without-retrain",
        f"{IN} --retrain-epochs 2",
        r"--retrain-epochs 2: applies with --retrain only",
    ),
    (
        "inspect-retrain-no-trigger",
        f"{IN} --retrain --data <flip>/poisoned.npz",
        r"--data .*flip: label-flip has no trigger",
    ),
    ("inspect-csv-no-label-column", f"{IN} --data <csv>", r"--label-column"),
    ("inspect-seed", f"{IN} --seed {2**64}", r"--seed must be"),
    ("inspect-retrain-epochs-zero", f"{IN} --retrain --retrain-epochs 0", r"--retrain-epochs"),
    ("inspect-retrain-not-poisoned", f"{IN} --data <data> --retrain", r"--retrain needs"),
    (
        "inspect-retrain-bad-manifest",
        f"{IN} --data <badmanifest>/poisoned.npz --retrain",
        r"--data .*manifest\.json is not readable JSON",
    ),
    ("inspect-data-missing", f"{IN} --data <missing>", r"nothing\.npz: no such file"),
    ("inspect-data-shape", f"{IN} --data <flat>", r"model rejected an input of shape \(32,\)"),
    (
        "inspect-labels-beyond-model",
        f"{IN} --detector loss --data <labels>",
        r"--data .*labels\.npz: labels must lie in",
    ),
    ("inspect-model-garbage", f"{IN} --model <garbage>", r"garbage\.pt"),
    ("inspect-pt2-untrusted", f"{IN} --model <pt2>", r"--trust-model-file"),
    ("inspect-out-is-a-file", f"{IN} --out <file>", r"--out .*a_file\.txt"),
]

TEXT = [
    ("text-n-zero", f"{TX} --n 0", r"--n \(--n-points\) must be >= 1, got 0"),
    (
        "text-column-with-builtin",
        "text-attack --data movie-reviews --text-column review --n 2 --out <out>",
        r"--text-column review: applies to a \.csv --data only",
    ),
    ("text-n-negative", f"{TX} --n -2", r"--n \(--n-points\) must be >= 1, got -2"),
    ("text-augment-zero", f"{TX} --augment 0", r"--augment must be >= 1, got 0"),
    ("text-attack-unknown", f"{TX} --attacks pwwz", r"unknown text attack 'pwwz'"),
    ("text-attacks-empty", f"{TX} --attacks ,", r"--attacks must name at least one"),
    ("text-max-change-zero", f"{TX} --max-change 0", r"max_change.*0"),
    ("text-max-change-big", f"{TX} --max-change 1.5", r"max_change.*1\.5"),
    ("text-min-similarity-big", f"{TX} --min-similarity 2", r"min_similarity.*2"),
    ("text-min-similarity-word", f"{TX} --min-similarity high", r"argument --min-similarity"),
    ("text-max-change-nan", f"{TX} --max-change nan", r"max_change must be in \(0, 1\]"),
    ("text-min-similarity-nan", f"{TX} --min-similarity nan", r"min_similarity must be in"),
    ("text-augment-negative", f"{TX} --augment -1", r"--augment must be >= 1, got -1"),
    ("text-save-model-under-file", f"{TX} --save-model <under_file>", r"--save-model .*a_file"),
    ("text-save-model-directory", f"{TX} --save-model <nocard>", r"--save-model .*directory"),
    ("text-csv-without-text", f"{TX} --data <csv>", r"no column 'text'"),
    ("text-data-not-csv", f"{TX} --data <notes>", r"notes\.txt"),
    ("text-model-torchscript", f"{TX} --model <script>", r"model\.pt"),
    ("text-model-directory", f"{TX} --model <nocard>", r"nocard: no such file"),
    ("text-seed", f"{TX} --seed {2**64}", r"--seed must be"),
    ("text-data-missing", f"{TX} --data <missing>", r"nothing\.npz"),
    ("text-data-unknown", f"{TX} --data movie-reviewz", r"'movie-reviewz'"),
    ("text-text-column", f"{TX} --text-column body", r"no column 'body'"),
    ("text-label-column", f"{TX} --label-column class", r"no column 'class'"),
    ("text-one-class", f"{TX} --data <onetext>", r"at least 2 classes"),
    ("text-model-missing", f"{TX} --model <missing>", r"nothing\.npz"),
    ("text-model-garbage", f"{TX} --model <textmodel>", r"textmodel\.bin: refused"),
    ("text-sklearn-untrusted", f"{TX} --model sklearn:<joblib>", r"--trust-model-file"),
    (
        "text-sklearn-trusted-garbage",
        f"{TX} --model sklearn:<joblib> --trust-model-file",
        r"model\.joblib: not a joblib/pickle file",
    ),
    ("text-out-is-a-file", f"{TX} --out <file>", r"--out .*a_file\.txt"),
]

PRIVACY = [
    ("privacy-attack-unknown", f"{PR} --attack liraa", r"liraa"),
    ("privacy-attack-empty", f"{PR} --attack ,", r"attack must be .*got ','"),
    ("privacy-shadows-zero", f"{PR} --shadows 0", r"--shadows must be >= 1, got 0"),
    ("privacy-n-zero", f"{PR} --n 0", r"--n \(--n-points\) must be >= 1, got 0"),
    ("privacy-shadow-steps-zero", f"{PR} --shadow-steps 0", r"--shadow-steps must be >= 1"),
    ("privacy-shadow-hidden-zero", f"{PR} --shadow-hidden 0", r"--shadow-hidden must be >= 1"),
    ("privacy-boundary-queries-zero", f"{PR} --boundary-queries 0", r"--boundary-queries must"),
    ("privacy-boundary-attack", f"{PR} --boundary-attack pgd", r"argument --boundary-attack"),
    ("privacy-fpr-zero", f"{PR} --fpr 0", r"--fpr.*\(0, 1\), got 0"),
    ("privacy-fpr-one", f"{PR} --fpr 0.01,1", r"--fpr.*\(0, 1\), got 1"),
    ("privacy-fpr-word", f"{PR} --fpr low", r"--fpr: cannot read 'low'"),
    ("privacy-fpr-empty", f"{PR} --fpr ,", r"--fpr needs at least one value"),
    ("privacy-fpr-nan", f"{PR} --fpr nan", r"--fpr.*\(0, 1\), got nan"),
    ("privacy-lira-one-shadow", f"{PR} --attack lira --shadows 1", r"must be >= 4 .*got 1"),
    (
        "privacy-boundary-queries-few",
        f"{PR} --attack boundary --boundary-attack hsj --boundary-queries 1",
        r"max_queries must be > init_trials",
    ),
    (
        "privacy-shadow-data-missing",
        f"{PR} --attack shadow --shadow-data <missing>",
        r"nothing\.npz: no such file",
    ),
    ("privacy-csv-no-label-column", f"{PR} --data <csv>", r"--label-column"),
    ("privacy-seed", f"{PR} --seed {2**64}", r"--seed must be"),
    (
        "privacy-recipe-data-shape",
        f"{PR} --data <flat>",
        r"model rejected an input of shape \(32,\)",
    ),
    (
        "privacy-members-labels-beyond-model",
        f"{PR} --members <data> --nonmembers <labels>",
        r"--nonmembers .*labels\.npz: labels must lie in \[0, 9\]",
    ),
    ("privacy-members-alone", f"{PR} --members <data>", r"--members and --nonmembers"),
    ("privacy-members-missing", f"{PR} --members <missing> --nonmembers <data>", r"nothing\.npz"),
    (
        "privacy-members-shapes-differ",
        f"{PR} --members <data> --nonmembers <flat>",
        r"--members .*--nonmembers .*differ",
    ),
    ("privacy-reference-epochs-zero", f"{PR} --reference-epochs 0", r"--reference-epochs must"),
    (
        "privacy-reference-epochs-with-mlp",
        f"{PR} --reference-arch mlp --reference-epochs 3",
        r"--reference-epochs applies to --reference-arch same",
    ),
    ("privacy-reference-same-unknown", f"{PF} --reference-arch same", r"--reference-arch same"),
    ("privacy-no-data", PF.replace(" --data <data>", ""), r"--data is required"),
    ("privacy-data-unknown", f"{PF} --data digitz", r"unknown dataset 'digitz'"),
    ("privacy-model-garbage", f"{PF} --model <garbage>", r"garbage\.pt"),
    ("privacy-sklearn-untrusted", f"{PF} --model sklearn:<joblib>", r"--trust-model-file"),
    (
        "privacy-sklearn-trusted-garbage",
        f"{PF} --model sklearn:<joblib> --trust-model-file",
        r"model\.joblib: not a joblib/pickle file",
    ),
    (
        "privacy-weights-missing",
        f"{PF} --model <factory>:make --weights <missing>",
        r"nothing\.npz: weights file not found",
    ),
    ("privacy-csv-label-column", f"{PF} --data <csv> --label-column y", r"'y'"),
    ("privacy-data-shape", f"{PF} --data <flat>", r"model rejected an input of shape \(32,\)"),
    ("privacy-pt2-untrusted", f"{PF} --model <pt2>", r"--trust-model-file"),
    ("privacy-out-is-a-file", f"{PR} --out <file>", r"--out .*a_file\.txt"),
]

INVERT = [
    ("invert-steps-zero", f"{IV} --steps 0", r"--steps must be >= 1, got 0"),
    ("invert-tv-negative", f"{IV} --tv -1", r"--tv must be >= 0.*got -1"),
    ("invert-step-size-zero", f"{IV} --step-size 0", r"step.size must be > 0.*got 0"),
    ("invert-step-size-nan", f"{IV} --step-size nan", r"step.size must be > 0.*got nan"),
    ("invert-step-size-inf", f"{IV} --step-size inf", r"step.size must be > 0.*got inf"),
    ("invert-step-size-negative", f"{IV} --step-size -1", r"step.size must be > 0.*got -1"),
    ("invert-tv-nan", f"{IV} --tv nan", r"--tv must be >= 0.*got nan"),
    ("invert-tv-inf", f"{IV} --tv inf", r"--tv must be >= 0.*got inf"),
    ("invert-seed", f"{IV} --seed {2**64}", r"--seed must be"),
    ("invert-independent-garbage", f"{IV} --independent <garbage>", r"garbage\.pt"),
    (
        "invert-weights-wrong",
        f"{IV} --model <factory>:make --weights <wrongw>",
        r"w\.pt: state_dict does not",
    ),
    ("invert-csv-label-column", f"{IV} --data <csv> --label-column y", r"'y'"),
    ("invert-npz-label-column", f"{IV} --label-column y", r"--label-column y: only \.csv"),
    ("invert-sklearn-untrusted", f"{IV} --model sklearn:<joblib>", r"--trust-model-file"),
    (
        "invert-pt2-trusted-garbage",
        f"{IV} --model <pt2> --trust-model-file",
        r"model\.pt2: not a torch\.export archive",
    ),
    ("invert-init-unknown", f"{IV} --init noise", r"init.*noise"),
    ("invert-init-empty", f"{IV} --init ,", r"init"),
    ("invert-classes-too-big", f"{IV} --classes 10", r"--classes must lie in \[0, 10\)"),
    ("invert-classes-negative", f"{IV} --classes -1", r"--classes must lie in \[0, 10\)"),
    ("invert-classes-word", f"{IV} --classes cat", r"--classes: cannot read 'cat'"),
    ("invert-objective", f"{IV} --objective loss", r"argument --objective: invalid choice"),
    ("invert-no-data", IV.replace(" --data <data>", ""), r"--data is required"),
    ("invert-model-garbage", f"{IV} --model <garbage>", r"garbage\.pt"),
    ("invert-independent-missing", f"{IV} --independent <missing>", r"nothing\.npz"),
    ("invert-data-shape", f"{IV} --data <flat>", r"model rejected an input of shape \(32,\)"),
    ("invert-pt2-untrusted", f"{IV} --model <pt2>", r"--trust-model-file"),
    ("invert-out-is-a-file", f"{IV} --out <file>", r"--out .*a_file\.txt"),
]

PRIVACY_DEFENSE = [
    ("privacy-defense-unknown", f"{PD} --defenses none,dp", r"--defenses: unknown \['dp'\]"),
    ("privacy-defense-empty", f"{PD} --defenses ,", r"--defenses"),
    ("privacy-defense-members-zero", f"{PD} --members 0", r"--members must be >= 1, got 0"),
    ("privacy-defense-members-too-many", f"{PD} --members 5000", r"--members 5000"),
    ("privacy-defense-epochs-zero", f"{PD} --epochs 0", r"--epochs must be >= 1, got 0"),
    ("privacy-defense-batch-size-zero", f"{PD} --batch-size 0", r"batch_size must be .*got 0"),
    ("privacy-defense-lr-zero", f"{PD} --lr 0", r"\blr must be a finite number > 0, got 0"),
    ("privacy-defense-lr-nan", f"{PD} --lr nan", r"\blr must be a finite number > 0, got nan"),
    (
        "privacy-defense-noise-nan",
        f"{PD} --defenses dp-sgd --noise-multiplier nan",
        r"noise_multiplier must be >= 0 and finite, got nan",
    ),
    (
        "privacy-defense-clip-nan",
        f"{PD} --defenses dp-sgd --max-grad-norm nan",
        r"max_grad_norm must be > 0 and finite, got nan",
    ),
    ("privacy-defense-dp-lr-nan", f"{PD} --defenses dp-sgd --dp-lr nan", r"lr must be .*nan"),
    ("privacy-defense-data-missing", f"{PD} --data <missing>", r"nothing\.npz: no such file"),
    ("privacy-defense-data-too-small", f"{PD} --data <data>", r"--members 10: .*data\.npz"),
    ("privacy-defense-seed", f"{PD} --seed {2**64}", r"--seed must be"),
    (
        "privacy-defense-label-smoothing",
        f"{PD} --defenses label-smoothing --label-smoothing 1.5",
        r"label.smoothing must be in \[0, 1\)",
    ),
    (
        "privacy-defense-noise-negative",
        f"{PD} --defenses dp-sgd --noise-multiplier -1",
        r"noise.multiplier must be >= 0",
    ),
    (
        "privacy-defense-clip-zero",
        f"{PD} --defenses dp-sgd --max-grad-norm 0",
        r"max.grad.norm must be > 0",
    ),
    ("privacy-defense-dp-lr-zero", f"{PD} --defenses dp-sgd --dp-lr 0", r"lr must be .*got 0"),
    ("privacy-defense-lira-few", f"{PD} --lira-references 2", r"lira.references.*4"),
    ("privacy-defense-lira-negative", f"{PD} --lira-references -1", r"lira.references"),
    ("privacy-defense-fpr", f"{PD} --fpr 2", r"--fpr.*got 2"),
    ("privacy-defense-data-unknown", f"{PD} --data digitz", r"unknown dataset 'digitz'"),
    ("privacy-defense-out-is-a-file", f"{PD} --out <file>", r"--out .*a_file\.txt"),
]

COMPARE = [
    ("compare-dir-missing", "compare <missing> --out <out>", r"nothing\.npz: no such file"),
    ("compare-dir-empty", "compare <nocard> --out <out>", r"nocard: no report\.json"),
    ("compare-bad-json", "compare <report_badjson> --out <out>", r"not a readable JSON"),
    ("compare-json-list", "compare <report_list> --out <out>", r"expected a JSON object"),
    ("compare-not-report", "compare <report_other> --out <out>", r"not an adversa report"),
    ("compare-binary-file", "compare <data> --out <out>", r"data\.npz: not a readable JSON"),
    ("compare-text-file", "compare <notes> --out <out>", r"notes\.txt: not a readable JSON"),
    ("compare-poison-dir", "compare <pois> --out <out>", r"pois: no report\.json"),
    ("compare-no-dirs", "compare --out <out>", r"the following arguments are required: DIR"),
    ("compare-out-is-a-file", "compare <run> --out <file>", r"--out .*a_file\.txt"),
    ("compare-out-under-a-file", "compare <run> --out <under_file>", r"--out .*a_file\.txt"),
]

TOP_LEVEL = [
    ("list-unknown", "list attack", r"argument what: invalid choice: 'attack'"),
    ("list-nothing", "list", r"required: what"),
    ("no-command", "", r"required: COMMAND"),
    ("unknown-command", "evaluat", r"invalid choice: 'evaluat'"),
    ("unknown-top-level-option", "--verbose list attacks", r"unrecognized arguments: --verbose"),
]

CASES = (
    EVALUATE
    + TRAIN_REFORMER
    + TRAIN
    + CERTIFY
    + POISON
    + BACKDOOR_EVAL
    + INSPECT
    + TEXT
    + PRIVACY
    + INVERT
    + PRIVACY_DEFENSE
    + COMPARE
    + TOP_LEVEL
    + OUT_CASES
)


def test_catalogue_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("argv", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_argument(argv, pattern, assets, tmp_path, capsys):
    out = tmp_path / "out"
    if "<run_copy>" in argv:
        shutil.copytree(assets["run"], tmp_path / "run_copy")
        argv = argv.replace("<run_copy>", str(tmp_path / "run_copy"))
    code = main(_argv(argv, assets, out))
    message = _message(code, capsys.readouterr().err)
    assert re.search(pattern, message), f"{pattern!r} not in: {message}"
    written = [p.name for p in out.rglob("*")] if out.is_dir() else []
    assert not written, f"a refused command wrote {written}"


@pytest.mark.parametrize("name", list(BASES))
def test_base_commands_succeed(name, assets, tmp_path, capsys):
    """Every case is its base command line plus one mistake, so each base must succeed."""
    code = main(_argv(BASES[name], assets, tmp_path / "out"))
    assert code == 0, capsys.readouterr().err


TUPLE_MODELS = {
    "evaluate": f"{EV} --model <tuple>",
    "backdoor-eval": f"{BE} --model <tuple>",
    "inspect-data": f"{IN} --model <factory>:pair --weights <weights>",
    "privacy": f"{PF} --model <tuple>",
    "invert": f"{IV} --model <tuple>",
}


@pytest.mark.parametrize("name", list(TUPLE_MODELS))
def test_a_model_returning_a_tuple_is_never_an_internal_error(name, assets, tmp_path, capsys):
    """Its logits are taken by the documented rule (with a warning) or it is refused (exit 2):
    never exit 1."""
    code = main(_argv(TUPLE_MODELS[name], assets, tmp_path / "out"))
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err, err


def test_cuda_refused_when_absent(assets, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    for base in (EV, CE, TR, RF):
        code = main(_argv(f"{base} --device cuda", assets, tmp_path / "out"))
        assert "CUDA is not available" in _message(code, capsys.readouterr().err)


def test_catalogue_size():
    """The issue asks for at least 150 cases; the command line alone has more."""
    assert len(CASES) >= 150
