"""Built-in datasets, user files (.npz, .csv, image folders) and their error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adversa.data import Dataset, list_datasets, load_data, stratified_split, unscale
from adversa.errors import AdversaError, BadInput, ShapeError, UnknownName

BUILTIN_SHAPES = {
    # name: (per-sample shape, classes, kind, train size, test size)
    "mnist": ((1, 28, 28), 10, "image", 4000, 1000),
    "digits": ((1, 8, 8), 10, "image", 1438, 359),
    "breast-cancer": ((30,), 2, "tabular", 456, 113),
    "fraud": ((13,), 2, "tabular", 3200, 800),
    "signs": ((3, 32, 32), 8, "image", 3200, 800),
    "faces": ((1, 25, 25), 2, "image", 160, 40),
}


def test_list_datasets() -> None:
    assert list_datasets() == sorted(BUILTIN_SHAPES)


@pytest.mark.parametrize("name", sorted(BUILTIN_SHAPES))
def test_builtin_shapes_dtypes_ranges(name: str) -> None:
    shape, classes, kind, n_train, n_test = BUILTIN_SHAPES[name]
    train, test, full = (load_data(name, split=s) for s in ("train", "test", "all"))
    for ds, n in ((train, n_train), (test, n_test), (full, n_train + n_test)):
        assert isinstance(ds, Dataset)
        assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.input_shape == shape and len(ds) == n
        assert ds.num_classes == classes and ds.kind == kind
        assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
        assert set(ds.y.tolist()) == set(range(classes))
        assert ds.meta["split_seed"] == 0
    # the split is stratified: class shares match within one sample per class
    share = full.y.bincount() / len(full)
    assert torch.allclose(test.y.bincount() / len(test), share, atol=1.5 / min(share) / len(test))


@pytest.mark.parametrize("name", sorted(BUILTIN_SHAPES))
def test_builtin_split_is_deterministic_and_disjoint(name: str) -> None:
    a, b = load_data(name, split="test"), load_data(name, split="test")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    train_idx, test_idx = stratified_split(load_data(name, split="all").y.numpy())
    assert len(set(train_idx) & set(test_idx)) == 0
    assert len(train_idx) + len(test_idx) == len(load_data(name, split="all"))


def test_mnist_test_split_is_shuffled() -> None:
    """The first n samples of a split must not be one class (CLIs take --n N from the front)."""
    y = load_data("mnist").y
    assert len(set(y[:50].tolist())) >= 8


def test_breast_cancer_scaler_roundtrip() -> None:
    train = load_data("breast-cancer", split="train")
    scaler = train.meta["scaler"]
    assert scaler["feature_names"] == list(train.feature_names)
    assert len(scaler["min"]) == len(scaler["scale"]) == 30
    # train split spans exactly [0, 1] per feature
    assert torch.allclose(train.x.min(0).values, torch.zeros(30))
    assert torch.allclose(train.x.max(0).values, torch.ones(30))
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    train_idx, _ = stratified_split(bunch.target)
    recovered = unscale(train, train.x).double().numpy()
    assert np.allclose(recovered, bunch.data[train_idx], rtol=1e-5, atol=1e-4)


def test_unscale_rejects_unscaled_data() -> None:
    with pytest.raises(BadInput, match="was not scaled"):
        unscale(load_data("digits"), torch.zeros(1, 64))


def test_unknown_name_suggests() -> None:
    with pytest.raises(UnknownName, match="did you mean 'mnist'"):
        load_data("mnst")


def test_bad_split() -> None:
    with pytest.raises(BadInput, match="split must be one of"):
        load_data("mnist", split="validation")


def test_take_and_subset() -> None:
    ds = load_data("digits")
    assert len(ds.take(10)) == 10 and len(ds.take(None)) == len(ds)
    assert len(ds.subset(ds.y == 3)) == int((ds.y == 3).sum())
    with pytest.raises(BadInput, match="n must be >= 1"):
        ds.take(0)


# ---------------------------------------------------------------- npz


def test_npz_roundtrip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((12, 3, 4, 4)).astype(np.float64)
    y = np.arange(12) % 3
    path = tmp_path / "set.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["a", "b", "c"]))
    ds = load_data(str(path))
    assert ds.kind == "image" and ds.x.dtype == torch.float32 and ds.input_shape == (3, 4, 4)
    assert torch.allclose(ds.x, torch.tensor(x, dtype=torch.float32))
    assert ds.y.tolist() == y.tolist() and ds.num_classes == 3
    assert ds.class_names == ("a", "b", "c") and ds.name == "set"


def test_npz_keeps_values_outside_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "raw.npz"
    np.savez(path, x=np.full((4, 5), 200.0), y=np.array([0, 1, 0, 1]))
    ds = load_data(str(path))
    assert ds.kind == "tabular" and float(ds.x.max()) == 200.0


def test_npz_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array(["cat", "ant", "cat"]))
    ds = load_data(str(path))
    assert ds.class_names == ("ant", "cat") and ds.y.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        ({"x": np.zeros((3, 2))}, BadInput, r"missing array\(s\) y"),
        ({"data": np.zeros((3, 2)), "labels": np.zeros(3)}, BadInput, "found: data, labels"),
        (
            {"x": np.zeros((3, 2)), "y": np.zeros(4, dtype=int)},
            ShapeError,
            r"y must have shape \(3,\)",
        ),
        (
            {"x": np.zeros(3), "y": np.zeros(3, dtype=int)},
            ShapeError,
            r"x must have shape \(N, ...\)",
        ),
        (
            {"x": np.array([[0.0, np.nan], [1.0, 1.0]]), "y": np.zeros(2, dtype=int)},
            BadInput,
            "NaN or infinite",
        ),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, BadInput, "whole numbers"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, BadInput, "labels must be >= 0"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, error: type, match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(error, match=match) as info:
        load_data(str(path))
    assert "bad.npz" in str(info.value)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(BadInput, match=r"junk\.npz: not a readable \.npz"):
        load_data(str(path))


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        load_data(str(tmp_path / "nope.npz"))
    other = tmp_path / "data.parquet"
    other.write_bytes(b"x")
    with pytest.raises(BadInput, match=r"unsupported data file type '\.parquet'"):
        load_data(str(other))


# ---------------------------------------------------------------- csv


def _write_csv(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_roundtrip(tmp_path: Path) -> None:
    spec = _write_csv(tmp_path / "t.csv", "a,label,b\n0.1,1,0.2\n0.3,0,0.4\n0.5,1,0.6\n")
    ds = load_data(spec, label_column="label")
    assert ds.kind == "tabular" and ds.feature_names == ("a", "b")
    assert ds.y.tolist() == [1, 0, 1] and ds.num_classes == 2
    assert torch.allclose(ds.x, torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]))


def test_csv_string_labels(tmp_path: Path) -> None:
    spec = _write_csv(tmp_path / "t.csv", "f,kind\n1,spam\n2,ham\n3,spam\n")
    ds = load_data(spec, label_column="kind")
    assert ds.class_names == ("ham", "spam") and ds.y.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("text", "label", "match"),
    [
        ("a,b\n1,0\n", None, "needs a label column"),
        ("a,b\n1,0\n", "target", "no label column 'target'; columns are: a, b"),
        ("a,b\n1,0\nx,1\n", "b", "line 3, column 'a': 'x' is not a number"),
        ("a,c,b\n1,,0\n", "b", "missing or non-finite values \\(first at line 2, column 'c'\\)"),
        ("a,b\n1,0\n2\n", "b", "line 3 has 1 fields, the header has 2"),
        ("a,b\n", "b", "header row and at least one data row"),
        ("b\n1\n", "b", "no feature columns"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, label: str | None, match: str) -> None:
    spec = _write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(AdversaError, match=match) as info:
        load_data(spec, label_column=label)
    assert "bad.csv" in str(info.value)


# ---------------------------------------------------------------- image folders


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_grayscale_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for cls in ("cat", "dog"):
        for i in range(3):
            a = rng.integers(0, 256, (6, 5), dtype=np.uint8)
            arrays[(cls, i)] = a
            _write_png(tmp_path / "imgs" / cls / f"{i}.png", a)
    ds = load_data(str(tmp_path / "imgs"))
    assert ds.kind == "image" and ds.input_shape == (1, 6, 5) and len(ds) == 6
    assert ds.class_names == ("cat", "dog") and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    expected = torch.tensor(arrays[("dog", 1)], dtype=torch.float32) / 255.0
    assert torch.allclose(ds.x[4, 0], expected)
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0


def test_folder_rgb(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        _write_png(tmp_path / cls / "x.png", np.full((4, 4, 3), 255, dtype=np.uint8))
    ds = load_data(str(tmp_path))
    assert ds.input_shape == (3, 4, 4) and float(ds.x.min()) == 1.0


def test_folder_size_mismatch(tmp_path: Path) -> None:
    _write_png(tmp_path / "a" / "1.png", np.zeros((4, 4), dtype=np.uint8))
    _write_png(tmp_path / "b" / "2.png", np.zeros((5, 4), dtype=np.uint8))
    with pytest.raises(ShapeError, match=r"2\.png: image has shape .* same size and channels"):
        load_data(str(tmp_path))


def test_folder_channel_mismatch(tmp_path: Path) -> None:
    _write_png(tmp_path / "a" / "1.png", np.zeros((4, 4), dtype=np.uint8))
    _write_png(tmp_path / "b" / "2.png", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ShapeError, match="same size and channels"):
        load_data(str(tmp_path))


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="one subfolder per class"):
        load_data(str(tmp_path / "empty"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(BadInput, match="no images"):
        load_data(str(tmp_path / "noimg"))
    broken = tmp_path / "broken" / "a" / "x.png"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a png")
    with pytest.raises(BadInput, match=r"x\.png: not a readable image"):
        load_data(str(tmp_path / "broken"))
