"""Load a classifier the ways users keep them, as an `adversa.Model`.

`spec` is one of:

- a zoo name (`adversa.zoo.list_models()`), trained and cached on first use;
- a TorchScript archive written by `torch.jit.save` (deprecated in recent torch, still read);
- a `torch.export` archive (`*.pt2`, `torch.export.save`), only with `trust_model_file=True`:
  `torch.export.load` unpickles the archive's weights and constants, which runs code from it;
- `path/file.py:factory`: the file is imported, `factory()` must return an `nn.Module`, and
  its state_dict is read from `weights` (`.safetensors`, or a `torch.save` file read with
  `weights_only=True`);
- a directory written by `adversa train` (`card.json` + `model.pt`): the architecture is
  rebuilt from the card and the weights are read with `weights_only=True`;
- `sklearn:path.joblib`: a fitted scikit-learn estimator, only with `trust_model_file=True`
  (joblib unpickles, which runs code from the file).

A file's kind is read from its content (`adversa.safeload.file_kind`), not its name, so a
renamed archive still meets the check of what it is. Weights are read with
`torch.load(weights_only=True)` only; torch.export archives and joblib files, whose loaders
unpickle, are refused (`BadInput`) unless `trust_model_file` is set. Every failure raises
`ModelLoadError` (or `BadInput`) with one line naming the file and the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adversa import safeload
from adversa.errors import BadInput, ModelLoadError, UnknownName
from adversa.model.wrapped import Model

log = logging.getLogger(__name__)

_SHOWN_KEYS = 5


ACCEPTED = (
    "a zoo name, a TorchScript archive (torch.jit.save), a torch.export archive (.pt2, with "
    "--trust-model-file), a directory written by adversa train, path/file.py:factory with "
    "--weights, or sklearn:PATH (with --trust-model-file)"
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_torchscript(path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """`torch.jit.load`, with torch's deprecation warning silenced. Its unpickler resolves only
    TorchScript classes and torch's own functions, so it needs no trust."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelLoadError(
            f"{path}: not a readable TorchScript archive; {safeload.brief(exc)}"
        ) from None


def load_exported(
    path: Path, device: str | torch.device = "cpu", *, trust_model_file: bool = False
) -> nn.Module:
    """`torch.export.load(path).module()`, made usable in eval-mode contexts.

    `torch.export.load` unpickles the archive's weights and constants in full, which runs code
    a crafted archive names: it is refused (`BadInput`) unless `trust_model_file` is set.
    An exported graph fixes train/eval behaviour (dropout, batch norm) at export time, and
    torch makes `.train()`/`.eval()` on it raise; we restore the ordinary methods, which then
    only set flags, so `Model.eval_mode` works. Export in eval mode.
    """
    safeload.require_trust(path, safeload.TORCH_EXPORT, trust_model_file)
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # torch logs a traceback before raising
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # torch raises RuntimeError, BadZipFile, KeyError, ...
        raise ModelLoadError(
            f"{path}: not a torch.export archive (.pt2); {safeload.brief(exc)}"
        ) from None
    finally:
        logger.setLevel(level)
    if torch.device(device).type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    module = program.module()
    for name in ("train", "eval"):
        if name in module.__dict__:
            delattr(module, name)
    return module


@contextlib.contextmanager
def _on_sys_path(directory: Path) -> Iterator[None]:
    entry = str(directory)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def import_file(path: Path) -> types.ModuleType:
    """Import a Python file as a module (its directory on sys.path while it imports)."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    mod_name = f"adversa_user_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        with _on_sys_path(path.parent):
            spec.loader.exec_module(module)
    except Exception as exc:  # user code can raise anything
        raise ModelLoadError(f"{path}: importing it failed: {_first_line(exc)}") from None
    return module


def from_factory(path: Path, factory: str) -> nn.Module:
    """Import `path` and call `factory()`; it must return an `nn.Module`."""
    module = import_file(path)
    fn = getattr(module, factory, None)
    if fn is None or not callable(fn):
        defined = sorted(
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
        )
        raise ModelLoadError(
            f"{path}: no factory {factory!r} in file; callables defined there: "
            f"{', '.join(defined) or 'none'}"
        )
    try:
        net = fn()
    except Exception as exc:  # user code
        raise ModelLoadError(f"{path}: {factory}() raised {_first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise ModelLoadError(
            f"{path}: {factory}() must return a torch.nn.Module, got {type(net).__name__}"
        )
    return net


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state_dict from a safetensors file or a `torch.save` file (weights_only=True), told
    apart by content.

    A checkpoint dict holding the state_dict under "state_dict" or "model_state_dict" is
    unwrapped; a "module." prefix (DistributedDataParallel) is stripped.
    """
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file not found")
    kind = safeload.file_kind(path)
    if kind == safeload.SAFETENSORS:
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(
                f"{path}: cannot read the safetensors file ({safeload.brief(exc)})"
            ) from None
    elif kind in (safeload.TORCH_SAVE, safeload.PICKLE):  # weights-only: safe on any pickle
        state = safeload.load_tensors(path)
    else:
        found = "" if kind == safeload.UNKNOWN else f" (it is a {kind})"
        raise ModelLoadError(
            f"{path}: not a weights file{found}; expected a state_dict saved with torch.save "
            f"or safetensors"
        )
    if isinstance(state, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: does not hold a state_dict (a mapping of names to tensors)")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _shown(keys: set[str]) -> str:
    ordered = sorted(keys)
    more = f" (+{len(ordered) - _SHOWN_KEYS} more)" if len(ordered) > _SHOWN_KEYS else ""
    return ", ".join(ordered[:_SHOWN_KEYS]) + more


def apply_weights(net: nn.Module, path: Path) -> nn.Module:
    """Load the state_dict at `path` into `net`, strictly, with a readable error."""
    state = read_state_dict(path)
    expected = set(net.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_shown(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_shown(unexpected)}")
        raise ModelLoadError(f"{path}: state_dict does not match the model; {'; '.join(parts)}")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        detail = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        reason = "; ".join(detail[:3]) if detail else _first_line(exc)
        raise ModelLoadError(f"{path}: state_dict does not fit the model: {reason}") from None
    return net


def _split_factory(spec: str) -> tuple[Path, str] | None:
    if ":" not in spec:
        return None
    file_part, _, factory = spec.rpartition(":")
    if not file_part.endswith(".py") or not factory.isidentifier():
        return None
    return Path(file_part).expanduser(), factory


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or "." in Path(spec).name or spec.startswith("~")


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    num_classes: int | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    trust_model_file: bool = False,
) -> Model:
    """Load `spec` (zoo name, TorchScript, `.pt2`, `file.py:factory`, a directory written
    by `adversa train`, or `sklearn:path.joblib`) as a `Model`.

    `sklearn:path` unpickles a fitted scikit-learn-style estimator with joblib, and a
    torch.export archive is unpickled by `torch.export.load`; both run code from the file, so
    both are refused (`BadInput`) unless `trust_model_file` is set. `sklearn:path` gives a
    query-only `adversa.tabular.SklearnModel`. A file is routed by its content, not its name
    (`load_model_file`).

    `weights` (a state_dict file) is required in spirit for `file.py:factory` (without it the
    factory's initialisation is used, with a warning) and, when given with a zoo name or an
    archive, replaces the weights it holds. Errors: `ModelLoadError` for files that cannot be
    loaded, `UnknownName` for a name that is neither a zoo model nor an existing file.
    """
    from adversa.zoo import list_models, load_zoo_model

    if spec.startswith("sklearn:"):
        from adversa.tabular.sklearn_model import load_sklearn

        return load_sklearn(
            spec.removeprefix("sklearn:"), trust_model_file=trust_model_file, bounds=bounds
        )
    weights_path = Path(weights).expanduser() if weights is not None else None
    factory = _split_factory(spec)
    if spec.strip().lower() in list_models():
        name = spec.strip().lower()
        if weights_path is None:
            net = load_zoo_model(name, cache_dir=cache_dir, progress=progress, device=device)
        else:
            net = _zoo_architecture(name, cache_dir).to(device)
    elif factory is not None:
        path, factory_name = factory
        net = from_factory(path, factory_name).to(device)
        name = f"{path.name}:{factory_name}"
        if weights_path is None:
            log.warning("no weights given for %s: using the factory's initialisation", spec)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            if _looks_like_path(spec):
                raise ModelLoadError(f"{path}: no such file")
            raise UnknownName("model", spec, list_models())
        if path.suffix == ".py":
            raise ModelLoadError(
                f"{path}: a Python file needs the factory to call, as {spec}:FACTORY "
                f"(plus --weights)"
            )
        if path.is_dir():
            trained = load_training_output(path, device=device, bounds=bounds)
            net, name = trained.module, trained.name
            num_classes = num_classes if num_classes is not None else trained.num_classes
        else:
            net = load_model_file(path, device, trust_model_file=trust_model_file)
            name = path.name
    if weights_path is not None:
        apply_weights(net, weights_path)
    net.eval()
    return Model(net, num_classes=num_classes, bounds=bounds, name=name)


def load_model_file(
    path: Path, device: str | torch.device = "cpu", *, trust_model_file: bool = False
) -> nn.Module:
    """The module in a model file, routed by the file's content: TorchScript to
    `torch.jit.load`, torch.export to `torch.export.load` (only with `trust_model_file`).
    Weights-only files, pickles and anything else are refused with a line that says what the
    file is and what is accepted."""
    kind = safeload.file_kind(path)
    if kind == safeload.TORCHSCRIPT:
        return load_torchscript(path, device)
    if kind == safeload.TORCH_EXPORT:
        return load_exported(path, device, trust_model_file=trust_model_file)
    if kind in (safeload.TORCH_SAVE, safeload.SAFETENSORS):
        what = "torch.save checkpoint" if kind == safeload.TORCH_SAVE else kind
        raise ModelLoadError(
            f"{path}: a {what} holds weights without the architecture; pass "
            f"path/file.py:factory with --weights {path}"
        )
    if kind == safeload.PICKLE:
        raise BadInput(
            f"{path}: a {kind}, which unpickles (runs code from the file) when loaded; a "
            f"scikit-learn estimator loads as sklearn:{path} with --trust-model-file "
            f"(library: trust_model_file=True), for files you trust"
        )
    raise ModelLoadError(
        f"{path}: not a TorchScript archive or other model file; accepted: {ACCEPTED}"
    )


def load_training_output(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    bounds: tuple[float, float] | None = None,
) -> Model:
    """The model in a directory written by `adversa train` (`card.json` + `model.pt`).

    The architecture named in the card is built for the card's input shape and classes, and
    the weights are loaded strictly with `weights_only=True`. `bounds` defaults to the card's.
    """
    import json

    from adversa.errors import AdversaError
    from adversa.zoo.arch import build_arch

    path = Path(path).expanduser()
    card_path, weights_path = path / "card.json", path / "model.pt"
    if not card_path.is_file():
        hint = ""
        if (path / "checkpoint.pt").exists():
            hint = " (the training run has not finished: continue it with adversa train --resume)"
        raise ModelLoadError(
            f"{path}: is a directory without card.json{hint}; expected a training output "
            f"directory, a TorchScript or .pt2 archive, a zoo name, or file.py:factory"
        )
    try:
        card = json.loads(card_path.read_text())
        arch, shape = card["arch"], tuple(int(d) for d in card["input_shape"])
        classes = int(card["num_classes"])
        card_bounds = tuple(float(b) for b in card.get("bounds", (0.0, 1.0)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{card_path}: not a readable model card ({_first_line(exc)})"
        ) from None
    if not weights_path.is_file():
        raise ModelLoadError(f"{path}: card.json without model.pt")
    try:
        net = build_arch(arch, shape, classes)
    except AdversaError as exc:
        raise ModelLoadError(f"{card_path}: cannot rebuild the architecture ({exc})") from None
    apply_weights(net, weights_path)
    net.to(device).eval()
    used = bounds if bounds is not None else card_bounds
    return Model(net, num_classes=classes, bounds=used, name=path.name)  # type: ignore[arg-type]


def _zoo_architecture(name: str, cache_dir: str | Path | None) -> nn.Module:
    """The untrained architecture of zoo model `name` (for user weights)."""
    from adversa.data import load_data
    from adversa.zoo import build_zoo_module, zoo_entry
    from adversa.zoo.cache import read_card

    entry = zoo_entry(name)
    card = read_card(entry, cache_dir)
    if card is not None:
        shape, classes = tuple(card["input_shape"]), int(card["num_classes"])
    else:
        data = load_data(entry.data, split="test")
        shape, classes = data.input_shape, data.num_classes
    return build_zoo_module(entry, shape, classes)
