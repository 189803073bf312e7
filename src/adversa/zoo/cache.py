"""Train-on-first-use and cache the zoo's models, so every command has an offline default.

A model lives in `cache_dir()/zoo/` as two files named after the entry and its recipe
fingerprint: `<name>-<fp>.pt` (a state_dict, loaded with `weights_only=True`) and
`<name>-<fp>.json` (its card: clean accuracy, training seconds, versions, the weights' sha256).
Both are written atomically, weights first, so a card on disk always describes complete
weights. Training is the library's loop (`adversa.train.loop.train`), checkpointing
into `cache_dir()/runs/<name>-<fp>/` so that an interrupted first use resumes; the run's files
are removed once the model is cached. A file lock serialises training across processes (e.g.
torchrun ranks): the first trains, the others wait and then load its result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adversa.errors import AdversaError, ModelLoadError
from adversa.io import atomic_torch_save, atomic_write_text
from adversa.nets import build_arch
from adversa.safeload import brief, load_tensors
from adversa.train.loop import train
from adversa.train.rundir import RunDir
from adversa.versions import versions
from adversa.zoo.entries import ZooEntry, zoo_entry

Progress = Callable[[str, int, int], None]  # (description, completed, total)

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Where zoo weights live: $ADVERSA_CACHE, else $XDG_CACHE_HOME/adversa, else
    ~/.cache/adversa."""
    env = os.environ.get("ADVERSA_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "adversa"


def zoo_paths(entry: ZooEntry, root: str | Path | None = None) -> tuple[Path, Path]:
    """(weights, card) paths of `entry` in the cache."""
    base = (Path(root).expanduser() if root is not None else cache_dir()) / "zoo"
    stem = f"{entry.name}-{entry.fingerprint}"
    return base / f"{stem}.pt", base / f"{stem}.json"


def build_zoo_module(entry: ZooEntry, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The entry's architecture, initialised from `entry.seed` without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(entry.seed)
        return build_arch(entry.arch, input_shape, num_classes)


def train_zoo_entry(
    entry: ZooEntry,
    *,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
    run_dir: str | Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train `entry` with the library's training loop; return the module (eval mode) and its
    zoo card. With `run_dir`, the run checkpoints there every epoch and resumes from it."""
    log.info("training zoo model %s (%s, %d epochs)", entry.name, entry.arch, entry.epochs)
    result = train(
        entry.train_config(),
        run_dir,
        resume=run_dir is not None,
        progress=progress,
        device=device,
        description=f"training {entry.name}",
        local=True,  # under torchrun, rank 0 trains alone while the others wait
    )
    train_card, last = result.card, result.history[-1]
    clean = float(train_card["evaluation"]["clean_accuracy"])
    seconds = train_card["train_seconds"]
    log.info("zoo model %s: clean accuracy %.4f in %.1f s", entry.name, clean, seconds)
    adv_accuracy = last.get("adv_accuracy")
    card: dict[str, Any] = {
        "name": entry.name,
        "fingerprint": entry.fingerprint,
        "entry": dataclasses.asdict(entry),
        "input_shape": train_card["input_shape"],
        "num_classes": train_card["num_classes"],
        "train_size": train_card["n_train"],
        "test_size": train_card["n_test"],
        "clean_accuracy": clean,
        "train_seconds": train_card["train_seconds"],
        "train_cpu_seconds": train_card["train_cpu_seconds"],
        "train_steps": last["steps"],
        "train_loss": last["loss"],
        "train_accuracy": adv_accuracy if adv_accuracy is not None else last["clean_accuracy"],
        "train_config": train_card["config"],
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    return result.module.eval(), card


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (POSIX flock); a no-op where unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_card(entry: ZooEntry | str, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The cached card of `entry` (a `ZooEntry` or a zoo name), or None if not trained yet."""
    entry = zoo_entry(entry) if isinstance(entry, str) else entry
    _, card_path = zoo_paths(entry, cache_dir)
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError):
        return None
    return card if card.get("fingerprint") == entry.fingerprint else None


def _load_cached(
    entry: ZooEntry, root: str | Path | None, device: str | torch.device
) -> nn.Module | None:
    """The cached module, or None when there is none or its weights do not match the card's
    sha256 (an interrupted or stale write: retrain). Weights that match the card yet cannot be
    loaded (weights-only) are not what adversa wrote, or not for this version: `ModelLoadError`
    naming the files to delete, rather than silently overwriting them."""
    weights_path, card_path = zoo_paths(entry, root)
    card = read_card(entry, root)
    if card is None or not weights_path.exists():
        return None
    if card.get("weights_sha256") != _sha256(weights_path):
        log.warning("cached weights of %s do not match their card; retraining", entry.name)
        return None
    try:
        module = build_zoo_module(entry, tuple(card["input_shape"]), int(card["num_classes"]))
        module.load_state_dict(load_tensors(weights_path, what="zoo cache file"))
    except (AdversaError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        reason = str(exc) if isinstance(exc, AdversaError) else f"{weights_path}: {brief(exc)}"
        raise ModelLoadError(
            f"zoo model {entry.name}: {reason}; delete {weights_path} and {card_path} to retrain it"
        ) from None
    return module.to(device).eval()


def load_zoo_entry(
    entry: ZooEntry,
    *,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load `entry` from the cache, training and caching it first if needed.

    If the cache directory cannot be written, the model is trained anyway and returned
    uncached, with a warning (set ADVERSA_CACHE to a writable directory to keep it).
    """
    weights_path, card_path = zoo_paths(entry, cache_dir)
    module = _load_cached(entry, cache_dir, device)
    if module is not None:
        return module
    try:
        weights_path.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(weights_path.parent, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        log.warning(
            "zoo cache %s is not writable; training %s without caching it (set ADVERSA_CACHE)",
            weights_path.parent,
            entry.name,
        )
        return train_zoo_entry(entry, progress=progress, device=device)[0]
    run_dir = _run_dir(weights_path)
    with _file_lock(weights_path.with_suffix(".lock")):
        module = _load_cached(entry, cache_dir, device)  # another process may have won
        if module is not None:
            return module
        module, card = train_zoo_entry(entry, progress=progress, device=device, run_dir=run_dir)
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        try:
            atomic_torch_save(state, weights_path)
            card["weights_sha256"] = _sha256(weights_path)
            atomic_write_text(card_path, json.dumps(card, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            log.warning("could not cache zoo model %s (%s)", entry.name, exc)
            return module.eval()
        _remove_run(run_dir)
    log.info("cached zoo model %s at %s", entry.name, weights_path)
    return module.eval()


def _run_dir(weights_path: Path) -> Path:
    """Where a zoo model's training run checkpoints (`<cache>/runs/<name>-<fp>/`), so that an
    interrupted first use resumes from its last finished epoch instead of starting over."""
    return weights_path.parent.parent / "runs" / weights_path.stem


def _remove_run(run_dir: Path) -> None:
    """Drop a finished run's files (the cached weights and card replace them)."""
    RunDir(run_dir).clear()
    for directory in (run_dir, run_dir.parent):
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty


def load_zoo_model(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Zoo model `name` in eval mode, mapping inputs in [0, 1] to logits.

    Trained with a fixed seed on first use (seconds to minutes on a CPU), then loaded from the
    cache (`cache_dir`, else `adversa.zoo.cache_dir()`). `progress(description, completed,
    total)` is called during training only.
    """
    return load_zoo_entry(zoo_entry(name), cache_dir=cache_dir, progress=progress, device=device)
