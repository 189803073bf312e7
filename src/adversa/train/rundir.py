"""A training run's output directory: what it holds, checks before reuse, atomic writes.

    DIR/config.json     the run's `TrainConfig.to_dict()`, written when the run starts
    DIR/checkpoint.pt   after every epoch: weights, optimizer, scheduler, defense state, history
    DIR/metrics.jsonl   one JSON line per finished epoch
    DIR/model.pt        the final weights (a state_dict, loadable with weights_only=True)
    DIR/card.json       the model card (data, defense, hyper-parameters, seed, versions, scores)
    DIR/teacher.pt      the teacher's weights (defensive distillation only)

Every file is written atomically (`adversa.io`), the checkpoint before the metrics, and the
metrics file is rewritten whole from the checkpoint's history, so a run killed at any moment
leaves a directory that `--resume` continues from the last finished epoch. A directory holding
a different run (another config) is refused unless asked to overwrite it; overwriting removes
only the files above, never anything else in the directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from adversa.errors import BadInput, ModelLoadError
from adversa.io import atomic_torch_save, atomic_write_text
from adversa.safeload import load_tensors

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
FILES: tuple[str, ...] = (
    "config.json",
    "checkpoint.pt",
    "metrics.jsonl",
    "model.pt",
    "card.json",
    "teacher.pt",
)


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The files of one training run under `path`."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def model_path(self) -> Path:
        return self.path / "model.pt"

    @property
    def card_path(self) -> Path:
        return self.path / "card.json"

    def prepare(
        self, config: dict[str, Any], *, resume: bool, overwrite: bool, main: bool
    ) -> dict[str, Any] | None:
        """Check the directory against `config` and return the checkpoint to resume from (None:
        start from scratch). Only the `main` rank removes files (with `overwrite`).

        Refuses (BadInput): a path that is a file; a directory holding a run with another
        config, unless `overwrite`; one holding this very run without `resume` or `overwrite`.
        """
        if resume and overwrite:
            raise BadInput("resume and overwrite exclude each other: pass one of them")
        if self.path.exists() and not self.path.is_dir():
            raise BadInput(f"output directory {self.path} is a file")
        recorded = self.recorded_config()
        if recorded is None:
            if resume:
                log.info("nothing to resume in %s: starting a new run", self.path)
            return None
        if overwrite:
            if main:
                self.clear()
            return None
        changed = differences(recorded, config)
        if changed:
            raise BadInput(
                f"output directory {self.path} holds a different run ({changed}); use another "
                f"directory, or overwrite it (--overwrite)"
            )
        checkpoint = self.load_checkpoint()
        if not resume:
            if self.finished_card() is not None:
                done = "finished"
            elif checkpoint is None:
                done = "no epoch finished"
            else:
                stage = "" if checkpoint["stage"] == "train" else f" of stage {checkpoint['stage']}"
                done = f"{checkpoint['epoch']} of {config.get('epochs')} epochs{stage} finished"
            raise BadInput(
                f"output directory {self.path} already holds this run ({done}); continue it "
                f"(--resume) or start over (--overwrite)"
            )
        return checkpoint

    def recorded_config(self) -> dict[str, Any] | None:
        """The config of the run in the directory (config.json, else the card's), or None."""
        for path, key in ((self.config_path, None), (self.card_path, "config")):
            if not path.exists():
                continue
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise BadInput(
                    f"{path}: unreadable ({exc}); remove it or overwrite the run (--overwrite)"
                ) from None
            config = data.get(key) if key else data
            if isinstance(config, dict):
                return config
        if self.checkpoint_path.exists():
            checkpoint = self.load_checkpoint()
            return checkpoint["config"] if checkpoint else None
        return None

    def load_checkpoint(self, device: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The last checkpoint (tensors on `device`), or None when there is none."""
        if not self.checkpoint_path.exists():
            return None
        try:  # weights-only: a crafted checkpoint is refused, never run
            state = load_tensors(self.checkpoint_path, what="checkpoint", map_location=device)
        except ModelLoadError as exc:
            raise BadInput(f"{exc}; overwrite the run (--overwrite)") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise BadInput(
                f"{self.checkpoint_path}: not a checkpoint of this version of adversa "
                f"(format {CHECKPOINT_FORMAT}); overwrite the run (--overwrite)"
            )
        return state

    def clear(self) -> None:
        """Remove the run's files (and nothing else)."""
        for name in FILES:
            (self.path / name).unlink(missing_ok=True)

    def begin(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    def save_epoch(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint, then metrics.jsonl rewritten from its history (both atomic)."""
        atomic_torch_save({"format": CHECKPOINT_FORMAT, **checkpoint}, self.checkpoint_path)
        lines = "".join(json.dumps(line, sort_keys=True) + "\n" for line in checkpoint["history"])
        atomic_write_text(self.metrics_path, lines)

    def save_final(
        self,
        state_dict: dict[str, torch.Tensor],
        card: dict[str, Any],
        teacher: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """The final weights (and teacher's), then the card with their sha256, which thus
        always describes weights that are complete on disk; returns the card written."""
        if teacher is not None:
            atomic_torch_save(teacher, self.path / "teacher.pt")
        atomic_torch_save(state_dict, self.model_path)
        card = {**card, "weights_sha256": sha256(self.model_path)}
        atomic_write_text(self.card_path, json.dumps(card, indent=2, sort_keys=True) + "\n")
        return card

    def finished_card(self) -> dict[str, Any] | None:
        """The card of a finished run (card.json next to model.pt), or None."""
        if not (self.card_path.exists() and self.model_path.exists()):
            return None
        try:
            return json.loads(self.card_path.read_text())
        except (OSError, ValueError):
            return None


def differences(old: dict[str, Any], new: dict[str, Any], shown: int = 4) -> str:
    """'epochs 2 -> 3, lr 0.001 -> 0.002' for the keys whose values differ ('' if none)."""
    keys = sorted(set(old) | set(new))
    changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    more = f" (+{len(changed) - shown} more)" if len(changed) > shown else ""
    return ", ".join(changed[:shown]) + more


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state_dict, detached, on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
