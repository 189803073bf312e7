"""API-side defenses against model extraction: what a served model returns instead of its
probabilities, and what that costs honest users.

- `top1`: the one-hot label only.
- `round:D`: probabilities rounded to D decimals (Tramer et al. 2016's rounding
  countermeasure, arXiv:1609.02943).
- `reverse-sigmoid:beta=B,gamma=G`: Lee et al. 2019, "Defending Against NN Model Stealing
  Attacks Using Deceptive Perturbations", arXiv:1806.00054: y' = alpha * (y - beta *
  (sigmoid(gamma * logit(y)) - 1/2)), clipped at 0 and renormalised (alpha), which keeps
  the returned labels nearly intact while the scores stop being an invertible function of the
  logits.

`serve(model, defense)` is the query-only API (`Access.SCORES`, counting queries) an
extraction attacker talks to; `honest_cost` measures what the defense changes for everyone
else: the accuracy of the returned labels and the total-variation distance between returned
and true probabilities.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import torch
from torch import Tensor, nn

from adversa.errors import BadInput
from adversa.extraction.poison import poison
from adversa.model import Access, Model, as_model

SPECS = "none, top1, round:D, reverse-sigmoid[:beta=B,gamma=G], poison:eps=E[,argmax=1]"


@dataclasses.dataclass(frozen=True, kw_only=True)
class APIDefense:
    """One output transform: `kind` in none, top1, round, reverse-sigmoid, poison and its
    numbers."""

    kind: str = "none"
    decimals: int = 2  # round
    beta: float = 0.7  # reverse-sigmoid: perturbation size
    gamma: float = 0.4  # reverse-sigmoid: sigmoid slope
    eps: float = 0.5  # poison: L1 budget of the change of each returned vector
    argmax: bool = False  # poison: keep the top label (MAD-argmax)
    arch: str | None = None  # poison: surrogate architecture (None: small-cnn or mlp)
    seed: int = 0  # poison: seeds the surrogate's random initialisation

    def __post_init__(self) -> None:
        if self.kind not in ("none", "top1", "round", "reverse-sigmoid", "poison"):
            raise BadInput(f"--defense {self.kind!r}: expected one of {SPECS}")
        if self.kind == "round" and not 0 <= self.decimals <= 8:
            raise BadInput(f"--defense round:{self.decimals}: decimals must be in 0..8")
        if self.kind == "reverse-sigmoid" and not (self.beta > 0 and self.gamma > 0):
            raise BadInput(
                f"--defense reverse-sigmoid: beta and gamma must be > 0, got beta={self.beta}, "
                f"gamma={self.gamma}"
            )
        if self.kind == "poison" and not 0 < self.eps <= 2:
            raise BadInput(f"--defense poison:eps={self.eps:g}: eps must be in (0, 2]")

    @property
    def label(self) -> str:
        if self.kind == "round":
            return f"round:{self.decimals}"
        if self.kind == "reverse-sigmoid":
            return f"reverse-sigmoid:beta={self.beta:g},gamma={self.gamma:g}"
        if self.kind == "poison":
            return f"poison:eps={self.eps:g}" + (",argmax=1" if self.argmax else "")
        return self.kind

    @property
    def needs_inputs(self) -> bool:
        """Whether the transform reads the queried inputs (poison's surrogate gradients)."""
        return self.kind == "poison"

    def __call__(self, probs: Tensor, x: Tensor | None = None) -> Tensor:
        """The returned scores (B, C) for true probabilities `probs` (B, C) of inputs `x`
        (needed by poison only)."""
        if self.kind == "poison":
            if x is None:
                raise BadInput("--defense poison needs the queried inputs")
            return poison(probs, x, self.eps, self.argmax, self.arch, self.seed)
        transform: dict[str, Callable[[Tensor], Tensor]] = {
            "none": lambda p: p,
            "top1": lambda p: nn.functional.one_hot(p.argmax(1), p.shape[1]).to(p.dtype),
            "round": lambda p: torch.round(p, decimals=self.decimals),
            "reverse-sigmoid": self._reverse_sigmoid,
        }
        return transform[self.kind](probs)

    def _reverse_sigmoid(self, p: Tensor) -> Tensor:
        eps = 1e-6
        p = p.clamp(eps, 1 - eps)
        r = self.beta * (torch.sigmoid(self.gamma * torch.logit(p)) - 0.5)
        out = (p - r).clamp_min(0)
        return out / out.sum(1, keepdim=True).clamp_min(eps)


def parse_defense(text: str | None) -> APIDefense:
    """`none`, `top1`, `round:2`, `reverse-sigmoid`, `reverse-sigmoid:beta=0.7,gamma=0.4`."""
    spec = (text or "none").strip().lower()
    kind, _, rest = spec.partition(":")
    if kind == "round":
        if not re.fullmatch(r"\d+", rest):
            raise BadInput(f"--defense {text!r}: expected round:D with D decimals, e.g. round:2")
        return APIDefense(kind="round", decimals=int(rest))
    if kind == "reverse-sigmoid":
        values: dict[str, float] = {}
        for part in filter(None, rest.split(",")):
            key, _, value = part.partition("=")
            if key.strip() not in ("beta", "gamma"):
                raise BadInput(f"--defense {text!r}: reverse-sigmoid takes beta=B,gamma=G")
            try:
                values[key.strip()] = float(value)
            except ValueError:
                raise BadInput(f"--defense {text!r}: {key.strip()} must be a number") from None
        return APIDefense(kind="reverse-sigmoid", **values)
    if kind == "poison":
        return _parse_poison(text, rest)
    if rest or kind not in ("none", "top1"):
        raise BadInput(f"--defense {text!r}: expected one of {SPECS}")
    return APIDefense(kind=kind)


def _parse_poison(text: str | None, rest: str) -> APIDefense:
    values: dict[str, float] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = (s.strip() for s in part.partition("="))
        if key not in ("eps", "argmax"):
            raise BadInput(f"--defense {text!r}: poison takes eps=E[,argmax=0|1]")
        try:
            values[key] = float(value)
        except ValueError:
            raise BadInput(f"--defense {text!r}: {key} must be a number") from None
    if "eps" not in values:
        raise BadInput(f"--defense {text!r}: expected poison:eps=E with 0 < E <= 2")
    if values.get("argmax", 0) not in (0, 1):
        raise BadInput(f"--defense {text!r}: argmax must be 0 or 1")
    return APIDefense(kind="poison", eps=values["eps"], argmax=bool(values.get("argmax", 0)))


def serve(model: Model | nn.Module, defense: APIDefense) -> Model:
    """The query-only API serving `model` behind `defense`: it returns the defended
    probabilities, counts every input as a query and refuses gradients."""
    model = as_model(model)

    def returned(x: Tensor) -> Tensor:
        return defense(nn.functional.softmax(model(x).float(), 1), x)

    return model.derive(
        forward=returned, access=Access.SCORES, name=f"{model.name} ({defense.label})"
    )


@torch.no_grad()
def honest_cost(model: Model | nn.Module, defense: APIDefense, x: Tensor, y: Tensor) -> dict:
    """What `defense` costs honest users on `(x, y)`: the accuracy of the labels the API
    returns (argmax of its scores) beside the undefended accuracy, and the mean and largest
    total-variation distance between returned and true probabilities."""
    model = as_model(model)
    x = x.to(model.device)
    with model.eval_mode():
        probs = torch.cat(
            [
                nn.functional.softmax(model(x[i : i + 1024]).float(), 1)
                for i in range(0, len(x), 1024)
            ]
        )
    returned = torch.cat(
        [defense(probs[i : i + 1024], x[i : i + 1024]) for i in range(0, len(x), 1024)]
    )
    y = y.to(probs.device)
    tv = 0.5 * (returned - probs).abs().sum(1)
    acc = float((probs.argmax(1) == y).float().mean())
    acc_defended = float((returned.argmax(1) == y).float().mean())
    return {
        "defense": defense.label,
        "label_accuracy": acc_defended,
        "label_accuracy_undefended": acc,
        "label_accuracy_cost": acc - acc_defended,
        "labels_changed": float((returned.argmax(1) != probs.argmax(1)).float().mean()),
        "probability_change_mean": float(tv.mean()),
        "probability_change_max": float(tv.max()),
    }
