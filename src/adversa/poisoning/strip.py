"""STRIP (Gao et al. 2019, "STRIP: A Defence Against Trojan Attacks on Deep Neural
Networks", arXiv:1902.06531): an inference-time detector. Each input is superimposed on
`n_overlays` clean held-out images (added and clipped, as in the paper's code, or
alpha-blended); a trojaned input keeps being classified as the target
whatever it is blended with, so the mean entropy of the predictions is low. Score: minus the
mean entropy (higher = more suspicious); the threshold is set at the `fpr` quantile of the
clean inputs' scores (`threshold`).

`screen` is the experiment of `adversa inspect-data --detector strip`: STRIP screens inputs
at inference, not the training set, so it splits clean test data (seeded) into held-out
overlays, whose own scores set the threshold at a false-positive rate `fpr`, and inputs to
screen, all of them clean and those outside the target class once more with the trigger;
it reports the ROC AUC of triggered against clean inputs and the rates at the threshold.

Cost: `n_overlays` forward passes per input, batched.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from adversa.errors import BadInput
from adversa.poisoning.base import Trigger, apply_trigger, roc_auc
from adversa.poisoning.detect import _module
from adversa.rng import make_generator


@dataclasses.dataclass(frozen=True, kw_only=True)
class STRIP:
    """STRIP with `n_overlays` clean overlays per input, superimposed by `mode`."""

    n_overlays: int = 16
    mode: str = "add"  # "add": x + overlay clipped to bounds (the paper's); "blend": alpha mix
    alpha: float = 0.5
    bounds: tuple[float, float] = (0.0, 1.0)
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_overlays < 1:
            raise BadInput(f"n_overlays must be >= 1, got {self.n_overlays}")
        if self.mode not in ("add", "blend"):
            raise BadInput(f"mode must be 'add' or 'blend', got {self.mode!r}")
        if not 0.0 < self.alpha < 1.0:
            raise BadInput(f"alpha must be in (0, 1), got {self.alpha}")

    def _superimpose(self, x: Tensor, overlay: Tensor) -> Tensor:
        if self.mode == "add":  # Gao et al.: cv2.addWeighted(x, 1, overlay, 1), clipped
            return (x + overlay).clamp(*self.bounds)
        return (1 - self.alpha) * x + self.alpha * overlay

    @torch.no_grad()
    def scores(self, model: object, x: Tensor, clean: Tensor) -> Tensor:
        """Minus the mean prediction entropy of each input of `x` over overlays from `clean`."""
        if clean.shape[1:] != x.shape[1:]:
            raise BadInput(
                f"clean overlays have shape {tuple(clean.shape[1:])}, inputs {tuple(x.shape[1:])}"
            )
        module = _module(model)
        was_training = module.training
        module.eval()
        gen = make_generator(self.seed)
        pick = torch.randint(0, len(clean), (len(x), self.n_overlays), generator=gen)
        out = []
        try:
            for i in range(0, len(x), self.batch_size):
                xb = x[i : i + self.batch_size, None]
                blended = self._superimpose(xb, clean[pick[i : i + self.batch_size]])
                logp = torch.log_softmax(module(blended.flatten(0, 1)), 1)
                entropy = -(logp.exp() * logp).sum(1).view(len(xb), self.n_overlays).mean(1)
                out.append(-entropy)
        finally:
            module.train(was_training)
        return torch.cat(out)

    def threshold(self, model: object, clean_test: Tensor, clean: Tensor, fpr: float) -> float:
        """The score above which an input is flagged, so that `fpr` of clean inputs are."""
        if not 0.0 < fpr < 1.0:
            raise BadInput(f"fpr must be in (0, 1), got {fpr}")
        return float(torch.quantile(self.scores(model, clean_test, clean), 1 - fpr))

    def screen(
        self,
        model: object,
        x: Tensor,
        y: Tensor,
        trigger: Trigger,
        target: int,
        fpr: float = 0.05,
    ) -> dict[str, object]:
        """Split clean test data (`x`, `y`) in half (seeded): overlays and threshold from one
        half, the other half screened clean and, outside `target`, triggered. Returns the
        AUC, the threshold, the true- and false-positive rates at it, and every score."""
        if not 0.0 < fpr < 1.0:
            raise BadInput(f"fpr must be in (0, 1), got {fpr}")
        if len(x) < 4:
            raise BadInput(f"STRIP needs at least 4 clean test inputs, got {len(x)}")
        perm = torch.randperm(len(x), generator=make_generator(self.seed))
        held, screened = perm[: len(x) // 2], perm[len(x) // 2 :]
        outside = screened[y[screened] != int(target)]
        if outside.numel() == 0:
            raise BadInput(f"no test inputs outside the target class {target} to trigger")
        overlays = x[held]
        calibration = self.scores(model, overlays, overlays)
        threshold = float(torch.quantile(calibration, 1 - fpr))
        clean = self.scores(model, x[screened], overlays)
        triggered = self.scores(model, apply_trigger(x[outside], trigger), overlays)
        scores = torch.cat([triggered, clean])
        truth = torch.arange(len(scores)) < len(triggered)
        return {
            "auc": roc_auc(scores, truth),
            "threshold": threshold,
            "fpr_target": fpr,
            "tpr": float((triggered > threshold).float().mean()),
            "fpr": float((clean > threshold).float().mean()),
            "n_overlays": self.n_overlays,
            "n_held_out": int(held.numel()),
            "scores_triggered": triggered.tolist(),
            "scores_clean": clean.tolist(),
        }
