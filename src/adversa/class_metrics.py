"""Per-class recall and precision, the "positives that evade" count, and the warnings that
keep an imbalanced data set from reading as a good (or robust) model.

Accuracy on imbalanced data is mostly the base rate: a fraud model that flags nothing scores
95 % on a table with 5 % fraud. Every report that states an accuracy also states, per class,
`recall` (share of the class's rows classified as it) and `precision` (share of the rows
predicted as the class that belong to it), on clean inputs and, where an attack ran, on the
predictions after it (`robust_recall`, `robust_precision`; Sokolova & Lapalme 2009, "A
systematic analysis of performance measures for classification tasks"). Everything is
computed with `bincount` over the whole batch: O(n + classes), no per-sample loop.

`class_warnings` flags a model that is no better than always predicting the majority class
(accuracy within a tenth of the remaining error of the base rate *and* balanced accuracy
within a quarter of the way from chance to 1), one that predicts one class for
>= `DOMINANT_SHARE` of its inputs while the other classes occur at least twice as often as it
predicts them, and a class with `MIN_SUPPORT` or more rows that is never recognised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from adversa.errors import BadInput

DOMINANT_SHARE = 0.95  # one class predicted for at least this share of the inputs ...
UNDER_PREDICTED = 0.5  # ... while the others are predicted at most this share as often as seen
BASE_RATE_MARGIN = 0.1  # accuracy closes at most this share of the base rate's error ...
CHANCE_MARGIN = 0.25  # ... and balanced accuracy at most this share of the way from 1/K to 1
MIN_SUPPORT = 5  # a class with fewer rows is too small for its recall of 0 to be news


def _labels(y: Any, pred: Any) -> tuple[Tensor, Tensor]:
    y = torch.as_tensor(y).flatten().long().cpu()
    pred = torch.as_tensor(pred).flatten().long().cpu()
    if y.shape != pred.shape:
        raise BadInput(f"need one prediction per label: {y.numel()} labels, {pred.numel()} preds")
    return y, pred


def _num_classes(y: Tensor, pred: Tensor, num_classes: int | None) -> int:
    seen = int(max(int(y.max()), int(pred.max()))) + 1 if y.numel() else 0
    return max(seen, int(num_classes or 0))


def _name(k: int, names: Sequence[str] | None) -> str:
    return str(names[k]) if names is not None and k < len(names) else str(k)


def _ratio(num: Tensor, den: Tensor) -> list[float | None]:
    return [None if int(d) == 0 else int(c) / int(d) for c, d in zip(num, den, strict=True)]


def per_class(
    y: Any,
    pred: Any,
    num_classes: int | None = None,
    *,
    names: Sequence[str] | None = None,
    robust_pred: Any = None,
) -> list[dict[str, Any]]:
    """One entry per class k: `support` (rows labelled k), `predicted` (rows predicted k),
    `correct`, `recall` = correct / support and `precision` = correct / predicted (None when
    the denominator is 0). With `robust_pred` (the predictions after an attack; the clean
    prediction for points not attacked) also `robust_correct`, `robust_predicted`,
    `robust_recall` and `robust_precision`. `names` adds each class's name."""
    y, pred = _labels(y, pred)
    adv = None if robust_pred is None else _labels(y, robust_pred)[1]
    k = _num_classes(y, pred, num_classes)
    if adv is not None:
        k = _num_classes(y, adv, k)
    support = torch.bincount(y, minlength=k)
    predicted = torch.bincount(pred, minlength=k)
    correct = torch.bincount(y[pred == y], minlength=k)
    columns: dict[str, list[Any]] = {
        "support": support.tolist(),
        "predicted": predicted.tolist(),
        "correct": correct.tolist(),
        "recall": _ratio(correct, support),
        "precision": _ratio(correct, predicted),
    }
    if adv is not None:
        adv_predicted = torch.bincount(adv, minlength=k)
        adv_correct = torch.bincount(y[adv == y], minlength=k)
        columns["robust_correct"] = adv_correct.tolist()
        columns["robust_predicted"] = adv_predicted.tolist()
        columns["robust_recall"] = _ratio(adv_correct, support)
        columns["robust_precision"] = _ratio(adv_correct, adv_predicted)
    out = []
    for c in range(k):
        entry: dict[str, Any] = {"class": c}
        if names is not None:
            entry["name"] = _name(c, names)
        entry.update({key: values[c] for key, values in columns.items()})
        out.append(entry)
    return out


def balanced_accuracy(metrics: Sequence[dict[str, Any]], key: str = "recall") -> float | None:
    """Mean recall over the classes that occur (None when none does)."""
    recalls = [m[key] for m in metrics if m["support"] > 0 and m.get(key) is not None]
    return sum(recalls) / len(recalls) if recalls else None


def evasion(
    y: Any,
    clean_pred: Any,
    final_pred: Any,
    cls: int,
    *,
    name: str | None = None,
    eps: float | None = None,
) -> dict[str, Any]:
    """Positives that evade: of the rows of class `cls` the model catches (classifies as
    `cls`) on clean inputs, how many an attack moves to another class (`final_pred`: the
    prediction after the attack, the clean one where no attack succeeded). `missed` counts
    the rows of `cls` the model misses without any attack."""
    y, clean = _labels(y, clean_pred)
    _, final = _labels(y, final_pred)
    rows = y == cls
    caught = rows & (clean == cls)
    evaded = caught & (final != cls)
    n_rows, n_caught, n_evaded = int(rows.sum()), int(caught.sum()), int(evaded.sum())
    return {
        "class": int(cls),
        "name": name if name is not None else str(cls),
        "eps": eps,
        "rows": n_rows,
        "caught": n_caught,
        "missed": n_rows - n_caught,
        "evaded": n_evaded,
        "still_caught": n_caught - n_evaded,
        "evade_rate": n_evaded / n_caught if n_caught else None,
        "recall": n_caught / n_rows if n_rows else None,
        "robust_recall": (n_caught - n_evaded) / n_rows if n_rows else None,
    }


def evasion_line(entry: dict[str, Any]) -> str:
    """`positives that evade (fraud) at eps=0.05: 3 of 5 caught rows evade (60.0%); ...`"""
    rate = entry["evade_rate"]
    share = f" ({100 * rate:.1f}%)" if rate is not None else ""
    eps = f" at eps={entry['eps']:g}" if entry.get("eps") is not None else ""
    return (
        f"positives that evade ({entry['name']}){eps}: {entry['evaded']} of {entry['caught']} "
        f"caught {entry['name']} rows evade{share}; without attack the model misses "
        f"{entry['missed']} of {entry['rows']}"
    )


def class_warnings(
    y: Any,
    pred: Any,
    num_classes: int | None = None,
    *,
    names: Sequence[str] | None = None,
    what: str = "the model",
    collapse: str | None = None,
) -> list[str]:
    """The warnings for predictions `pred` of labels `y` (see the module notes); `what`
    names the predictor in each message, `collapse` (e.g. "training collapsed") prefixes the
    one saying it is no better than the base rate."""
    y, pred = _labels(y, pred)
    n = y.numel()
    if n == 0:
        return []
    metrics = per_class(y, pred, num_classes, names=names)
    support = torch.tensor([m["support"] for m in metrics], dtype=torch.float64)
    predicted = torch.tensor([m["predicted"] for m in metrics], dtype=torch.float64)
    present = int((support > 0).sum())
    warnings: list[str] = []
    accuracy = float((pred == y).double().mean())
    major = int(support.argmax())
    base = float(support[major]) / n
    balanced = balanced_accuracy(metrics) or 0.0
    chance = 1.0 / max(present, 1)
    if (
        present > 1
        and accuracy <= base + BASE_RATE_MARGIN * (1 - base)
        and balanced <= chance + CHANCE_MARGIN * (1 - chance)
    ):
        prefix = f"{collapse}: " if collapse else ""
        warnings.append(
            f"{prefix}{what} is no better than always predicting {_name(major, names)!r}: accuracy "
            f"{100 * accuracy:.1f}% against a base rate of {100 * base:.1f}%, balanced accuracy "
            f"(mean recall over classes) {100 * balanced:.1f}% against chance "
            f"{100 * chance:.1f}%"
        )
    top = int(predicted.argmax())
    top_share = float(predicted[top]) / n
    rest_seen, rest_predicted = n - float(support[top]), n - float(predicted[top])
    if (
        top_share >= DOMINANT_SHARE
        and rest_seen > 0
        and rest_predicted <= UNDER_PREDICTED * (rest_seen)
    ):
        warnings.append(
            f"{what} predicts {_name(top, names)!r} for {100 * top_share:.1f}% of inputs "
            f"({int(predicted[top])} of {n}) while {100 * float(support[top]) / n:.1f}% of "
            f"the labels are {_name(top, names)!r}: the other classes are predicted "
            f"{int(rest_predicted)} times for {int(rest_seen)} rows"
        )
    never = [m for m in metrics if m["support"] >= MIN_SUPPORT and m["correct"] == 0]
    for m in never:
        warnings.append(
            f"{what} never recognises class {_name(m['class'], names)!r}: recall 0 of "
            f"{m['support']} rows"
        )
    return warnings


def recall_line(metrics: Sequence[dict[str, Any]], limit: int = 10) -> str:
    """The per-class numbers for the terminal: up to three classes in words (`legit recall
    99.6% precision 95.7% (under attack: recall 81.1%); fraud ...`), more as recall only,
    clean -> under attack (`0 100%->64%, 1 96%->0%, ...`; precision is in the reports); at
    most `limit` classes, lowest recall first when there are more."""
    shown = list(metrics)
    if len(shown) > limit:
        shown = sorted(shown, key=lambda m: (m["recall"] is None, m["recall"] or 0.0))[:limit]
    more = f"; ... ({len(metrics) - len(shown)} more classes)" if len(metrics) > len(shown) else ""

    def pct(v: float | None, digits: int = 1) -> str:
        return "–" if v is None else f"{100 * v:.{digits}f}%"

    if len(metrics) > 3:
        arrow = " (clean->under attack)" if any("robust_recall" in m for m in shown) else ""
        items = [
            f"{m.get('name', m['class'])} {pct(m['recall'], 0)}"
            + (f"->{pct(m['robust_recall'], 0)}" if "robust_recall" in m else "")
            for m in shown
        ]
        return f"recall{arrow}: " + ", ".join(items) + more
    parts = []
    for m in shown:
        text = f"{m.get('name', m['class'])} recall {pct(m['recall'])} "
        text += f"precision {pct(m['precision'])}"
        if "robust_recall" in m:
            text += f" (under attack: recall {pct(m['robust_recall'])})"
        parts.append(text)
    return "; ".join(parts) + more
