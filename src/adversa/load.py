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
  (joblib unpickles, which runs code from the file);
- an ONNX file: converted with onnx2torch for white-box attacks, or served by onnxruntime as
  a query-only model when it does not convert (`adversa.model.onnx`).

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
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from adversa import safeload
from adversa.errors import BadInput, ModelLoadError, UnknownName
from adversa.model.onnx import load_onnx
from adversa.model.weights import apply_weights, first_line
from adversa.model.wrapped import Model
from adversa.nets.normalize import parse_normalization
from adversa.train.output import load_training_output

log = logging.getLogger(__name__)


ACCEPTED = (
    "a zoo name, a TorchScript archive (torch.jit.save), a torch.export archive (.pt2, with "
    "--trust-model-file), an ONNX file, a directory written by adversa train, "
    "path/file.py:factory with --weights, or sklearn:PATH (with --trust-model-file)"
)


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
        raise ModelLoadError(f"{path}: importing it failed: {first_line(exc)}") from None
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
        raise ModelLoadError(f"{path}: {factory}() raised {first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise ModelLoadError(
            f"{path}: {factory}() must return a torch.nn.Module, got {type(net).__name__}"
        )
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
    normalize: str | None = None,
    autocast: str | None = None,
    channels_last: bool = False,
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
    archive, replaces the weights it holds. `normalize` (`imagenet`, `cifar10` or
    `MEANS/STDS`, `nets.parse_normalization`) puts that normalisation in front of the model.
    `autocast` ("bfloat16", "float16") lets attacks search in that precision and
    `channels_last` runs convolutions in that memory layout (`Model`); PyTorch models only.
    Errors: `ModelLoadError` for files that cannot be loaded, `UnknownName` for a name that is
    neither a zoo model nor an existing file.
    """
    from adversa.zoo import list_models, load_zoo_model

    mean, std = parse_normalization(normalize) if normalize is not None else (None, None)
    if spec.startswith(("hf:", "builtin:")):
        raise BadInput(
            f"--model {spec}: a text classifier; attack it with adversa text-attack --model "
            f"{spec} (this command takes image and tabular models)"
        )
    if spec.startswith("sklearn:"):
        from adversa.tabular.sklearn_model import load_sklearn

        if normalize is not None:
            raise BadInput(f"--normalize {normalize}: a scikit-learn model takes no normalisation")
        _pytorch_only(autocast, channels_last, spec)

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
        elif safeload.file_kind(path) == safeload.ONNX:
            if weights_path is not None:
                raise BadInput(f"--weights {weights}: an ONNX model holds its weights; drop it")
            _pytorch_only(autocast, channels_last, "ONNX")
            return load_onnx(
                path, device=device, num_classes=num_classes, bounds=bounds, mean=mean, std=std
            )
        else:
            net = load_model_file(path, device, trust_model_file=trust_model_file)
            name = path.name
    if weights_path is not None:
        apply_weights(net, weights_path)
    net.eval()
    return Model(
        net,
        num_classes=num_classes,
        bounds=bounds,
        name=name,
        mean=mean,
        std=std,
        autocast=autocast,
        channels_last=channels_last,
    )


def _pytorch_only(autocast: str | None, channels_last: bool, what: str) -> None:
    if autocast is not None:
        raise BadInput(f"--autocast {autocast}: applies to PyTorch models, not {what}")
    if channels_last:
        raise BadInput(f"--channels-last: applies to PyTorch models, not {what}")


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
