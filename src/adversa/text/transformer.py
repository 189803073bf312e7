"""Transformer text models: a tokenizer plus a network that maps token embeddings to logits,
as a text model (`predict_proba(list[str])`) that also exposes gradients (`word_gradients`).

`TransformerTextModel` holds what a Hugging Face sequence classifier (`adversa.text.hf`) and
the built-in MiniLM filter (`adversa.text.minilm`) share:

- `predict_proba` tokenizes (truncating at `max_length` tokens), sorts the texts by token
  count so that a batch pads little, and runs `batch_size` texts per forward pass without
  gradients. Cost: one encoder pass per text.
- `word_gradients(texts, labels, spans)` gives, per text, the L2 norm of the gradient of the
  cross-entropy loss of its label with respect to the input embeddings of each word's tokens
  (the token-level saliency of Simonyan et al. 2014, "Deep Inside Convolutional Networks",
  summed over a word's sub-word tokens as the root of the sum of squares). Tokens are mapped
  to words by their character offsets, so any word-span segmentation works; a word cut off by
  truncation gets 0. Cost: one forward and one backward pass per text, batched; the model's
  parameters get no gradient.

Subclasses implement `_logits(embeds, mask)` and `embedding` (the token-embedding layer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def hf_offline() -> None:
    """Tell huggingface_hub and transformers never to reach the network (set before loading;
    the loaders also pass `local_files_only=True`); no weight-loading progress bar."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class TransformerTextModel:
    """A tokenizer and a network on token embeddings, as a gradient-exposing text model."""

    def __init__(self, tokenizer: Any, *, max_length: int = 128, batch_size: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    @property
    def embedding(self) -> nn.Embedding:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def _logits(self, embeds: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def _device(self) -> torch.device:
        return self.embedding.weight.device

    def _encode(self, texts: Sequence[str], offsets: bool = False) -> Any:
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_offsets_mapping=offsets,
        )

    def _batches(self, texts: Sequence[str]) -> list[list[int]]:
        """Index batches of `texts`, shortest first (little padding per batch)."""
        lengths = torch.tensor([len(t) for t in texts])
        order = torch.argsort(lengths, stable=True).tolist()
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def logits(self, texts: Sequence[str]) -> Tensor:
        """(n, classes) logits of `texts` (no gradients), in the given order."""
        out = torch.zeros(len(texts), self.num_classes)
        device = self._device()
        with torch.no_grad():
            for batch in self._batches(texts):
                enc = self._encode([texts[i] for i in batch])
                ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
                out[batch] = self._logits(self.embedding(ids), mask).float().cpu()
        return out

    def predict_proba(self, texts: Sequence[str]) -> Tensor:
        """(n, classes) class probabilities of `texts`."""
        return torch.softmax(self.logits(texts), dim=1)

    def predict(self, texts: Sequence[str]) -> Tensor:
        return self.predict_proba(texts).argmax(1)

    def word_gradients(
        self, texts: Sequence[str], labels: Tensor, spans: Sequence[Sequence[tuple[int, int]]]
    ) -> list[Tensor]:
        """Per text, (len(spans[i]),) gradient norms of its label's loss per word span."""
        labels = torch.as_tensor(labels, dtype=torch.long)
        out: list[Tensor] = [torch.zeros(len(s)) for s in spans]
        device = self._device()
        for batch in self._batches(texts):
            enc = self._encode([texts[i] for i in batch], offsets=True)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            with torch.no_grad():
                embeds = self.embedding(ids)
            embeds.requires_grad_(True)
            loss = nn.functional.cross_entropy(
                self._logits(embeds, mask), labels[batch].to(device), reduction="sum"
            )
            (grad,) = torch.autograd.grad(loss, embeds)
            token_sq = grad.float().pow(2).sum(-1).cpu() * enc["attention_mask"]
            for row, i in enumerate(batch):
                out[i] = _per_word(token_sq[row], enc["offset_mapping"][row], spans[i])
        return out


def _per_word(token_sq: Tensor, offsets: Tensor, spans: Sequence[tuple[int, int]]) -> Tensor:
    """sqrt of the summed squared token norms of each word span (tokens by start offset;
    special and padding tokens, whose offsets are empty, belong to no word)."""
    if not spans:
        return torch.zeros(0)
    starts = torch.tensor([s for s, _ in spans])
    ends = torch.tensor([e for _, e in spans])
    first = offsets[:, 0].contiguous()
    word = torch.searchsorted(starts, first, right=True) - 1
    inside = (word >= 0) & (offsets[:, 1] > offsets[:, 0])
    inside &= first < ends[word.clamp(min=0)]
    total = torch.zeros(len(spans)).index_add(0, word[inside], token_sq[inside])
    return total.sqrt()
