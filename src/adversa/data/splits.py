"""The train/test split every built-in dataset shares, and the min-max scaling of tables.

Every split is stratified: each class is permuted with a generator seeded with `SPLIT_SEED`
and its first `TEST_FRACTION` (20 %) go to test; each split is then shuffled with the same
generator, so the first n samples of a split are a class-balanced sample. The split is a pure
function of the seed and the data: the same call always returns the same samples in the same
order. `builtin` and the modules of the larger built-ins (`fraud`, `signs`, `faces`) all split
through here, so they import it and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adversa.rng import make_generator

SPLIT_SEED = 0  # seeds the stratified train/test permutation of every built-in dataset
TEST_FRACTION = 0.2  # share of each class that goes to the test split
SPLITS: tuple[str, ...] = ("train", "test", "all")


def stratified_split(
    y: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): a seeded, stratified, shuffled split of indices into `y`."""
    gen = make_generator(seed)
    labels = torch.as_tensor(y)
    train: list[Tensor] = []
    test: list[Tensor] = []
    for c in torch.unique(labels).tolist():  # one pass per class, not per sample
        idx = torch.nonzero(labels == c).squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = round(idx.numel() * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train_idx, test_idx = torch.cat(train), torch.cat(test)
    train_idx = train_idx[torch.randperm(train_idx.numel(), generator=gen)]
    test_idx = test_idx[torch.randperm(test_idx.numel(), generator=gen)]
    return train_idx.numpy(), test_idx.numpy()


def select(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of (x, y) in `split` of `stratified_split(y)`: "train", "test", or "all" (the
    arrays themselves, in their original order)."""
    if split == "all":
        return x, y
    train_idx, test_idx = stratified_split(y)
    idx = train_idx if split == "train" else test_idx
    return x[idx], y[idx]


def split_meta(source: str, split: str, n_total: int) -> dict[str, Any]:
    """The `meta` every built-in records: where the data comes from and how it was split."""
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
    xs, ys = select(x, y, split)
    scaled = np.clip((xs - lo) / scale, 0.0, 1.0).astype(np.float32)
    meta = split_meta(source, split, len(y))
    meta["scaler"] = {
        "min": lo.tolist(),
        "scale": scale.tolist(),
        "feature_names": list(feature_names),
        "fit_on": "train",
        "clipped": True,
    }
    return scaled, ys, meta
