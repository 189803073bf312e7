"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Each writer fills a temporary file in the destination's directory (so the final rename stays
on one filesystem), flushes and fsyncs it, then `os.replace`s it over the destination. On any
error the temporary file is removed and the destination is left untouched. Parent directories
are created as needed, and the new file gets the usual permissions (0o666 minus the umask)
rather than the 0o600 of a temporary file.

A process killed between the two steps leaves its temporary file behind. The temporary names
are `.<name>.adversa-<8 random characters>.tmp`; the first write into a directory by a later
process removes the ones there that are older than that process's start (`_remove_stale`), so
a run in the same directory cleans up after a killed one. Nothing else is ever removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_open", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text"]

TEMP_SUFFIX = ".tmp"
TEMP_MARK = ".adversa-"  # between the destination's name and mkstemp's random characters
# `.<name>.adversa-XXXXXXXX.tmp` exactly as `atomic_open` names it (mkstemp's alphabet)
_TEMP_NAME = re.compile(r"\..+" + re.escape(TEMP_MARK) + r"[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))
# the names of earlier versions, `.<name>.XXXXXXXX.tmp`: removed only beside a file <name>
_OLD_TEMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))
_STARTED = time.time()  # temporary files older than this are not this process's
_cleaned: set[Path] = set()

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a binary file; on a clean exit it atomically becomes `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent, target.name)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}{TEMP_MARK}", suffix=TEMP_SUFFIX
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def _remove_stale(directory: Path, name: str) -> None:
    """Remove, once per process and directory, the temporary files `atomic_open` left there
    when an earlier process was killed mid-write: names of its own pattern only (or of the
    earlier pattern, for a file that exists or is being written: `name`), last modified
    before this process started."""
    key = directory.resolve()
    if key in _cleaned:
        return
    _cleaned.add(key)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    present = {entry.name for entry in entries} | {name}
    for entry in entries:
        old = _OLD_TEMP_NAME.fullmatch(entry.name)
        if not (_TEMP_NAME.fullmatch(entry.name) or (old and old.group(1) in present)):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < _STARTED:
                os.unlink(entry.path)
                log.info("removed %s, left by an interrupted write", entry.path)
        except OSError:
            continue


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically; return the path."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically; return the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """`torch.save(obj, path)`, atomically; return the path."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)
    return Path(path)
