"""Reading model, weight and array files without running code from them.

Several formats adversa reads are pickles underneath: `torch.save` files, joblib files, and the
weights and constants inside a `torch.export` archive (`.pt2`), which `torch.export.load`
unpickles in full. Unpickling calls whatever the file names, so a crafted file runs code when
it is loaded. Hence:

- `file_kind` tells formats apart by their content, never their name, so that a file reaches
  the loader of what it really is (a renamed `.pt2` is still a torch.export archive);
- `require_trust` refuses the kinds whose loader unpickles (torch.export archives,
  joblib/pickle files) unless the caller passed `trust_model_file=True` (CLI:
  `--trust-model-file`);
- `load_tensors` is `torch.load(weights_only=True)`, which rebuilds tensors, containers and
  numbers only, with every failure as one `ModelLoadError` line naming the file (`UnsafePickle`
  when the file names anything else); no flag turns that into a full unpickling;
- `load_npz` reads `.npz` arrays with `allow_pickle=False` and checks their names and dtypes.

TorchScript archives need no trust: `torch.jit.load` reads their pickles with its own
unpickler, which resolves only TorchScript classes and a fixed set of torch functions
(tests/test_malicious_files.py checks that a payload in `data.pkl` or `constants.pkl` is
refused and never runs).
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adversa.errors import AdversaError, BadInput, ModelLoadError, UnsafePickle

TORCH_EXPORT = "torch.export archive"
TORCHSCRIPT = "TorchScript archive"
TORCH_SAVE = "torch.save file"
SAFETENSORS = "safetensors file"
PICKLE = "pickle/joblib file"
NUMPY = "numpy array file"
ONNX = "ONNX model"
UNKNOWN = "unknown"

TRUST_HINT = "pass --trust-model-file (library: trust_model_file=True) only for files you trust"

# torch.save's legacy (non-zip) format: pickle protocol 2, then the magic number as a long
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_ONNX_NEXT = (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72)  # ModelProto fields 2-8, 14
_EXPORT_MARKERS = ("archive_format", "serialized_exported_program.json")


def zip_members(path: Path) -> list[str] | None:
    """The member names of the zip archive at `path`, or None if it is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def file_kind(path: Path) -> str:
    """What the file at `path` holds, judged by its content: one of `TORCH_EXPORT`,
    `TORCHSCRIPT`, `TORCH_SAVE`, `SAFETENSORS`, `PICKLE`, `NUMPY`, `ONNX` or `UNKNOWN`."""
    names = zip_members(path)
    if names is not None:
        base = {name.rsplit("/", 1)[-1] for name in names}
        if any(marker in base for marker in _EXPORT_MARKERS):
            return TORCH_EXPORT
        has_code = any(name.startswith("code/") or "/code/" in name for name in names)
        if has_code and "constants.pkl" in base:
            return TORCHSCRIPT
        if "data.pkl" in base:
            return TORCH_SAVE
        if names and all(name.endswith(".npy") for name in names):
            return NUMPY
        return UNKNOWN
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
        size = path.stat().st_size
    except OSError:
        return UNKNOWN
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return TORCH_SAVE
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return SAFETENSORS
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return PICKLE
    if head.startswith(b"\x93NUMPY"):
        return NUMPY
    # An ONNX ModelProto opens with field 1, ir_version (a small varint), then more fields.
    if len(head) > 2 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _ONNX_NEXT:
        return ONNX
    return UNKNOWN


def require_trust(path: Path, kind: str, trust_model_file: bool) -> None:
    """Refuse (`BadInput`) to load a `kind` whose loader unpickles, unless trusted."""
    if not trust_model_file:
        raise BadInput(
            f"refusing to load {path}: it is a {kind}, which unpickles (runs code from the "
            f"file) when loaded; {TRUST_HINT}"
        )


def brief(exc: BaseException) -> str:
    """`Type: first sentence` of an exception (torch appends paragraphs of advice)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    line = line.split(". ", 1)[0][:160]
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _refused_global(exc: BaseException) -> str:
    """What the weights-only unpickler refused, as ' (Unsupported global: GLOBAL os.system)',
    or '' when torch does not say."""
    found = re.search(r"(Unsupported global: GLOBAL [\w.]+)", str(exc))
    return f" ({found.group(1)})" if found else ""


def load_tensors(path: Path, *, what: str = "weights file", map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`: tensors, containers and numbers, never code.

    Raises `UnsafePickle` when the file names anything else (a crafted file's payload, or a
    pickled object) and `ModelLoadError` for any other failure, each one line naming `path`.
    """
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error says it
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such {what}") from None
    except pickle.UnpicklingError as exc:
        raise UnsafePickle(
            f"{path}: refused: the {what} holds pickled objects other than tensors"
            f"{_refused_global(exc)}; adversa loads weights only, never code"
        ) from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, ValueError, ...
        raise ModelLoadError(f"{path}: cannot read the {what} ({brief(exc)})") from None


def load_npz(
    path: Path,
    keys: Sequence[str],
    *,
    optional: Sequence[str] = (),
    label: str | None = None,
) -> dict[str, np.ndarray]:
    """The numeric arrays `keys` (all required) and `optional` (when present) of the `.npz` at
    `path`, read without pickle. Errors (`BadInput`) start with `label` (default: the path):
    not an `.npz`, a missing array, an object array (it would need pickle) or a non-numeric
    dtype."""
    name = label or str(path)
    if not Path(path).is_file():
        raise BadInput(f"{name}: no such file")
    if zip_members(Path(path)) is None:
        raise BadInput(f"{name}: not an .npz archive (expected arrays {', '.join(keys)})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise BadInput(
                    f"{name}: no array {', '.join(repr(k) for k in missing)} (holds: "
                    f"{', '.join(archive.files) or 'nothing'})"
                )
            wanted = [*keys, *(key for key in optional if key in archive.files)]
            arrays = {key: archive[key] for key in wanted}
    except AdversaError:
        raise
    except ValueError as exc:  # object arrays would need pickle
        if "allow_pickle" in str(exc):
            raise BadInput(f"{name}: holds object arrays, which need pickle (refused)") from None
        raise BadInput(f"{name}: not a readable .npz archive ({brief(exc)})") from None
    except Exception as exc:  # BadZipFile, OSError, EOFError, zlib.error, ...
        raise BadInput(f"{name}: not a readable .npz archive ({brief(exc)})") from None
    for key, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise BadInput(f"{name}: array {key!r} has dtype {array.dtype}, expected numbers")
    return arrays
