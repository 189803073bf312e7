"""Reading weights: a state_dict from `.safetensors` or a weights-only `torch.save` file (told
apart by content), applied strictly to a module with errors that name the keys. Never
unpickles objects."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from adversa import safeload
from adversa.errors import ModelLoadError

_SHOWN_KEYS = 5


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


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
        reason = "; ".join(detail[:3]) if detail else first_line(exc)
        raise ModelLoadError(f"{path}: state_dict does not fit the model: {reason}") from None
    return net
