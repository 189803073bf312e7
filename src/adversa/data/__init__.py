"""Datasets: built-in ones that work offline, and user files (.npz, .csv, image folders).

Example::

    ds = load_data("mnist")                 # 1,000 test digits, (N, 1, 28, 28) in [0, 1]
    ds = load_data("table.csv", label_column="label")
"""

from __future__ import annotations

import os
from pathlib import Path

from adversa.data.builtin import DATASETS, load_builtin
from adversa.data.dataset import Dataset, unscale
from adversa.data.files import load_path
from adversa.data.splits import SPLIT_SEED, SPLITS, stratified_split
from adversa.errors import BadInput, UnknownName

__all__ = [
    "DATASETS",
    "SPLIT_SEED",
    "Dataset",
    "list_datasets",
    "load_data",
    "stratified_split",
    "unscale",
]

_PATH_SUFFIXES = (".npz", ".csv")


def list_datasets() -> list[str]:
    """Names of the built-in datasets."""
    return DATASETS.list()


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or "/" in spec
        or spec.startswith(("~", "."))
        or Path(spec).suffix.lower() in _PATH_SUFFIXES
    )


def load_data(spec: str, *, split: str = "test", label_column: str | None = None) -> Dataset:
    """Load a dataset by built-in name or from a file.

    `spec` is a built-in name (see `list_datasets`), an `.npz` with arrays `x` and `y`, a
    `.csv` (with `label_column`), or a directory `root/<class_name>/*.png`. `split` ("train",
    "test" or "all") selects part of a built-in dataset; files are always loaded whole.
    `label_column` is for `.csv` files only: given with anything else it raises `BadInput`
    rather than being ignored. Image folders are labelled by `adversa.data.files.folder_labels`
    (numeric folder names are the labels, else sorted names; recorded in `meta["class_map"]`).
    Unknown names raise `UnknownName` with suggestions; bad files raise `BadInput`.
    """
    if split not in SPLITS:
        raise BadInput(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if spec in DATASETS:
        if label_column is not None:
            raise BadInput(
                f"--label-column {label_column}: only .csv data has label columns; {spec!r} is "
                "a built-in dataset with its own labels, drop the option"
            )
        return load_builtin(spec, split)
    path = Path(spec).expanduser()
    if path.exists() or _looks_like_path(spec):
        return load_path(path, label_column)
    raise UnknownName("dataset", spec, list_datasets())
