"""Pieces every `adversa` subcommand shares: exit codes, option parsers and checks, the
one-line error text, and the rich progress bars (the only place the library's progress
callbacks are drawn)."""

from __future__ import annotations

import math
from typing import Any

import torch

from adversa.errors import AdversaError, BadInput

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def parse_eps(text: str) -> list[float]:
    """'0.1' or '0.1,0.2' or '8/255,16/255' -> floats; each must be a finite number >= 0."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(part)
        except (ValueError, ZeroDivisionError):
            raise BadInput(
                f"--eps: cannot read {part!r} as a number (examples: 0.3, 8/255, 0.1,0.2)"
            ) from None
        if not math.isfinite(value):
            raise BadInput(f"--eps must be finite, got {part!r}")
        if value < 0:
            raise BadInput(f"eps must be >= 0, got {value:g}")
        values.append(value)
    return values


def parse_bounds(text: str) -> tuple[float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise BadInput(f"--bounds must be LO,HI (e.g. 0,1), got {text!r}") from None
    return lo, hi


def parse_attacks(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise BadInput(f"--attacks must name at least one attack, got {text!r}")
    return names


def check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise BadInput(f"{flag} must be >= 1, got {value}")


def check_device(device: str) -> None:
    kind = device.split(":", 1)[0]
    if kind not in ("cpu", "cuda"):
        raise BadInput(f"--device must be cpu or cuda[:index], got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: CUDA is not available on this machine")


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and not isinstance(exc, AdversaError):
        text = repr(exc.args[0]) if exc.args else ""
    first = text.splitlines()[0] if text else ""
    return first or type(exc).__name__


class RichProgress:
    """Adapts the library's `progress(description, completed, total)` callback to rich bars,
    one per description, on stderr; invisible when stderr is not a terminal."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bars = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=not enabled,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tasks:
            self._bars.stop()

    def __call__(self, description: str, completed: int, total: int) -> None:
        if not self._tasks:
            self._bars.start()  # on the first report, so that early errors print alone
        task = self._tasks.get(description)
        if task is None:
            task = self._tasks[description] = self._bars.add_task(description, total=total)
        self._bars.update(task, completed=completed, total=total)


SEED_LIMIT = 2**62  # torch generators take 64 bits; adversa derives seeds by adding offsets


def check_seed(value: int) -> None:
    """`--seed` of every subcommand: an integer within +-2**62."""
    if not -SEED_LIMIT <= value <= SEED_LIMIT:
        raise BadInput(f"--seed must be an integer between -2**62 and 2**62, got {value}")


def check_output_file(flag: str, path: str) -> None:
    """An output file option (e.g. --save-model): refused before any work when the path is a
    directory or lies under an existing file."""
    from pathlib import Path

    target = Path(path).expanduser()
    if target.is_dir():
        raise BadInput(f"{flag} {path}: is a directory, expected a file name")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BadInput(f"{flag} {path}: {parent} is a file, not a directory")
            break


def check_out_dir(flag: str, path: str) -> None:
    """An output directory option (`--out`): refused before any work when it is an existing
    file, lies under a file, or cannot be written. Nothing is created: a probe file is written
    and removed in the directory, or in its nearest existing ancestor when it does not exist
    yet (the writers create it when the report is ready)."""
    import os
    import tempfile
    from pathlib import Path

    if not path.strip():
        raise BadInput(f"{flag} {path!r}: expected a directory path")
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise BadInput(f"{flag} {path}: is an existing file, expected a directory")
    existing = next(p for p in (target, *target.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise BadInput(f"{flag} {path}: {existing} is a file, so the directory cannot be created")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".adversa-probe-")
    except OSError as exc:
        where = "" if existing == target else f" (its nearest existing folder {existing})"
        reason = (exc.strerror or str(exc)).lower()
        raise BadInput(f"{flag} {path}: not writable{where}: {reason}") from None
    os.close(fd)
    os.unlink(probe)
