"""What every text attack shares: constraints, query counting, the greedy substitution loop,
the harness that verifies results, and the result type.

A text attack changes whole words (`adversa.text.data.words` spans) of texts that the model
classifies correctly until the label flips, under two constraints checked on the *final*
adversarial text by `run_text_attack`: at most `max_change` of the text's words changed, and a
MiniLM sentence similarity of at least `min_similarity` to the original. Stop words are never
changed. Attacks see the model only through `predict_proba(list[str])` and every text scored is
one query, counted per attacked example.

`greedy_substitute` is the search loop both attacks use (greedy word importance ranking, as in
PWWS and DeepWordBug): walk each example's words in ranked order; at each step score every
candidate replacement of every active example in one `predict_proba` call, keep per example
the candidate with the lowest true-class probability, and accept it if it lowers that
probability and keeps the similarity (one batched MiniLM call over the active examples); stop
an example when its label flips, its word budget is spent or its ranked words run out.
Cost per step: (active examples x candidates per word) queries and one MiniLM pass per active
example; at most one step per non-stop word.

`ranking="gradient"` (any attack) ranks words by the gradient norm of the loss at their token
embeddings (`GradientTextModel.word_gradients`: one forward and backward pass per text)
instead of the attack's leave-one-out queries; the result counts the passes (`gradients`) and
the ranking queries they replaced (`queries_saved`). A model without gradients is refused.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from adversa.errors import BadInput, require

from .data import STOP_WORDS, replace_words, words
from .model import GradientTextModel, as_probabilities, check_text_model

Progress = Callable[[str, int, int], None]
RANKINGS = ("queries", "gradient")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextAttack:
    """Constraints every text attack takes; subclasses add their own fields and `_perturb`."""

    name = "text-attack"
    max_change: float = 0.25  # largest share of a text's words that may change
    min_similarity: float = 0.8  # smallest MiniLM cosine similarity to the original text
    seed: int = 0
    ranking: str = "queries"  # word importance from model queries, or "gradient" (RANKINGS)

    def __post_init__(self) -> None:
        require(
            0.0 < self.max_change <= 1.0, f"max_change must be in (0, 1], got {self.max_change}"
        )
        require(
            0.0 < self.min_similarity <= 1.0,
            f"min_similarity must be in (0, 1], got {self.min_similarity}",
        )
        require(
            self.ranking in RANKINGS, f"ranking must be one of {RANKINGS}, got {self.ranking!r}"
        )

    def _perturb(self, ctx: AttackContext, examples: list[Example]) -> None:
        raise NotImplementedError


@dataclasses.dataclass(eq=False)
class Example:
    """One text under attack: its word spans, the substitutions made so far and the state."""

    owner: int  # index into the harness's input list (for query counting)
    text: str
    label: int
    spans: list[tuple[int, int]]
    budget: int  # substitutions still allowed
    subs: dict[int, str] = dataclasses.field(default_factory=dict)  # word index -> new word
    order: list[int] = dataclasses.field(default_factory=list)  # word indices still to try
    p_true: float = 1.0
    flipped: bool = False

    def word(self, i: int) -> str:
        start, end = self.spans[i]
        return self.text[start:end]

    def eligible(self) -> list[int]:
        """Word indices an attack may change: not stop words, longer than one letter."""
        return [
            i
            for i in range(len(self.spans))
            if len(self.word(i)) > 1 and self.word(i).lower() not in STOP_WORDS
        ]

    def render(self, extra: dict[int, str] | None = None) -> str:
        subs = {**self.subs, **extra} if extra else self.subs
        keys = sorted(subs)
        return replace_words(self.text, [self.spans[k] for k in keys], [subs[k] for k in keys])


class AttackContext:
    """Scores texts (counting queries per owner) and measures similarity to the originals."""

    def __init__(self, model: Any, n: int, originals: Sequence[str], min_similarity: float):
        self.model = model
        self.queries = torch.zeros(n, dtype=torch.long)
        self.originals = list(originals)
        self.min_similarity = min_similarity
        self.gradients = torch.zeros(n, dtype=torch.long)  # backward passes per owner
        self.saved = torch.zeros(n, dtype=torch.long)  # ranking queries replaced by gradients
        self._vectors: Tensor | None = None

    def word_gradients(self, examples: Sequence[Example], saves: Sequence[int]) -> list[Tensor]:
        """Per example, the gradient norm of its label's loss at each word (one forward and
        backward pass each; `saves[i]` ranking queries of example i are counted as saved)."""
        if not isinstance(self.model, GradientTextModel):
            raise BadInput(
                f"ranking='gradient' needs a model that exposes gradients (word_gradients), "
                f"such as hf:DIR or builtin:minilm; {type(self.model).__name__} does not"
            )
        owners = torch.as_tensor([e.owner for e in examples], dtype=torch.long)
        self.gradients += torch.bincount(owners, minlength=len(self.gradients))
        self.saved.index_add_(0, owners, torch.as_tensor(saves, dtype=torch.long))
        labels = torch.tensor([e.label for e in examples])
        return self.model.word_gradients(
            [e.text for e in examples], labels, [e.spans for e in examples]
        )

    def score(self, texts: Sequence[str], owners: Sequence[int]) -> Tensor:
        """(len(texts), classes) probabilities from one predict_proba call; each text is one
        query of its owner."""
        if not texts:
            return torch.zeros(0, 2)
        self.queries += torch.bincount(torch.as_tensor(owners), minlength=len(self.queries))
        return as_probabilities(self.model.predict_proba(list(texts)), len(texts))

    def similarity(self, texts: Sequence[str], owners: Sequence[int]) -> Tensor:
        """(len(texts),) MiniLM cosine of each text to its owner's original (originals are
        embedded once, on first use)."""
        from .similarity import embed

        if self._vectors is None:
            self._vectors = embed(self.originals)
        if not texts:
            return torch.zeros(0)
        return (embed(texts) * self._vectors[torch.as_tensor(owners)]).sum(1).clamp(-1.0, 1.0)


def match_case(word: str, like: str) -> str:
    """`word` with the capitalisation pattern of `like` (UPPER, Title or lower)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def group_softmax(values: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """Softmax of `values` within each group (groups are 0..n_groups-1)."""
    top = torch.full((n_groups,), -math.inf).scatter_reduce(0, groups, values, reduce="amax")
    weights = torch.exp(values - top[groups])
    return weights / torch.zeros(n_groups).index_add(0, groups, weights)[groups]


def group_argmin(values: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """Index (into `values`) of the smallest value of each group 0..n_groups-1 (first on ties)."""
    big = torch.full((n_groups,), math.inf)
    best = big.scatter_reduce(0, groups, values, reduce="amin")
    hits = values == best[groups]
    position = torch.arange(len(values))
    first = torch.full((n_groups,), len(values)).scatter_reduce(
        0, groups[hits], position[hits], reduce="amin"
    )
    return first


def greedy_substitute(
    ctx: AttackContext,
    examples: list[Example],
    propose: Callable[[Example, int], list[str]],
    *,
    check_all: bool = False,
) -> None:
    """The greedy loop of the module docstring; fills each example's `subs` and `flipped`.

    With `check_all`, the similarity of every candidate that lowers the true-class
    probability is measured (one MiniLM pass per candidate instead of per example), and the
    lowest-probability candidate that keeps the similarity wins, near-ties going to the more
    similar one: worth it when candidates score alike, as misspellings do on a word model."""
    active = [e for e in examples if e.order and e.budget > 0]
    while active:
        texts, owners, groups, choices = [], [], [], []
        for g, example in enumerate(active):
            position = example.order.pop(0)
            for word in propose(example, position):
                texts.append(example.render({position: word}))
                owners.append(example.owner)
                groups.append(g)
                choices.append((position, word))
        if texts:
            _step(ctx, active, texts, owners, torch.as_tensor(groups), choices, check_all)
        active = [e for e in active if e.order and e.budget > 0 and not e.flipped]


def _step(ctx, active, texts, owners, group, choices, check_all: bool) -> None:
    """Score one step's candidates, pick one per example, accept it if it is valid."""
    proba = ctx.score(texts, owners)
    labels = torch.tensor([e.label for e in active])[group]
    p_true = proba.gather(1, labels[:, None])[:, 0]
    lower = p_true < torch.tensor([e.p_true for e in active])[group]
    sims = torch.full((len(texts),), -math.inf)
    if check_all:
        where = torch.nonzero(lower).flatten().tolist()
        sims[where] = ctx.similarity([texts[i] for i in where], [owners[i] for i in where])
        valid = lower & (sims >= ctx.min_similarity)
        key = torch.where(valid, p_true - 1e-4 * sims, math.inf)
    else:
        key = torch.where(lower, p_true, math.inf)
    best = group_argmin(key, group, len(active))
    picks = [int(b) for b in best if b < len(texts) and key[b] < math.inf]
    if not check_all:
        sims[picks] = ctx.similarity([texts[i] for i in picks], [owners[i] for i in picks])
    flips = proba.argmax(1) != labels
    for pick in picks:
        if sims[pick] < ctx.min_similarity:
            continue
        example = active[int(group[pick])]
        position, word = choices[pick]
        example.subs[position] = word
        example.budget -= 1
        example.p_true = float(p_true[pick])
        example.flipped = bool(flips[pick])


@dataclasses.dataclass
class TextAttackResult:
    """Per-example outcome of one text attack (all tensors have one entry per input text)."""

    name: str
    config: dict[str, Any]
    texts: list[str]
    adv_texts: list[str]
    labels: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    attacked: Tensor  # bool: correctly classified, hence attacked
    success: Tensor  # bool: label flipped within both constraints (checked on the final text)
    similarity: Tensor  # MiniLM cosine of the final text to the original (1 when unchanged)
    words_changed: Tensor  # share of the text's words that changed
    queries: Tensor  # texts scored per example (clean and verifying queries included)
    changes: list[list[tuple[int, int, str]]]  # (start, end, new word) spans in the original
    seconds: float
    gradients: Tensor | None = None  # forward+backward passes per example (gradient ranking)
    queries_saved: Tensor | None = None  # ranking queries the gradients replaced, per example

    def summary(self) -> dict[str, Any]:
        """Success rate over attacked examples; means of words changed and similarity over
        successes; mean queries over attacked examples."""
        attacked, success = self.attacked, self.success
        n_attacked, n_success = int(attacked.sum()), int(success.sum())

        def mean(values: Tensor, mask: Tensor) -> float | None:
            return float(values[mask].float().mean()) if bool(mask.any()) else None

        return {
            "name": self.name,
            "n": len(self.texts),
            "clean_accuracy": float(attacked.float().mean()),
            "adversarial_accuracy": float((attacked & ~success).float().mean()),
            "n_attacked": n_attacked,
            "n_success": n_success,
            "success_rate": n_success / n_attacked if n_attacked else 0.0,
            "mean_words_changed": mean(self.words_changed, success),
            "mean_similarity": mean(self.similarity, success),
            "mean_queries": mean(self.queries, attacked),
            "mean_gradients": None if self.gradients is None else mean(self.gradients, attacked),
            "mean_queries_saved": (
                None if self.queries_saved is None else mean(self.queries_saved, attacked)
            ),
            "seconds": self.seconds,
            "config": self.config,
        }


def _check_inputs(model: Any, texts: Sequence[str], labels: Any) -> Tensor:
    check_text_model(model)
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise BadInput(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise BadInput("texts is empty: give at least one text to attack")
    if not all(isinstance(t, str) for t in texts):
        raise BadInput("texts must all be strings")
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if len(labels) != len(texts):
        raise BadInput(f"need one label per text: {len(texts)} texts, {len(labels)} labels")
    if bool((labels < 0).any()):
        raise BadInput("labels must be >= 0")
    return labels


def run_text_attack(
    attack: TextAttack,
    model: Any,
    texts: Sequence[str],
    labels: Any,
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> TextAttackResult:
    """Attack the correctly classified `texts` with `attack`, `batch_size` examples per batch,
    and verify the result: one final predict_proba call and one MiniLM pass on the final texts
    decide success (flipped, share of words changed <= max_change, similarity >=
    min_similarity), whatever the attack believed. `progress(name, done, total)` is called
    after each batch."""
    if not isinstance(attack, TextAttack):
        raise BadInput(f"attack must be a TextAttack, got {type(attack).__name__}")
    labels = _check_inputs(model, texts, labels)
    start = time.perf_counter()
    texts = list(texts)
    ctx = AttackContext(model, len(texts), texts, attack.min_similarity)
    clean = ctx.score(texts, range(len(texts)))
    if clean.shape[1] <= int(labels.max()):
        raise BadInput(f"label {int(labels.max())} is out of range for {clean.shape[1]} classes")
    clean_pred = clean.argmax(1)
    attacked = clean_pred == labels
    examples = []
    for i in torch.nonzero(attacked).flatten().tolist():
        spans = words(texts[i])
        examples.append(
            Example(
                owner=i,
                text=texts[i],
                label=int(labels[i]),
                spans=spans,
                budget=math.floor(attack.max_change * len(spans) + 1e-9),
                p_true=float(clean[i, labels[i]]),
            )
        )
    for first in range(0, len(examples), batch_size):
        attack._perturb(ctx, examples[first : first + batch_size])
        if progress is not None:
            progress(attack.name, min(first + batch_size, len(examples)), len(examples))
    adv_texts = list(texts)
    changes: list[list[tuple[int, int, str]]] = [[] for _ in texts]
    for e in examples:
        adv_texts[e.owner] = e.render()
        changes[e.owner] = [(*e.spans[k], e.subs[k]) for k in sorted(e.subs)]
    changed = [i for i in range(len(texts)) if changes[i]]
    adv_pred = clean_pred.clone()
    similarity = torch.ones(len(texts))
    if changed:
        adv_pred[changed] = ctx.score([adv_texts[i] for i in changed], changed).argmax(1)
        similarity[changed] = ctx.similarity([adv_texts[i] for i in changed], changed)
    n_words = torch.tensor([max(1, len(words(t))) for t in texts], dtype=torch.float32)
    share = torch.tensor([len(c) for c in changes], dtype=torch.float32) / n_words
    success = (
        attacked
        & (adv_pred != labels)
        & (share <= attack.max_change + 1e-9)
        & (similarity >= attack.min_similarity)
    )
    return TextAttackResult(
        name=attack.name,
        config={"name": attack.name, **dataclasses.asdict(attack)},
        texts=texts,
        adv_texts=adv_texts,
        labels=labels,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        attacked=attacked,
        success=success,
        similarity=similarity,
        words_changed=share,
        queries=ctx.queries.clone(),
        changes=changes,
        seconds=time.perf_counter() - start,
        gradients=ctx.gradients.clone(),
        queries_saved=ctx.saved.clone(),
    )
