"""PWWS: probability weighted word saliency (Ren et al. 2019, "Generating Natural Language
Adversarial Examples through Probability Weighted Word Saliency", ACL).

For each non-stop word w_i of a text x with true class y:
- saliency S_i = P(y | x) - P(y | x with w_i replaced by an unknown token);
- best synonym w_i* = the WordNet synonym whose substitution lowers P(y | .) the most, with
  drop dP_i* = P(y | x) - P(y | x with w_i -> w_i*);
- score H_i = softmax(S)_i * dP_i* (softmax over the text's words).
Words are then substituted by their best synonym greedily in decreasing H order until the label
flips (`adversa.text.base.greedy_substitute`, which also enforces the similarity and word-share
constraints at each step). WordNet is read from Debian's wordnet-base files
(`adversa.text.wordnet`); no part-of-speech tagger is used, so synonyms of every sense are
candidates and the sentence-similarity constraint rejects the ones that change the meaning.

Cost per text of n eligible words with up to k synonyms each: n queries for the saliency and
up to n*k for the synonyms (each phase one batched call per batch of texts), then one query per
greedy step; MiniLM is run once per greedy step.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.errors import require

from .base import (
    AttackContext,
    Example,
    TextAttack,
    greedy_substitute,
    group_argmin,
    group_softmax,
    match_case,
)
from .data import UNK
from .registry import TEXT_ATTACKS
from .wordnet import get_wordnet


@TEXT_ATTACKS.register("pwws")
@dataclasses.dataclass(frozen=True, kw_only=True)
class PWWS(TextAttack):
    """Greedy WordNet synonym substitution ranked by probability-weighted word saliency."""

    name = "pwws"
    max_synonyms: int = 30  # synonyms tried per word (WordNet's most shared first)
    unk_token: str = UNK  # what a word becomes when its saliency is measured

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_synonyms >= 1, f"max_synonyms must be >= 1, got {self.max_synonyms}")

    @staticmethod
    def _gradient_saliency(ctx: AttackContext, examples: list[Example], slots: list) -> Tensor:
        """Each slot's word gradient norm over its text's largest (in [0, 1], the scale of
        the probability drops it stands in for)."""
        saves = [len(e.eligible()) for e in examples]
        grads = ctx.word_gradients(examples, saves)
        scaled = {
            id(e): g / g.max().clamp(min=1e-12) if len(g) else g
            for e, g in zip(examples, grads, strict=True)
        }
        return torch.stack([scaled[id(e)][i] for e, i in slots])

    def _perturb(self, ctx: AttackContext, examples: list[Example]) -> None:
        wordnet = get_wordnet()
        slots = [(e, i) for e in examples for i in e.eligible()]  # (example, word index)
        if not slots:
            return
        owners = [e.owner for e, _ in slots]
        labels = torch.tensor([e.label for e, _ in slots])
        base = torch.tensor([e.p_true for e, _ in slots])
        example_of = {id(e): g for g, e in enumerate(examples)}
        groups = torch.tensor([example_of[id(e)] for e, _ in slots])
        if self.ranking == "gradient":
            saliency = self._gradient_saliency(ctx, examples, slots)
        else:
            masked = ctx.score([e.render({i: self.unk_token}) for e, i in slots], owners)
            saliency = base - masked.gather(1, labels[:, None])[:, 0]
        weight = group_softmax(saliency, groups, len(examples))

        texts, text_owners, text_slot, words = [], [], [], []
        for s, (e, i) in enumerate(slots):
            original = e.word(i)
            for synonym in wordnet.synonyms(original.lower())[: self.max_synonyms]:
                word = match_case(synonym, original)
                texts.append(e.render({i: word}))
                text_owners.append(e.owner)
                text_slot.append(s)
                words.append(word)
        best_word: dict[tuple[int, int], str] = {}
        score = torch.full((len(slots),), -torch.inf)
        if texts:
            slot_index = torch.tensor(text_slot)
            proba = ctx.score(texts, text_owners)
            p_true = proba.gather(1, labels[slot_index][:, None])[:, 0]
            best = group_argmin(p_true, slot_index, len(slots))
            has = best < len(texts)
            drop = torch.full((len(slots),), -torch.inf)
            drop[has] = base[has] - p_true[best[has]]
            score = torch.where(drop > 0, weight * drop, torch.full_like(drop, -torch.inf))
            for s in torch.nonzero(drop > 0).flatten().tolist():
                e, i = slots[s]
                best_word[(e.owner, i)] = words[int(best[s])]
        ranked = torch.argsort(score, descending=True, stable=True).tolist()
        for s in ranked:
            e, i = slots[s]
            if (e.owner, i) in best_word:
                e.order.append(i)
        greedy_substitute(ctx, examples, lambda e, i: [best_word[(e.owner, i)]])
