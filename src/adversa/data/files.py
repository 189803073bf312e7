"""Datasets from user files: `.npz` arrays, `.csv` tables and `root/<class>/*.png` folders.

Values are kept as they are (user data is never rescaled silently; the evaluation's bounds
check reports values outside the declared bounds), except 8- and 16-bit images in folders,
which are divided by 255 or 65535 into [0, 1]. Every problem raises `BadInput` or
`ShapeError` with a message that names the file and what is wrong with it.
"""

from __future__ import annotations

import csv
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from adversa.data.dataset import Dataset
from adversa.errors import BadInput, ShapeError

MAX_CLASS_NUMBER = 100_000  # a numeric class folder above this is not a class index
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def _labels(y: np.ndarray, source: Path) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Integer labels as given, or string labels mapped to indices in sorted order."""
    if y.dtype.kind in "iu":
        labels = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise BadInput(f"{source}: labels must be whole numbers, got values such as {y[:3]}")
        labels = y.astype(np.int64)
    elif y.dtype.kind == "b":
        labels = y.astype(np.int64)
    elif y.dtype.kind in "US":
        names = tuple(sorted({str(v) for v in y.tolist()}))
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[str(v)] for v in y.tolist()], dtype=np.int64), names
    else:
        raise BadInput(f"{source}: labels must be integers or strings, got dtype {y.dtype}")
    if labels.size and labels.min() < 0:
        raise BadInput(f"{source}: labels must be >= 0, found {int(labels.min())}")
    return labels, None


def _check_x(x: np.ndarray, source: Path) -> np.ndarray:
    if x.dtype.kind not in "iufb":
        raise BadInput(f"{source}: x must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise BadInput(
            f"{source}: x has {int(bad.sum())} NaN or infinite values (first at sample "
            f"{int(first[0])})"
        )
    return x


def _num_classes(labels: np.ndarray, class_names: tuple[str, ...] | None) -> int:
    if class_names is not None:
        return len(class_names)
    return int(labels.max()) + 1 if labels.size else 1


def load_npz(path: Path) -> Dataset:
    """An `.npz` with arrays `x` (N, ...) and `y` (N,); optional `class_names` (strings).

    `x` of 3 or more dimensions is an image batch (kind "image"), 2 dimensions a table.
    """
    if path.is_file() and path.stat().st_size == 0:
        raise BadInput(f"{path}: is empty (0 bytes); expected an .npz archive with arrays x and y")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInput(f"{path}: not a readable .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise BadInput(
            f"{path}: holds a single array (an .npy file), not an .npz archive with arrays x "
            f"and y (save with numpy.savez(path, x=x, y=y))"
        )
    with archive:
        keys = set(archive.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            raise BadInput(
                f"{path}: missing array(s) {', '.join(missing)}; an .npz dataset needs arrays "
                f"'x' (N, ...) and 'y' (N,), found: {', '.join(sorted(keys)) or 'none'}"
            )
        try:
            x, y = archive["x"], archive["y"]
            names = archive["class_names"] if "class_names" in keys else None
        except ValueError as exc:  # object arrays would need pickle, which we refuse
            raise BadInput(f"{path}: cannot read arrays without pickle ({exc})") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise BadInput(f"{path}: a corrupt .npz archive ({exc})") from None
    if x.ndim < 2:
        raise ShapeError(f"{path}: x must have shape (N, ...), got {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ShapeError(f"{path}: y must have shape ({x.shape[0]},) to match x, got {y.shape}")
    if x.shape[0] == 0:
        raise ShapeError(f"{path}: x is empty")
    x = _check_x(x, path)
    labels, class_names = _labels(y, path)
    if names is not None:
        class_names = tuple(str(n) for n in np.asarray(names).ravel().tolist())
        if labels.max() >= len(class_names):
            raise BadInput(
                f"{path}: label {int(labels.max())} has no entry in class_names "
                f"({len(class_names)} names)"
            )
    return Dataset(
        name=path.stem,
        x=torch.from_numpy(x),
        y=torch.from_numpy(labels),
        num_classes=_num_classes(labels, class_names),
        kind="image" if x.ndim >= 3 else "tabular",
        class_names=class_names,
        meta={"source": str(path), "format": "npz"},
    )


def _float_or_nan(text: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "na", "null", "none"):
        return math.nan
    return float(text)


def load_csv(path: Path, label_column: str | None) -> Dataset:
    """A `.csv` with a header row; `label_column` names the label, the rest are features.

    Features must be numeric and present; labels may be integers or strings (strings are
    mapped to class indices in sorted order and kept as class names).
    """
    if label_column is None:
        raise BadInput(f"{path}: a .csv dataset needs a label column (--label-column NAME)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"{path}: cannot read as CSV ({exc})") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise BadInput(f"{path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise BadInput(
            f"{path}: no label column {label_column!r}; columns are: {', '.join(header)}"
        )
    label_at = header.index(label_column)
    feature_at = [i for i in range(len(header)) if i != label_at]
    if not feature_at:
        raise BadInput(f"{path}: has no feature columns besides {label_column!r}")
    values = np.empty((len(rows) - 1, len(feature_at)), dtype=np.float64)
    raw_labels: list[str] = []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ShapeError(
                f"{path}: line {r} has {len(row)} fields, the header has {len(header)}"
            )
        for j, col in enumerate(feature_at):
            try:
                values[r - 2, j] = _float_or_nan(row[col])
            except ValueError:
                raise BadInput(
                    f"{path}: line {r}, column {header[col]!r}: {row[col]!r} is not a number"
                ) from None
        raw_labels.append(row[label_at].strip())
    missing = np.argwhere(~np.isfinite(values))
    if missing.size:
        r, j = missing[0]
        raise BadInput(
            f"{path}: {len(missing)} missing or non-finite values (first at line {r + 2}, "
            f"column {header[feature_at[j]]!r})"
        )
    try:
        label_array = np.array([_float_or_nan(v) for v in raw_labels])
    except ValueError:
        label_array = np.array(raw_labels)
    labels, class_names = _labels(label_array, path)
    x = values.astype(np.float32)
    return Dataset(
        name=path.stem,
        x=torch.from_numpy(x),
        y=torch.from_numpy(labels),
        num_classes=_num_classes(labels, class_names),
        kind="tabular",
        class_names=class_names,
        feature_names=tuple(header[i] for i in feature_at),
        meta={"source": str(path), "format": "csv", "label_column": label_column},
    )


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]: grayscale keeps 1 channel, colour becomes RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float32) / 65535.0
            elif mode in ("1", "L", "LA", "P") and (mode != "P" or _palette_is_gray(img)):
                arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as exc:
        raise BadInput(f"{path}: not a readable image ({exc})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _palette_is_gray(img: object) -> bool:
    palette = img.getpalette()  # type: ignore[attr-defined]
    if not palette:
        return True
    rgb = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def folder_labels(root: Path, folders: list[str]) -> tuple[dict[str, int], tuple[str, ...], str]:
    """(label of each class folder, class names indexed by label, the rule used).

    When every folder name is a whole number (`0`, `1`, `7`, ...), each folder's label is that
    number, so missing classes keep the other labels right (class names for labels without a
    folder are the numbers themselves); otherwise the labels follow the sorted names. Either way
    the mapping is recorded in the data set's `meta["class_map"]` (and so in the reports).
    """
    if all(name.isascii() and name.isdigit() for name in folders):
        mapping = {name: int(name) for name in folders}
        clash = [n for n in folders if list(mapping.values()).count(mapping[n]) > 1]
        if clash:
            raise BadInput(
                f"{root}: class folders {', '.join(sorted(clash))} name the same class number"
            )
        if max(mapping.values()) >= MAX_CLASS_NUMBER:
            raise BadInput(
                f"{root}: class folder {max(folders, key=int)} is not a class number below "
                f"{MAX_CLASS_NUMBER:,}; name class folders 0, 1, ... or by class name"
            )
        names = [str(i) for i in range(max(mapping.values()) + 1)]
        for name, label in mapping.items():
            names[label] = name
        return mapping, tuple(names), "numeric folder names"
    folders = sorted(folders)
    return {name: i for i, name in enumerate(folders)}, tuple(folders), "sorted folder names"


def load_folder(root: Path) -> Dataset:
    """Images under `root/<class_name>/`, one folder per class, labelled by `folder_labels`
    (numeric names are the labels; otherwise sorted names).

    All images must share one size and channel count (1 for grayscale, 3 for colour).
    """
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not folders:
        raise BadInput(
            f"{root}: an image folder needs one subfolder per class (root/<class>/*.png)"
        )
    mapping, class_names, rule = folder_labels(root, folders)
    files: list[tuple[Path, int]] = []
    for name, label in sorted(mapping.items(), key=lambda item: item[1]):
        found = sorted(
            p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        files.extend((p, label) for p in found)
    if not files:
        raise BadInput(
            f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(sorted(folders))}"
        )
    images: list[np.ndarray] = []
    for path, _ in files:
        arr = _read_image(path)
        if images and arr.shape != images[0].shape:
            raise ShapeError(
                f"{path}: image has shape (C, H, W) = {arr.shape}, but {files[0][0]} has "
                f"{images[0].shape}; all images must have the same size and channels"
            )
        images.append(arr)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return Dataset(
        name=root.name,
        x=torch.from_numpy(np.stack(images)),
        y=torch.from_numpy(labels),
        num_classes=len(class_names),
        kind="image",
        class_names=class_names,
        meta={
            "source": str(root),
            "format": "folder",
            "files": len(files),
            "class_map": dict(sorted(mapping.items(), key=lambda item: item[1])),
            "labels_from": rule,
        },
    )


def check_labelled_folder(dataset: Dataset, flag: str = "--data") -> None:
    """Refuse an image folder whose labels cannot be trusted for measuring accuracy: one class
    folder with a non-numeric name (its images would all be class 0)."""
    meta = dataset.meta
    if meta.get("format") != "folder" or meta.get("labels_from") != "sorted folder names":
        return
    if len(meta["class_map"]) < 2:
        folder = next(iter(meta["class_map"]))
        raise BadInput(
            f"{flag} {meta['source']}: only one class folder ({folder!r}), so every image "
            f"would get label 0; give one folder per class, or name folders by class number "
            f"(e.g. {meta['source']}/3/*.png for class 3)"
        )


def folder_class_warning(dataset: Dataset, num_outputs: int | None) -> str | None:
    """A warning when the model has more outputs than `dataset`, an image folder, has class
    folders: labels may not mean what the model's outputs mean."""
    meta = dataset.meta
    if meta.get("format") != "folder" or num_outputs is None:
        return None
    mapping = meta["class_map"]
    if num_outputs <= len(mapping):
        return None
    head = f"the model has {num_outputs} outputs but {meta['source']} has {len(mapping)} class "
    if meta["labels_from"] == "numeric folder names":
        missing = sorted(set(range(num_outputs)) - set(mapping.values()))
        shown = ", ".join(str(k) for k in missing[:10]) + (", ..." if len(missing) > 10 else "")
        return f"{head}folders: no images of class {shown} (folders are named by class number)"
    shown = ", ".join(f"{name}={label}" for name, label in list(mapping.items())[:10])
    more = ", ..." if len(mapping) > 10 else ""
    return (
        f"{head}folders, labelled by their sorted names ({shown}{more}); if the model's "
        "classes are in another order the accuracies are wrong: name the folders by class "
        "number (0, 1, ...) instead"
    )


def load_path(path: Path, label_column: str | None) -> Dataset:
    """Dispatch on what `path` is: a folder, an `.npz` or a `.csv`."""
    if not path.exists():
        raise BadInput(f"{path}: no such file or directory")
    suffix = path.suffix.lower()
    if label_column is not None and (path.is_dir() or suffix != ".csv"):
        raise BadInput(
            f"--label-column {label_column}: only .csv data has label columns; {path} carries "
            "its own labels, drop the option"
        )
    if path.is_dir():
        return load_folder(path)
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path, label_column)
    raise BadInput(
        f"{path}: unsupported data file type {suffix or '(none)'!r}; use an .npz (arrays x, y), "
        f"a .csv with a label column, or an image folder root/<class>/*.png"
    )
