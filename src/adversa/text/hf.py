"""A local Hugging Face sequence classifier as a text model: `--model hf:DIR`.

`load_hf_text_model(folder)` reads a directory written by `save_pretrained` (a model whose
config maps to `AutoModelForSequenceClassification`, and its tokenizer) without any network
access (`local_files_only=True`, `HF_HUB_OFFLINE=1`) and without running code from it:

- no `trust_remote_code`: a config that needs code from the directory (`auto_map`) is refused;
- weights in safetensors load freely; pickle-based weights (`pytorch_model.bin`) only with
  `trust_model_file=True` (CLI `--trust-model-file`), and even then through transformers'
  weights-only `torch.load`;
- a checkpoint without a trained classification head (transformers would initialise one at
  random, with a warning) is refused, naming the missing weights.

The result, `HFTextClassifier`, is a `TransformerTextModel`: `predict_proba(list[str])` for
every text attack and `word_gradients` for gradient-guided word ranking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from adversa.errors import BadInput, ModelLoadError
from adversa.safeload import brief, require_trust

from .transformer import TransformerTextModel, hf_offline

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


class HFTextClassifier(TransformerTextModel):
    """An `AutoModelForSequenceClassification` and its tokenizer (eval mode, frozen)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 128) -> None:
        limit = getattr(tokenizer, "model_max_length", max_length) or max_length
        super().__init__(tokenizer, max_length=min(max_length, int(limit)))
        self.model = model.eval().requires_grad_(False)

    @property
    def embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def class_names(self) -> tuple[str, ...]:
        labels = self.model.config.id2label
        return tuple(str(labels[i]) for i in range(self.num_classes))

    def _logits(self, embeds: Tensor, mask: Tensor) -> Tensor:
        return self.model(inputs_embeds=embeds, attention_mask=mask).logits


def hf_weights(folder: Path, *, trust_model_file: bool = False) -> bool:
    """True when `folder` holds safetensors weights, False for pickle weights (allowed only
    with `trust_model_file`); `BadInput` when it holds neither or refuses the pickle."""
    if any((folder / name).is_file() for name in SAFE_WEIGHTS):
        return True
    pickled = [folder / name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if pickled:
        require_trust(pickled[0], "pickle-based PyTorch weights file", trust_model_file)
        return False
    raise BadInput(
        f"--model hf:{folder}: no weights (expected {SAFE_WEIGHTS[0]}, or {PICKLE_WEIGHTS[0]} "
        "with --trust-model-file)"
    )


def load_hf_text_model(
    folder: str | Path, *, trust_model_file: bool = False, max_length: int = 128
) -> HFTextClassifier:
    """The classifier saved in `folder` (see the module docstring); errors are one line."""
    folder = Path(folder).expanduser()
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise BadInput(
            f"--model hf:{folder}: expected a directory written by save_pretrained "
            "(config.json, weights and tokenizer files)"
        )
    safetensors = hf_weights(folder, trust_model_file=trust_model_file)
    hf_offline()
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    options: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    try:
        config = AutoConfig.from_pretrained(folder, **options)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            folder, config=config, use_safetensors=safetensors, output_loading_info=True, **options
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelLoadError(
            f"--model hf:{folder}: not a loadable sequence classifier ({brief(exc)})"
        ) from None
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ModelLoadError(
            f"--model hf:{folder}: the checkpoint lacks {len(missing)} weights of "
            f"{type(model).__name__} (e.g. {missing[0]}): no trained classification head"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **options)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"--model hf:{folder}: no usable tokenizer ({brief(exc)})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"--model hf:{folder}: the tokenizer ({type(tokenizer).__name__}) gives no character "
            "offsets; save a fast tokenizer (tokenizer.json)"
        )
    return HFTextClassifier(model, tokenizer, max_length=max_length)
