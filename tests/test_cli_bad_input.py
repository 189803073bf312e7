"""Command-line and data-file bad input: `--out` checked before any work, data files and
constraints refused with one line, image folders labelled explicitly, options that would be
silently ignored refused, `--bounds -1,1`, and temporary files of interrupted writes removed.

Every refusal is exit 2 with one line `adversa: error: ...` naming the argument and value.
The models and files are tiny (a linear model on 64 8x8 digits; `--n 4`).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import refused
from PIL import Image
from torch import nn

from adversa.cli.common import check_out_dir
from adversa.cli.main import join_negative_values, main
from adversa.data import load_data
from adversa.data.files import check_labelled_folder, folder_class_warning
from adversa.errors import BadInput
from adversa.io import atomic_write_text
from adversa.tabular.changes import constraints_for, load_constraints

N = 64


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("bad_input")
    digits = load_digits()
    x = (digits.data[:N] / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target[:N].astype(np.int64)
    p = {"root": root, "data": root / "data.npz", "model": root / "model.pt"}
    np.savez(p["data"], x=x, y=y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), p["model"])
    p["file"] = root / "a_file.txt"
    p["file"].write_text("an existing file\n")
    rng = np.random.default_rng(0)
    rows = ["f0,f1,f2,f3,label"] + [
        ",".join(f"{v:.3f}" for v in rng.random(4)) + f",{i % 2}" for i in range(N)
    ]
    p["csv"] = root / "table.csv"
    p["csv"].write_text("\n".join(rows) + "\n")
    for i in range(N):  # digit folders 2..9 only: classes 0 and 1 are missing
        if y[i] >= 2:
            _png(root / "digits" / str(y[i]) / f"{i}.png", x[i, 0])
    for i in range(4):
        _png(root / "named" / ("two" if i % 2 else "one") / f"{i}.png", x[i, 0])
        _png(root / "oneclass" / "cat" / f"{i}.png", x[i, 0])
        _png(root / "onedigit" / "3" / f"{i}.png", x[i, 0])
    p["digits"], p["named"] = root / "digits", root / "named"
    p["oneclass"], p["onedigit"] = root / "oneclass", root / "onedigit"
    return p


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(path)


def _evaluate(files: dict[str, Path], *extra: str, out: Path | str | None = None) -> list[str]:
    argv = ["evaluate", "--model", str(files["model"]), "--data", str(files["data"])]
    argv += ["--norm", "linf", "--eps", "0.1", "--attacks", "fgsm", "--n", "4", *extra]
    return [*argv, "--out", str(out)] if out is not None else argv


# ------------------------------------------------------------------------------------ --out

OUT_COMMANDS = {  # each command's other arguments; split on spaces (tmp paths have none)
    "evaluate": "evaluate --model {model} --data {data} --norm linf --eps 0.1 --n 4",
    "certify": "certify --model {model} --data {data} --method ibp --eps 0.01 --n-points 4",
    "poison": "poison --data {data} --attack badnets --rate 0.1 --target-class 0",
    "train": "train --data {data} --arch mlp --epochs 1",
    "train-reformer": "train-reformer --data {data} --epochs 1",
    "text-attack": "text-attack --data movie-reviews --n 2",
    "privacy": "privacy --model {model} --data {data}",
    "invert": "invert --model {model} --data {data}",
    "privacy-defense": "privacy-defense --members 10 --epochs 1",
    "inspect-data": "inspect-data --data {data} --model {model}",
    "compare": "compare {root}",
}


def _command(name: str, files: dict[str, Path]) -> list[str]:
    return OUT_COMMANDS[name].format(**files).split()


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS))
def test_out_that_is_a_file_is_refused_before_any_work(command, files, capsys):
    argv = _command(command, files)
    start = time.perf_counter()
    line = refused([*argv, "--out", str(files["file"])], capsys, r"--out .*a_file\.txt")
    assert "is an existing file, expected a directory" in line
    assert time.perf_counter() - start < 5  # nothing loaded, trained or attacked


@pytest.mark.parametrize("command", ["evaluate", "certify", "poison", "train", "compare"])
def test_out_under_a_file_is_refused(command, files, capsys):
    argv = [*_command(command, files), "--out", str(files["file"] / "sub" / "out")]
    line = refused(argv, capsys, r"--out .*a_file\.txt/sub/out")
    assert "is a file, so the directory cannot be created" in line


def test_out_not_writable_is_refused(files, capsys):
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc: a directory no one, not even root, can create files in")
    line = refused(_evaluate(files, out="/proc/adversa-out"), capsys, r"--out /proc/adversa-out")
    assert "not writable" in line


def test_check_out_dir_creates_nothing_and_leaves_no_probe(tmp_path):
    check_out_dir("--out", str(tmp_path / "a" / "b"))
    assert list(tmp_path.iterdir()) == []  # nothing created, the probe removed
    check_out_dir("--out", str(tmp_path))
    with pytest.raises(BadInput, match=r"--out '': expected a directory"):
        check_out_dir("--out", "")


def test_out_that_exists_as_a_directory_is_fine(files, tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    assert main(_evaluate(files, out=out)) == 0, capsys.readouterr().err
    assert (out / "report.json").is_file()


# ----------------------------------------------------------------------------- data files


def test_zero_byte_npz(files, tmp_path, capsys):
    (tmp_path / "zero.npz").write_bytes(b"")
    argv = _evaluate(files, "--data", str(tmp_path / "zero.npz"), out=tmp_path / "o")
    refused(argv, capsys, r"zero\.npz: is empty \(0 bytes\)")


def test_npz_without_arrays(files, tmp_path, capsys):
    np.savez(tmp_path / "none.npz")
    argv = _evaluate(files, "--data", str(tmp_path / "none.npz"), out=tmp_path / "o")
    refused(argv, capsys, r"none\.npz: missing array\(s\) x, y")


def test_npy_saved_as_npz(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((4, 3)))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(BadInput, match=r"one\.npz: holds a single array"):
        load_data(str(tmp_path / "one.npz"))


def test_truncated_npz(files, tmp_path):
    (tmp_path / "cut.npz").write_bytes(files["data"].read_bytes()[:200])
    with pytest.raises(BadInput, match=r"cut\.npz: (not a readable|a corrupt) \.npz"):
        load_data(str(tmp_path / "cut.npz"))


# --------------------------------------------------------------------------- image folders


def test_numeric_folders_are_labelled_by_their_number(files):
    ds = load_data(str(files["digits"]))
    assert ds.num_classes == 10 and sorted(set(ds.y.tolist())) == sorted(
        int(p.name) for p in files["digits"].iterdir()
    )
    assert ds.meta["labels_from"] == "numeric folder names"
    assert ds.meta["class_map"] == {str(k): k for k in range(2, 10)}
    folder_of = {path.name: int(path.parent.name) for path in files["digits"].glob("*/*.png")}
    assert len(folder_of) == len(ds)
    assert sorted(ds.y.tolist()) == sorted(folder_of.values())


def test_named_folders_follow_sorted_names(files):
    ds = load_data(str(files["named"]))
    assert ds.class_names == ("one", "two") and ds.meta["class_map"] == {"one": 0, "two": 1}
    assert ds.meta["labels_from"] == "sorted folder names"
    warning = folder_class_warning(ds, 10)
    assert warning is not None and "one=0, two=1" in warning and "10 outputs" in warning
    assert folder_class_warning(ds, 2) is None


def test_evaluate_records_the_class_map_and_warns_of_missing_classes(files, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(_evaluate(files, "--data", str(files["digits"]), out=out)) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["class_map"] == {str(k): k for k in range(2, 10)}
    assert report["config"]["class_names"] == [str(k) for k in range(10)]
    assert report["config"]["labels_from"] == "numeric folder names"
    assert any("no images of class 0, 1" in w for w in report["warnings"])
    assert "warning: the model has 10 outputs" in printed


def test_one_class_folder_is_refused_for_evaluation(files, tmp_path, capsys):
    argv = _evaluate(files, "--data", str(files["oneclass"]), out=tmp_path / "o")
    refused(argv, capsys, r"--data .*oneclass: only one class folder \('cat'\)")
    check_labelled_folder(load_data(str(files["onedigit"])))  # "3": its label is explicit
    assert load_data(str(files["onedigit"])).y.unique().tolist() == [3]


def test_one_class_folder_is_refused_for_certification(files, tmp_path, capsys):
    argv = [*_command("certify", files), "--data", str(files["oneclass"])]
    refused([*argv, "--out", str(tmp_path / "o")], capsys, r"only one class folder")


def test_clashing_numeric_folders(tmp_path):
    _png(tmp_path / "7" / "a.png", np.zeros((4, 4)))
    _png(tmp_path / "07" / "b.png", np.zeros((4, 4)))
    with pytest.raises(BadInput, match=r"class folders 07, 7 name the same class number"):
        load_data(str(tmp_path))


# ------------------------------------------------------------------------------ constraints

CONSTRAINTS = [
    ("[1, 2]", r"--constraints .*expected a JSON object.*got a list"),
    ('{"lower": {"f0": "abc"}}', r"--constraints .*lower\['f0'\] must be a number, got 'abc'"),
    ('{"upper": {"f0": null}}', r"upper\['f0'\] must be a number, got None"),
    ('{"weights": [1, 2]}', r"weights must map feature names to numbers"),
    ('{"immutable": "f0"}', r'immutable must be a list of feature names .*\(write \["f0"\]\)'),
    ('{"integer": [["f0"]]}', r"integer must list feature names or indices, got \['f0'\]"),
    ('{"categorical": "f0"}', r"categorical must be a list of groups"),
    ('{"categorical": [["f0", 1.5]]}', r"categorical\[0\] must list feature names"),
    ('{"immutable": ["nope"]}', r"has no feature 'nope'"),
    ('{"lower": {"f0": NaN}}', r"lower\['f0'\] must be finite"),
    ("{not json", r"--constraints .*not valid JSON"),
]


@pytest.mark.parametrize(("text", "pattern"), CONSTRAINTS)
def test_bad_constraints_in_a_file_and_inline(text, pattern, files, tmp_path, capsys):
    spec = tmp_path / "c.json"
    spec.write_text(text)
    data = ["--data", str(files["csv"]), "--label-column", "label"]
    for value in (str(spec), text):
        argv = _evaluate(files, *data, "--constraints", value, out=tmp_path / "o")
        refused(argv, capsys, pattern)


def test_inline_constraints_are_read(files):
    dataset = load_data(str(files["csv"]), label_column="label")
    inline = load_constraints(dataset, ' {"immutable": ["f0"], "upper": {"f1": 0.5}}')
    assert inline.immutable == (0,) and inline.upper[1] == 0.5
    with pytest.raises(BadInput, match=r"--constraints .*nothing\.json: no such file"):
        load_constraints(dataset, str(files["root"] / "nothing.json"))


def test_constraints_for_checks_types(files):
    dataset = load_data(str(files["csv"]), label_column="label")
    with pytest.raises(BadInput, match=r"immutable must be a list"):
        constraints_for(dataset, immutable="f0")  # type: ignore[arg-type]
    assert constraints_for(dataset, immutable=["f0", 2]).immutable == (0, 2)


# --------------------------------------------------------------------- ignored options


def test_label_column_with_npz_folder_or_builtin(files, tmp_path, capsys):
    argv = _evaluate(files, "--label-column", "y", out=tmp_path / "o")
    refused(argv, capsys, r"--label-column y: only \.csv data has label columns; .*data\.npz")
    with pytest.raises(BadInput, match=r"--label-column y: .*named"):
        load_data(str(files["named"]), label_column="y")
    with pytest.raises(BadInput, match=r"--label-column y: .*'digits' is a built-in"):
        load_data("digits", label_column="y")


def test_surrogate_options_without_their_attack(files, tmp_path, capsys):
    out = tmp_path / "o"
    argv = _evaluate(files, "--surrogate-weights", "w.pt", out=out)
    refused(argv, capsys, r"--surrogate-weights w\.pt: needs --surrogate")
    argv = _evaluate(files, "--surrogate", str(files["model"]), out=out)
    refused(argv, capsys, r"--surrogate .*model\.pt: only the 'transfer' attack")


@pytest.mark.parametrize("spec", ["squeeze:bits=4+", "+squeeze", "squeeze++median"])
def test_defense_spec_with_an_empty_part(spec, files, tmp_path, capsys):
    argv = _evaluate(files, "--defense", spec, out=tmp_path / "o")
    refused(argv, capsys, r"defense spec .* has an empty part: '\+' must join two")


def test_sigma_with_a_bound_method(files, tmp_path, capsys):
    argv = [*_command("certify", files), "--sigma", "0.25", "--out", str(tmp_path / "o")]
    refused(argv, capsys, r"--sigma 0\.25: applies to --method smoothing only")


def test_eval_eps_without_final_evaluation(files, tmp_path, capsys):
    argv = [*_command("train", files), "--final-eval", "none", "--eval-eps", "0.1"]
    refused([*argv, "--out", str(tmp_path / "o")], capsys, r"--eval-eps 0\.1: .*--final-eval none")


# ------------------------------------------------------------------- negative option values


def test_bounds_with_a_negative_low_as_a_separate_argument(files, tmp_path, capsys):
    argv = _evaluate(files, "--bounds", "-1,1", out=tmp_path / "o")
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["config"]["bounds"] == [-1, 1]
    # the value reaches --bounds (and so the eps check), not argparse's "expected one argument"
    argv = _evaluate(files, "--bounds", "-1,1", "--eps", "3", out=tmp_path / "o2")
    refused(argv, capsys, r"eps=3(\.0)? is larger than the bounds allow")


def test_join_negative_values_changes_only_what_argparse_rejects():
    assert join_negative_values(["--bounds", "-1,1", "--eps", "-0.1"]) == [
        "--bounds=-1,1",
        "--eps",
        "-0.1",
    ]
    assert join_negative_values(["--bounds", "-inf,0", "--x=1", "-2,3"]) == [
        "--bounds=-inf,0",
        "--x=1",
        "-2,3",
    ]
    assert join_negative_values(["--", "--bounds", "-1,1"]) == ["--", "--bounds", "-1,1"]
    assert join_negative_values(["--bounds", "-q"]) == ["--bounds", "-q"]


# ------------------------------------------------------------ interrupted atomic writes


def test_stale_temporary_files_are_removed_on_the_next_write(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".report.json.adversa-k3j9x_2a.tmp", out / ".report.html.adversa-abcdefgh.tmp"]
    old_style = out / ".report.json.q1w2e3r4.tmp"  # earlier versions' name, beside report.json
    unrelated = [out / ".notes.adversa-12345678.txt", out / "keep.tmp", out / ".x.q1w2e3r4.tmp"]
    fresh = out / ".card.json.adversa-zzzzzzzz.tmp"  # as if another live process wrote it now
    for path in [*stale, old_style, *unrelated, fresh]:
        path.write_text("partial")
    past = time.time() - 3600
    for path in [*stale, old_style, *unrelated]:
        os.utime(path, (past, past))
    atomic_write_text(out / "report.json", "{}\n")
    left = {p.name for p in out.iterdir()}
    assert left == {"report.json", fresh.name, *(p.name for p in unrelated)}


def test_implausible_class_number(tmp_path):
    _png(tmp_path / "0" / "a.png", np.zeros((4, 4)))
    _png(tmp_path / "123456789" / "b.png", np.zeros((4, 4)))
    with pytest.raises(BadInput, match=r"class folder 123456789 is not a class number"):
        load_data(str(tmp_path))
