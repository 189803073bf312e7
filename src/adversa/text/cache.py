"""The built-in text victims' cache: read what an earlier run trained, else train and save."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from adversa.errors import ModelLoadError, UnsafePickle

log = logging.getLogger(__name__)

T = TypeVar("T")


def cached_victim(path: Path, load: Callable[[Path], T], train: Callable[[], Any], what: str) -> T:
    """`load(path)` when the file is there and readable; otherwise `train()`, saved to `path`
    (an unwritable cache only logs a warning). A file that is not what adversa wrote is shown
    (`UnsafePickle`), never overwritten."""
    if path.exists():
        try:
            return load(path)
        except UnsafePickle as exc:
            raise UnsafePickle(f"text model cache: {exc}; delete {path} to retrain") from None
        except ModelLoadError as exc:
            log.warning("cached %s unreadable (%s); retraining", what, exc)
    start = time.perf_counter()
    model = train()
    log.info("trained the %s in %.1f s", what, time.perf_counter() - start)
    try:
        model.save(path)
    except OSError as exc:
        log.warning("could not cache the %s at %s (%s)", what, path, exc)
    return model
