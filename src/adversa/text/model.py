"""The text victim: a bag-of-words classifier (EmbeddingBag + MLP) and the attack-side interface.

A *text model* is anything with `predict_proba(texts: list[str]) -> (n, classes)` probabilities
(numpy array or tensor): attacks never see a tokenizer, only strings in and scores out, so a
scikit-learn pipeline over raw text qualifies as well as `TextClassifier`. `check_text_model`
enforces that contract with a `BadInput` that names it.

`TextClassifier` wraps `BagOfWords` (mean of word embeddings over the text's tokens, then a
one-hidden-layer MLP; Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification")
with its vocabulary; out-of-vocabulary tokens map to the `<unk>` row, so a misspelt word loses
its learnt meaning. Cost of `predict_proba`: one tokenizer pass per text and one batched
forward pass (a few microseconds per text on a CPU).

`train_text_classifier` trains it full-batch with Adam in about a second; `load_text_victim`
trains on first use and caches it under `adversa.zoo.cache_dir()/text/` like the zoo does
(weights-only `torch.load`, atomic writes, keyed by a fingerprint of the recipe).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from adversa.errors import BadInput, ModelLoadError
from adversa.io import atomic_torch_save
from adversa.safeload import brief as _brief
from adversa.safeload import load_tensors

from .cache import cached_victim
from .data import TOKENIZER_VERSION, UNK, load_text_data, tokenize

log = logging.getLogger(__name__)


def check_text_model(model: Any) -> None:
    """Raise `BadInput` unless `model` has a callable `predict_proba(list[str])`."""
    if not callable(getattr(model, "predict_proba", None)):
        raise BadInput(
            f"a text model needs predict_proba(list[str]) -> (n, classes) probabilities; "
            f"{type(model).__name__} has none (wrap a tokenizer + network so that it takes raw "
            "strings, as adversa.text.TextClassifier does)"
        )


@runtime_checkable
class GradientTextModel(Protocol):
    """A text model that also gives, per text, the gradient norm of the loss of a label at
    each word span (`adversa.text.transformer.TransformerTextModel` is one)."""

    def predict_proba(self, texts: Sequence[str]) -> Any: ...

    def word_gradients(
        self, texts: Sequence[str], labels: Tensor, spans: Sequence[Sequence[tuple[int, int]]]
    ) -> list[Tensor]: ...


def as_probabilities(scores: Any, n: int) -> Tensor:
    """`predict_proba`'s output as a float32 (n, classes) tensor, checked."""
    out = scores if isinstance(scores, Tensor) else torch.as_tensor(np.asarray(scores))
    out = out.detach().to("cpu", torch.float32)
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise BadInput(
            f"predict_proba must return shape ({n}, classes >= 2), got {tuple(out.shape)}"
        )
    return out


class BagOfWords(nn.Module):
    """Mean word embedding -> Linear -> ReLU -> Linear (logits)."""

    def __init__(self, vocab_size: int, dim: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="mean")
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        return self.head(self.embed(ids, offsets))


class TextClassifier:
    """A `BagOfWords` network plus its vocabulary, as a tokenizer-free text model."""

    def __init__(self, net: BagOfWords, vocab: Sequence[str]) -> None:
        self.net = net.eval()
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.unk = self.index[UNK]

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids (flat) and per-text offsets for `EmbeddingBag`; empty texts get `<unk>`."""
        get, unk = self.index.get, self.unk
        rows = [[get(t, unk) for t in tokenize(text)] or [unk] for text in texts]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        offsets = torch.cumsum(lengths, 0) - lengths
        ids = torch.tensor([i for r in rows for i in r], dtype=torch.long)
        return ids, offsets

    def logits(self, texts: Sequence[str]) -> Tensor:
        return self.net(*self.encode(texts))

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> Tensor:
        """(n, classes) class probabilities of `texts`."""
        if len(texts) == 0:
            return torch.zeros(0, self.net.head[-1].out_features)
        return torch.softmax(self.logits(texts), dim=1)

    def predict(self, texts: Sequence[str]) -> Tensor:
        return self.predict_proba(texts).argmax(1)

    def save(self, path: str | Path) -> Path:
        """Write weights, vocabulary and sizes to one `.pt` file (weights-only loadable)."""
        head = self.net.head
        state = {
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "vocab": self.vocab,
            "sizes": [
                len(self.vocab),
                self.net.embed.embedding_dim,
                head[0].out_features,
                head[-1].out_features,
            ],
        }
        return atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: str | Path) -> TextClassifier:
        """Read a file written by `save` (weights-only: never unpickles code; a file that
        names anything but tensors, containers and numbers raises `UnsafePickle`)."""
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"text model file {path} does not exist")
        state = load_tensors(path, what="text model file")
        try:
            net = BagOfWords(*state["sizes"])
            net.load_state_dict(state["state_dict"])
            return cls(net, state["vocab"])
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelLoadError(
                f"{path}: not a text model written by TextClassifier.save ({_brief(exc)})"
            ) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextTrainConfig:
    """How the bag-of-words victim is trained (full-batch Adam, seeded)."""

    dim: int = 64  # embedding size
    hidden: int = 64  # MLP hidden units
    min_count: int = 2  # a training word enters the vocabulary if it occurs this often
    epochs: int = 60  # full-batch Adam steps
    lr: float = 0.02
    weight_decay: float = 1e-4
    dropout_words: float = 0.1  # share of tokens replaced by <unk> in each training step
    seed: int = 0

    @property
    def fingerprint(self) -> str:
        recipe = {**dataclasses.asdict(self), "tokenizer": TOKENIZER_VERSION}
        text = json.dumps(recipe, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_vocab(texts: Sequence[str], min_count: int) -> list[str]:
    """`<unk>` then the training tokens seen at least `min_count` times, most frequent first."""
    counts = collections.Counter(t for text in texts for t in tokenize(text))
    kept = sorted(
        (w for w, c in counts.items() if c >= min_count and w != UNK), key=lambda w: (-counts[w], w)
    )
    return [UNK, *kept]


def train_text_classifier(
    texts: Sequence[str], labels: Tensor, config: TextTrainConfig | None = None
) -> TextClassifier:
    """Train a `TextClassifier` on `texts`/`labels` (int64, 0..C-1). Cost: `epochs` full-batch
    forward/backward passes over the token ids (about a second for 4,000 snippets).

    Word dropout (tokens replaced by `<unk>` at random, seeded) keeps the model from leaning
    on single words, the usual regulariser for bag-of-words models."""
    config = config or TextTrainConfig()
    if len(texts) == 0 or len(texts) != len(labels):
        raise BadInput(f"need as many labels as texts (> 0), got {len(texts)} and {len(labels)}")
    labels = torch.as_tensor(labels, dtype=torch.long)
    num_classes = max(2, int(labels.max()) + 1)
    vocab = build_vocab(texts, config.min_count)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = BagOfWords(len(vocab), config.dim, config.hidden, num_classes)
    model = TextClassifier(net, vocab)
    ids, offsets = model.encode(texts)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    net.train()
    for _ in range(config.epochs):
        drop = torch.rand(ids.shape, generator=gen) < config.dropout_words
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(torch.where(drop, model.unk, ids), offsets), labels)
        loss.backward()
        opt.step()
    net.eval()
    return model


def accuracy(model: Any, texts: Sequence[str], labels: Tensor) -> float:
    """Share of `texts` the text model labels correctly (one batched predict_proba call)."""
    check_text_model(model)
    proba = as_probabilities(model.predict_proba(list(texts)), len(texts))
    return float((proba.argmax(1) == torch.as_tensor(labels)).float().mean())


def load_text_victim(
    config: TextTrainConfig | None = None,
    *,
    data: str = "movie-reviews",
    cache_dir: str | Path | None = None,
) -> TextClassifier:
    """The bag-of-words filter trained on `data`'s train split (seed 0 split), trained on first
    use and cached as `<cache>/text/<data>-bow-<fingerprint>.pt` (cache: `cache_dir`, else
    `adversa.zoo.cache_dir()`); an unwritable cache only logs a warning."""
    from adversa.zoo.cache import cache_dir as default_cache

    config = config or TextTrainConfig()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    path = root / "text" / f"{data}-bow-{config.fingerprint}.pt"

    def train() -> TextClassifier:
        split = load_text_data(data)
        return train_text_classifier(split.train_texts, split.train_labels, config)

    return cached_victim(path, TextClassifier.load, train, "text victim")


def load_text_model(spec: str, *, trust_model_file: bool = False) -> Any:
    """A text model from the command line's `--model`: `sklearn:path.joblib` (any fitted object
    with `predict_proba(list[str])`, e.g. a TF-IDF + logistic-regression pipeline; unpickling
    runs code, so `trust_model_file` is required) or a `TextClassifier.save` file."""
    if spec.startswith("sklearn:"):
        from adversa.tabular.sklearn_model import load_joblib

        model = load_joblib(spec.removeprefix("sklearn:"), trust_model_file=trust_model_file)
        check_text_model(model)
        return model
    if not Path(spec).expanduser().is_file():
        raise BadInput(f"--model {spec}: no such file (a TextClassifier.save file or sklearn:PATH)")
    return TextClassifier.load(spec)
