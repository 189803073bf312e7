"""Attribute inference on tabular data (Fredrikson et al. 2014, "Privacy in
Pharmacogenetics", USENIX Security; and 2015, CCS): recover a record's sensitive feature from
the model, the record's other features and its known label.

For each record and each candidate value v of the sensitive feature, the attack sets the
feature to v and asks the model for the probability of the record's true label; it picks the
value maximising log-odds_model(y | x with v) + log prior(v): the maximum a posteriori
estimate when the model's confidence stands in for the likelihood, with the log-odds
log(p / (1 - p)) in place of log p so that a model saturated at p = 1 on its training records
still ranks the values (log p rounds to 0 there and only the prior would speak). A model
that memorised its training records is most confident at their true values, so the attack
should work best on members.

Two baselines ignore the model: the prior's most likely value, and (given a table p(v | y)
estimated from data the attacker holds) the most likely value given the label, which is what
an attacker learns from the population alone (Jayaraman and Evans 2022, "Are Attribute
Inference Attacks Just Imputation?"). Only the gap to the second is what the model leaks.

Cost: one forward pass per record and candidate value, batched (N * K inputs).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.errors import BadInput, ShapeError
from adversa.model.wrapped import Model
from adversa.privacy.membership import logit_confidence, model_logits


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class AttributeResult:
    guess: Tensor  # (N,) the attack's guessed value of the sensitive feature
    baseline: Tensor  # (N,) the model-free guess (the prior's mode)
    label_baseline: Tensor | None  # (N,) argmax_v p(v | y), when that table was given
    scores: Tensor  # (N, K) log-odds_model(y | x_v) + log prior(v) per candidate value

    def accuracy(self, truth: Tensor) -> dict[str, float]:
        """Accuracy of the attack and of each baseline against the true values `truth`."""
        truth = truth.to(self.guess.dtype)
        out = {
            "attack": float((self.guess == truth).float().mean()),
            "prior_baseline": float((self.baseline == truth).float().mean()),
        }
        if self.label_baseline is not None:
            out["label_baseline"] = float((self.label_baseline == truth).float().mean())
        return out


def attribute_inference(
    model: Model,
    x: Tensor,
    y: Tensor,
    feature: int,
    values: Tensor,
    prior: Tensor | None = None,
    given_label: Tensor | None = None,
) -> AttributeResult:
    """Infer column `feature` of tabular records `x` (N, D) (its content there is ignored)
    among candidate `values` (K,), given labels `y` (N,); `prior` (K,) defaults to uniform.
    `given_label` (C, K), the attacker's estimate of p(v | y), enables the label baseline.
    """
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ShapeError(f"need x (N, D) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not 0 <= feature < x.shape[1]:
        raise BadInput(f"feature must be a column index in [0, {x.shape[1]}), got {feature}")
    values = torch.as_tensor(values, dtype=x.dtype).flatten()
    if values.numel() < 2:
        raise BadInput(f"values must hold >= 2 candidate values, got {values.tolist()}")
    k = values.numel()
    if prior is None:
        prior = torch.full((k,), 1.0 / k)
    prior = torch.as_tensor(prior, dtype=torch.float64).flatten()
    if prior.shape != (k,) or bool((prior < 0).any()) or float(prior.sum()) <= 0:
        raise BadInput(f"prior must be {k} non-negative weights, got {prior.tolist()}")
    prior = prior / prior.sum()
    filled = x.unsqueeze(1).repeat(1, k, 1)  # (N, K, D)
    filled[:, :, feature] = values
    logits = model_logits(model, filled.flatten(0, 1)).double().cpu()
    odds = logit_confidence(logits.reshape(x.shape[0], k, -1), y.cpu().view(-1, 1))
    scores = odds + prior.log()
    guess = values[scores.argmax(1)]
    baseline = values[prior.argmax()].expand(x.shape[0]).clone()
    label_baseline = None
    if given_label is not None:
        table = torch.as_tensor(given_label, dtype=torch.float64)
        if table.dim() != 2 or table.shape[1] != k or int(y.max()) >= table.shape[0]:
            raise ShapeError(f"given_label must be (num_classes, {k}), got {tuple(table.shape)}")
        label_baseline = values[table[y.cpu()].argmax(1)]
    return AttributeResult(
        guess=guess, baseline=baseline, label_baseline=label_baseline, scores=scores.float()
    )


def value_tables(
    column: Tensor, y: Tensor, values: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """(prior (K,), given_label (C, K)): the frequencies of each candidate value, overall and
    per label, in the attacker's data (`column` (N,) holds values from `values`)."""
    hits = column.reshape(-1, 1) == torch.as_tensor(values, dtype=column.dtype).reshape(1, -1)
    hits = hits.double()
    prior = hits.mean(0)
    per_label = torch.zeros(num_classes, hits.shape[1], dtype=torch.float64).index_add_(0, y, hits)
    return prior, per_label / per_label.sum(1, keepdim=True).clamp_min(1)
