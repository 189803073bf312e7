"""No file runs code unless `--trust-model-file` is given (issue 13, section 1).

Every malicious file here carries a pickle payload, an object whose `__reduce__` writes a
marker file when unpickled (test_payloads_are_live checks that each one does run under a
naive loader). Each file is handed to every subcommand that reads one of its kind, in-process
through `adversa.cli.main.main`, and each case asserts exit 2, one line on stderr naming the
file (and the flag, where trust would unlock the loader), and that the marker never appears.

The files: a torch.export archive whose weights are a pickle (as `.pt2`, renamed `.pt`, and a
zip named anything that holds `archive_format`), a `torch.save` pickle (zip and legacy format)
as --model and as --weights, a raw pickle as --model and as sklearn:PATH, a TorchScript-looking
archive with the payload in `data.pkl` and `constants.pkl`, training output directories with a
malicious model.pt or checkpoint.pt, a MagNet reformer directory, a text model file, a zoo cache
file whose card's sha256 vouches for the payload, a text model cache file, and a trigger.npz
(and a poisoned set) holding an object array. The last tests check that a legitimate archive
loads with the flag, whatever its name, and that file kinds are told apart by content.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pathlib
import pickle
import re
import shlex
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from adversa import safeload
from adversa.cli.main import main
from adversa.errors import BadInput, UnsafePickle
from adversa.load import load_model

N = 48  # points in the data files


class Payload:
    """Unpickling this writes `marker`: a stand-in for any code a crafted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.write_text, (self.marker, "pwned"))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


def _rewrite_zip(src: Path, dst: Path, changes: dict[str, bytes]) -> None:
    """Copy the zip `src` to `dst`, replacing members by their name under the top folder."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            inner = name.split("/", 1)[1] if "/" in name else name
            zout.writestr(name, changes.get(inner, zin.read(name)))


def _evil_export(good: Path, dst: Path, marker: Path) -> None:
    """A torch.export archive whose first weight is stored as a pickle of the payload: the
    archive's own config says so, and `torch.export.load` then runs `torch.load(...,
    weights_only=False)` on it."""
    with zipfile.ZipFile(good) as archive:
        config_name = next(n for n in archive.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(archive.read(config_name))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    payload = io.BytesIO()
    torch.save(Payload(marker), payload)
    path_name = config["config"][first]["path_name"]
    _rewrite_zip(
        good,
        dst,
        {
            "data/weights/model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{path_name}": payload.getvalue(),
        },
    )


def _script(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), str(path))


def _run(command: str) -> None:
    assert main(shlex.split(command)) == 0, f"building an asset failed: adversa {command}"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every file the cases name, built once (a few seconds: one tiny training run, one
    reformer, one poisoned set)."""
    root = tmp_path_factory.mktemp("malicious")
    marker = root / "PWNED"
    evil = Payload(marker)
    digits = load_digits()
    x = (digits.data[:N] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target[:N].astype(np.int64)
    p: dict[str, Path] = {"marker": marker, "root": root}
    p["data"] = root / "data.npz"
    np.savez(p["data"], x=x, y=y)

    net = _net()
    p["script"] = root / "model.ts"
    _script(net, p["script"])
    p["factory"] = root / "net.py"
    p["factory"].write_text(
        "from torch import nn\n\n\ndef make():\n    return nn.Sequential(nn.Flatten(), "
        "nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))\n"
    )
    p["weights"] = root / "weights.pt"
    torch.save(net.state_dict(), p["weights"])

    # torch.export: a legitimate archive, and the payload in three disguises
    p["good_pt2"] = root / "good.pt2"
    batch = {0: torch.export.Dim("batch", min=1, max=1024)}
    program = torch.export.export(net, (torch.rand(2, 1, 8, 8),), dynamic_shapes=(batch,))
    torch.export.save(program, str(p["good_pt2"]))
    p["pt2"] = root / "evil.pt2"
    _evil_export(p["good_pt2"], p["pt2"], marker)
    p["pt2_as_pt"] = root / "evil_export.pt"
    shutil.copy(p["pt2"], p["pt2_as_pt"])
    p["pt2_as_bin"] = root / "weights_v2.bin"
    shutil.copy(p["pt2"], p["pt2_as_bin"])

    # torch.save pickles (zip and legacy formats) and raw pickles
    p["save"] = root / "evil_state.pt"
    torch.save({"0.weight": evil}, p["save"])
    p["legacy"] = root / "evil_legacy.pt"
    torch.save({"0.weight": evil}, p["legacy"], _use_new_zipfile_serialization=False)
    p["pickle"] = root / "evil.pkl"
    p["pickle"].write_bytes(pickle.dumps(evil, protocol=4))
    p["joblib"] = root / "evil.joblib"
    p["joblib"].write_bytes(pickle.dumps(evil, protocol=4))

    # TorchScript archives with the payload in data.pkl and in constants.pkl
    for key, member, obj in (("ts_data", "data.pkl", evil), ("ts_const", "constants.pkl", (evil,))):
        p[key] = root / f"evil_{key}.ts"
        _rewrite_zip(p["script"], p[key], {member: pickle.dumps(obj, protocol=2)})

    # a training run, then copies with a malicious model.pt / checkpoint.pt
    p["run"] = root / "run"
    _run(f"train --data {p['data']} --arch mlp --epochs 1 --final-eval none --out {p['run']}")
    p["run_model"] = root / "run_model"
    shutil.copytree(p["run"], p["run_model"])
    torch.save({"net.0.weight": evil}, p["run_model"] / "model.pt")
    p["run_ckpt"] = root / "run_ckpt"
    shutil.copytree(p["run"], p["run_ckpt"])
    torch.save({"format": 1, "model": evil}, p["run_ckpt"] / "checkpoint.pt")

    # a MagNet reformer with malicious weights
    p["reformer"] = root / "reformer"
    _run(f"train-reformer --data {p['data']} --epochs 1 --n 8 --width 4 --out {p['reformer']}")
    torch.save({"encoder.weight": evil}, p["reformer"] / "reformer.pt")

    # a text model file
    p["text_model"] = root / "evil_text.pt"
    torch.save({"state_dict": evil, "vocab": ["a"], "sizes": [1, 2, 2, 2]}, p["text_model"])

    # a poisoned set, then copies with an object-array trigger and poisoned_idx
    p["pois"] = root / "pois"
    _run(
        f"poison --data {p['data']} --attack badnets --rate 0.1 --target-class 0 --out {p['pois']}"
    )
    p["trigger"] = root / "evil_trigger"
    shutil.copytree(p["pois"], p["trigger"])
    pattern = np.array([evil], dtype=object)
    np.savez(p["trigger"] / "trigger.npz", pattern=pattern, mask=pattern)
    p["pois_idx"] = root / "evil_idx"
    shutil.copytree(p["pois"], p["pois_idx"])
    np.savez(p["pois_idx"] / "poisoned.npz", x=x, y=y, poisoned_idx=np.array([evil], dtype=object))
    p["text_csv"] = root / "text.csv"
    texts = ["a good fine great film", "a bad awful dull film"]
    lines = ["text,label"] + [f"{texts[i % 2]} number {i},{i % 2}" for i in range(40)]
    p["text_csv"].write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture(autouse=True)
def no_marker(request: pytest.FixtureRequest) -> None:
    """Each test starts without the marker and must end without it."""
    if "assets" not in request.fixturenames:
        yield
        return
    marker = request.getfixturevalue("assets")["marker"]
    marker.unlink(missing_ok=True)
    yield
    assert not marker.exists(), "a payload ran: the marker file was written"


def _argv(template: str, assets: dict[str, Path], out: Path) -> list[str]:
    def fill(match: re.Match[str]) -> str:
        return str(out) if match.group(1) == "out" else str(assets[match.group(1)])

    return [re.sub(r"<(\w+)>", fill, token) for token in shlex.split(template)]


def _refusal(code: int, err: str) -> str:
    """The one line of a refusal (exit 2, no traceback)."""
    assert code == 2, f"exit {code}, expected 2; stderr:\n{err}"
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("adversa: error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------------
# the payloads are real: a naive loader runs each of them


def test_payloads_are_live(assets: dict[str, Path]) -> None:
    marker = assets["marker"]
    loaders = {
        "pickle": lambda: pickle.loads(assets["pickle"].read_bytes()),
        "torch.save": lambda: torch.load(assets["save"], weights_only=False),
        "legacy torch.save": lambda: torch.load(assets["legacy"], weights_only=False),
        "torch.export": lambda: torch.export.load(str(assets["pt2_as_bin"])),
    }
    for name, load in loaders.items():
        marker.unlink(missing_ok=True)
        with contextlib.suppress(Exception):  # the payload runs before the loader notices
            load()
        assert marker.exists(), f"the {name} payload did not run under a naive loader"
    marker.unlink()


# --------------------------------------------------------------------------------------------
# every subcommand that reads a model, weights, a run, a reformer, a trigger or a cache

EV = (
    "evaluate --model <script> --data <data> --norm linf --eps 0.1 --attacks fgsm --n 4 --out <out>"
)
TRANSFER = "--attacks transfer --surrogate <factory>:make --surrogate-weights <weights>"
CE = (
    "certify --model <factory>:make --weights <weights> --data <data> --method ibp --eps 0.01 "
    "--n-points 4 --out <out>"
)
PF = "privacy --model <script> --data <data> --attack threshold --n 8 --out <out>"
IV = "invert --model <script> --data <data> --classes 0 --init zeros --steps 2 --out <out>"
IN = "inspect-data --data <pois>/poisoned.npz --model <script> --detector spectral"
BE = "backdoor-eval --model <script> --backdoor <pois> --data <data>"
TX = "text-attack --data <text_csv> --attacks deepwordbug --n 2 --out <out>"
TRUST = r"--trust-model-file"

CASES = [
    # torch.export archives: refused without the flag, whatever their name
    ("evaluate-model-pt2", f"{EV} --model <pt2>", rf"evil\.pt2: .*torch\.export.*{TRUST}"),
    ("evaluate-model-pt2-named-pt", f"{EV} --model <pt2_as_pt>", rf"evil_export\.pt: .*{TRUST}"),
    ("evaluate-model-pt2-named-bin", f"{EV} --model <pt2_as_bin>", rf"weights_v2\.bin: .*{TRUST}"),
    (
        "evaluate-surrogate-pt2",
        f"{EV} --attacks transfer --surrogate <pt2>",
        rf"evil\.pt2.*{TRUST}",
    ),
    ("certify-model-pt2", f"{CE} --model <pt2>", rf"evil\.pt2: .*{TRUST}"),
    ("privacy-model-pt2", f"{PF} --model <pt2>", rf"evil\.pt2: .*{TRUST}"),
    ("invert-model-pt2", f"{IV} --model <pt2>", rf"evil\.pt2: .*{TRUST}"),
    ("invert-independent-pt2", f"{IV} --independent <pt2_as_pt>", rf"evil_export\.pt: .*{TRUST}"),
    ("inspect-data-model-pt2", f"{IN} --model <pt2>", rf"evil\.pt2: .*{TRUST}"),
    ("backdoor-eval-model-pt2", f"{BE} --model <pt2>", rf"evil\.pt2: .*{TRUST}"),
    # a torch.export archive as weights is not weights
    ("evaluate-weights-pt2", f"{EV} --model <factory>:make --weights <pt2>", r"evil\.pt2: not a"),
    # torch.save pickles: as a model (no architecture), as weights (weights-only refuses)
    ("evaluate-model-torch-save", f"{EV} --model <save>", r"evil_state\.pt: a torch\.save"),
    (
        "evaluate-weights-pickle",
        f"{EV} --model <factory>:make --weights <save>",
        r"evil_state\.pt: refused",
    ),
    (
        "evaluate-weights-legacy",
        f"{EV} --model <factory>:make --weights <legacy>",
        r"evil_legacy\.pt: refused",
    ),
    (
        "evaluate-surrogate-weights",
        f"{EV} {TRANSFER} --surrogate-weights <save>",
        r"evil_state\.pt: refused",
    ),
    ("certify-weights-pickle", f"{CE} --weights <save>", r"evil_state\.pt: refused"),
    (
        "privacy-weights-pickle",
        f"{PF} --model <factory>:make --weights <save>",
        r"evil_state\.pt: refused",
    ),
    (
        "invert-weights-pickle",
        f"{IV} --model <factory>:make --weights <legacy>",
        r"evil_legacy\.pt: refused",
    ),
    (
        "inspect-data-weights-pickle",
        f"{IN} --model <factory>:make --weights <save>",
        r"evil_state\.pt: refused",
    ),
    (
        "backdoor-eval-weights-pickle",
        f"{BE} --model <factory>:make --weights <save>",
        r"evil_state\.pt: refused",
    ),
    (
        "evaluate-weights-raw-pickle",
        f"{EV} --model <factory>:make --weights <pickle>",
        r"evil\.pkl: refused",
    ),
    # raw pickles / joblib: only as sklearn:PATH with the flag
    ("evaluate-model-pickle", f"{EV} --model <pickle>", rf"evil\.pkl: .*sklearn:.*{TRUST}"),
    ("evaluate-sklearn", f"{EV} --model sklearn:<joblib>", rf"evil\.joblib: .*{TRUST}"),
    ("privacy-sklearn", f"{PF} --model sklearn:<joblib>", rf"evil\.joblib: .*{TRUST}"),
    ("invert-sklearn", f"{IV} --model sklearn:<joblib>", rf"evil\.joblib: .*{TRUST}"),
    ("certify-sklearn", f"{CE} --model sklearn:<joblib>", rf"evil\.joblib: .*{TRUST}"),
    ("backdoor-eval-sklearn", f"{BE} --model sklearn:<joblib>", rf"evil\.joblib: .*{TRUST}"),
    ("text-attack-sklearn", f"{TX} --model sklearn:<joblib>", rf"evil\.joblib: .*{TRUST}"),
    # TorchScript's own unpickler refuses the payload (no flag needed: nothing runs)
    (
        "evaluate-torchscript-data-pkl",
        f"{EV} --model <ts_data>",
        r"evil_ts_data\.ts: not a readable",
    ),
    ("evaluate-torchscript-constants", f"{EV} --model <ts_const>", r"evil_ts_const\.ts: not a"),
    # training outputs
    ("evaluate-run-model-pt", f"{EV} --model <run_model>", r"run_model/model\.pt: refused"),
    ("privacy-run-model-pt", f"{PF} --model <run_model>", r"run_model/model\.pt: refused"),
    ("certify-run-model-pt", f"{CE} --model <run_model>", r"run_model/model\.pt: refused"),
    (
        "train-resume-checkpoint",
        "train --data <data> --arch mlp --epochs 1 --final-eval none --resume --out <run_ckpt>",
        r"run_ckpt/checkpoint\.pt: refused",
    ),
    (
        "train-resume-finished-model",
        "train --data <data> --arch mlp --epochs 1 --final-eval none --resume --out <run_model>",
        r"run_model/model\.pt: refused",
    ),
    # MagNet reformer
    ("evaluate-defense-magnet", f"{EV} --defense magnet:dir=<reformer>", r"reformer\.pt: refused"),
    (
        "evaluate-detector-magnet",
        f"{EV} --detector magnet:dir=<reformer>",
        r"reformer\.pt: refused",
    ),
    # text models
    ("text-attack-model", f"{TX} --model <text_model>", r"evil_text\.pt: refused"),
    # triggers and poisoned sets
    (
        "backdoor-eval-trigger",
        f"{BE} --backdoor <trigger>",
        r"evil_trigger: trigger\.npz: .*object",
    ),
    (
        "evaluate-backdoor-trigger",
        f"{EV} --backdoor <trigger>",
        r"evil_trigger: trigger\.npz: .*object",
    ),
    (
        "inspect-data-poisoned-idx",
        "inspect-data --data <pois_idx>/poisoned.npz --model <factory>:make --weights <weights>",
        r"evil_idx/poisoned\.npz: holds object arrays",
    ),
]


@pytest.mark.parametrize(("argv", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_without_running_code(
    argv: str, pattern: str, assets: dict[str, Path], tmp_path: Path, capsys
) -> None:
    code = main(_argv(argv, assets, tmp_path / "out"))
    line = _refusal(code, capsys.readouterr().err)
    assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
    assert not (tmp_path / "out" / "report.json").exists()


def test_compare_reads_json_only(assets: dict[str, Path], tmp_path: Path, capsys) -> None:
    """compare reads card.json, never the weights beside it."""
    assert main(["compare", str(assets["run_model"]), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.json").exists()


def test_zoo_cache_payload_with_matching_sha256(
    assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A cached zoo model whose card vouches for a malicious file (its sha256 matches): exit 2
    naming the cache file and what to delete, no payload run, no silent retraining."""
    from adversa.zoo import zoo_entry
    from adversa.zoo.cache import zoo_paths

    monkeypatch.setenv("ADVERSA_CACHE", str(tmp_path / "cache"))
    entry = zoo_entry("digits-mlp")
    weights, card = zoo_paths(entry)
    weights.parent.mkdir(parents=True)
    torch.save({"net.0.weight": Payload(assets["marker"])}, weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    card.write_text(
        json.dumps(
            {
                "fingerprint": entry.fingerprint,
                "input_shape": [1, 8, 8],
                "num_classes": 10,
                "weights_sha256": sha,
            }
        )
    )
    argv = _argv(EV, assets, tmp_path / "out")
    argv[argv.index("--model") + 1] = "digits-mlp"
    line = _refusal(main(argv), capsys.readouterr().err)
    assert f"{weights}: refused" in line and "delete" in line, line
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == sha  # left for the user to see


def test_text_model_cache_payload(
    assets: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from adversa.text.model import TextTrainConfig

    monkeypatch.setenv("ADVERSA_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "text" / f"movie-reviews-bow-{TextTrainConfig().fingerprint}.pt"
    cached.parent.mkdir(parents=True)
    torch.save({"state_dict": Payload(assets["marker"])}, cached)
    argv = ["text-attack", "--data", "movie-reviews", "--n", "2", "--out", str(tmp_path / "o")]
    line = _refusal(main(argv), capsys.readouterr().err)
    assert f"{cached}: refused" in line and "delete" in line, line


# --------------------------------------------------------------------------------------------
# with the flag, a legitimate archive loads; kinds are told apart by content


def test_trusted_export_archive_loads(assets: dict[str, Path], tmp_path: Path, capsys) -> None:
    argv = _argv(EV, assets, tmp_path / "out")
    argv[argv.index("--model") + 1] = str(assets["good_pt2"])
    assert main(argv) == 2
    assert TRUST in capsys.readouterr().err
    assert main([*argv, "--trust-model-file"]) == 0
    assert (tmp_path / "out" / "report.json").exists()


def test_trusted_export_archive_renamed(assets: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "exported.pt"
    shutil.copy(assets["good_pt2"], renamed)
    x = torch.rand(3, 1, 8, 8)
    with pytest.raises(BadInput, match=r"exported\.pt: it is a torch\.export archive"):
        load_model(str(renamed))
    model = load_model(str(renamed), trust_model_file=True)
    with torch.no_grad():
        assert torch.allclose(model(x), _net()(x), atol=1e-6)


def test_file_kinds(assets: dict[str, Path], tmp_path: Path) -> None:
    safetensors_file = tmp_path / "w.bin"
    from safetensors.torch import save_file

    save_file(_net().state_dict(), str(safetensors_file))
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"hello")
    expected = {
        "good_pt2": safeload.TORCH_EXPORT,
        "pt2_as_bin": safeload.TORCH_EXPORT,
        "script": safeload.TORCHSCRIPT,
        "ts_data": safeload.TORCHSCRIPT,
        "weights": safeload.TORCH_SAVE,
        "legacy": safeload.TORCH_SAVE,
        "pickle": safeload.PICKLE,
    }
    for key, kind in expected.items():
        assert safeload.file_kind(assets[key]) == kind, key
    assert safeload.file_kind(safetensors_file) == safeload.SAFETENSORS
    assert safeload.file_kind(junk) == safeload.UNKNOWN


def test_library_weights_refusal_is_typed(assets: dict[str, Path]) -> None:
    with pytest.raises(UnsafePickle, match=r"evil_state\.pt: refused"):
        safeload.load_tensors(assets["save"])
    with pytest.raises(BadInput, match=r"trust_model_file=True"):
        load_model(f"sklearn:{assets['joblib']}")


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"pattern": np.zeros(3)}, r"no array 'mask' \(holds: pattern\)"),
        ({"pattern": np.array(["a"]), "mask": np.zeros(3)}, r"array 'pattern' has dtype <U1"),
        ({"pattern": np.zeros(3), "mask": np.array([None])}, r"holds object arrays"),
        (None, r"not an \.npz archive"),
    ],
    ids=["missing-key", "string-dtype", "object-array", "not-npz"],
)
def test_load_npz_refusals(arrays: dict | None, pattern: str, tmp_path: Path) -> None:
    path = tmp_path / "trigger.npz"
    if arrays is None:
        path.write_bytes(b"not an npz archive")
    else:
        np.savez(path, **arrays)
    with pytest.raises(BadInput, match=rf"^--backdoor D: {pattern}"):
        safeload.load_npz(path, ("pattern", "mask"), label="--backdoor D")


def test_trigger_of_another_shape(assets: dict[str, Path], tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad_trigger"
    shutil.copytree(assets["pois"], bad)
    np.savez(bad / "trigger.npz", pattern=np.zeros((3, 5, 5)), mask=np.ones((3, 5, 5)))
    argv = _argv(BE, assets, tmp_path / "out")
    argv[argv.index("--backdoor") + 1] = str(bad)
    line = _refusal(main(argv), capsys.readouterr().err)
    assert "trigger pattern of shape (3, 5, 5) does not fit" in line, line
