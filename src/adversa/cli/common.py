"""Pieces every `adversa` subcommand shares: exit codes, option parsers and checks, the
one-line error text, and the progress display (the only place the library's progress
callbacks are drawn): rich bars on a terminal, plain timed lines in a log."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

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


NORMALIZE_HELP = (
    "normalisation the model expects, put in front of it so attacks stay in pixel space: "
    "imagenet, cifar10 or MEANS/STDS (e.g. 0.5/0.25 or 0.485,0.456,0.406/0.229,0.224,0.225)"
)
MODEL_HELP = "zoo name, training directory, file, ..."
WEIGHTS_HELP = "state_dict for a file.py:factory model"
TRUST_HELP = (
    "allow loading a torch.export archive (.pt2) or sklearn:PATH.joblib; both unpickle, "
    "which runs code from the file"
)


def add_model_options(
    parser: Any,
    *,
    model_help: str = MODEL_HELP,
    weights_help: str = WEIGHTS_HELP,
    trust_help: str = TRUST_HELP,
) -> None:
    """--model (required), --weights, --normalize and --trust-model-file, in that order, as
    `model_options` reads them: the one declaration every command that loads a model uses.
    The helps say what differs per command (which files --model takes, which options the
    trust covers)."""
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--weights", help=weights_help)
    parser.add_argument("--normalize", metavar="NAME|MEANS/STDS", help=NORMALIZE_HELP)
    parser.add_argument("--trust-model-file", action="store_true", help=trust_help)


def model_options(args: Any) -> dict[str, Any]:
    """The `load_model` keywords the options of `add_model_options` give."""
    return {
        "weights": args.weights,
        "trust_model_file": args.trust_model_file,
        "normalize": args.normalize,
    }


def add_speed_options(parser: Any) -> None:
    """`--autocast` (attacks search in reduced precision, verification stays in full) and
    `--channels-last` (convolutions in the faster memory layout, the same values)."""
    parser.add_argument(
        "--autocast",
        choices=("bfloat16", "float16"),
        help="run the attacks' searches under torch.autocast in this precision (where the "
        "device supports it); every reported success is verified in the model's own precision",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="run the model's convolutions in the channels-last memory layout: the same "
        "results, faster on CPU and on tensor-core GPUs (docs/models.md)",
    )


AUTO = "auto"


def parse_batch_size(text: str) -> int | str:
    """`--batch-size`: a positive integer or `auto` (argparse turns a ValueError into one
    line naming the flag and the value)."""
    if text.strip().lower() == AUTO:
        return AUTO
    return int(text)


parse_batch_size.__name__ = "batch size (a positive integer or auto)"


def check_positive(flag: str, value: int) -> None:
    if value < 1:
        named = "--n (--n-points)" if flag == "--n" else flag  # either spelling was typed
        raise BadInput(f"{named} must be >= 1, got {value}")


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


PLAIN_INTERVAL = 5.0  # seconds between two plain progress lines of one task


class RichProgress:
    """Adapts the library's `progress(description, completed, total)` callback for people, one
    task per description, on `stream` (stderr): rich bars when it is a terminal, else plain
    lines (`PlainProgress`) that a log file keeps. `enabled=False` shows nothing (the other
    ranks of a torchrun job)."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        stream = sys.stderr if stream is None else stream
        terminal = enabled and _is_terminal(stream)
        self._plain = PlainProgress(stream) if enabled and not terminal else None
        self._bars = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=True,
            disable=not terminal,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tasks:
            self._bars.stop()

    def __call__(self, description: str, completed: int, total: int) -> None:
        if self._plain is not None:
            self._plain(description, completed, total)
            return
        if not self._tasks:
            self._bars.start()  # on the first report, so that early errors print alone
        task = self._tasks.get(description)
        if task is None:
            task = self._tasks[description] = self._bars.add_task(description, total=total)
        self._bars.update(task, completed=completed, total=total)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


@dataclasses.dataclass(slots=True)
class _Task:
    start: float  # clock at the task's first report
    last: float  # clock at its last printed line (its start until one is printed)
    completed: int = 0
    printed: bool = False


class PlainProgress:
    """The progress callback as plain, flushed lines for a log (`... 2>&1 | tee log`):

        [12:03:05] pgd eps=0.1: 300/1000 (30%), 12 s elapsed, ~28 s left

    A task (one description) prints nothing in its first `interval` seconds (default
    PLAIN_INTERVAL), then at most one line per `interval`, and a final line when it ends
    (completed >= total) if it printed or ran that long: short tasks stay silent, long work
    shows it is moving. A description reported again after its end, or with a smaller count,
    starts a new task. `clock` (seconds) and `wall` (the time of day shown) can be replaced in
    tests."""

    def __init__(
        self,
        stream: TextIO,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = lambda: time.strftime("%H:%M:%S"),
    ) -> None:
        self._stream, self._clock, self._wall = stream, clock, wall
        self._interval = PLAIN_INTERVAL if interval is None else interval
        self._tasks: dict[str, _Task] = {}

    def __call__(self, description: str, completed: int, total: int) -> None:
        now = self._clock()
        task = self._tasks.get(description)
        if task is None or completed < task.completed:
            task = self._tasks[description] = _Task(start=now, last=now)
        task.completed = completed
        done = completed >= total
        due = now - task.last >= self._interval
        if done:
            del self._tasks[description]
            due = due or task.printed or now - task.start >= self._interval
        if not due:
            return
        task.last, task.printed = now, True
        elapsed = now - task.start
        share = completed / total if total > 0 else 1.0
        line = f"[{self._wall()}] {description}: {completed}/{total} ({share:.0%}), "
        if done:
            line += f"done in {_duration(elapsed)}"
        elif completed > 0:
            left = elapsed * (total - completed) / completed
            line += f"{_duration(elapsed)} elapsed, ~{_duration(left)} left"
        else:
            line += f"{_duration(elapsed)} elapsed"
        print(line, file=self._stream, flush=True)


def _duration(seconds: float) -> str:
    """`12 s`, `3 min 05 s`, `2 h 04 min`."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


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
