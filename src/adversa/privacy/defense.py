"""Training-time defenses against membership inference, and what they cost in accuracy.

- label smoothing (Szegedy et al. 2016): soft targets keep the model from driving training
  losses to zero, which is what the loss-threshold attack reads;
- early stopping: keep the weights of the epoch with the lowest validation loss, before the
  model memorises its training set;
- DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy", arXiv:1607.00133)
  through Opacus: per-sample gradients clipped to `max_grad_norm`, Gaussian noise of std
  `noise_multiplier * max_grad_norm` added to their sum, Poisson-sampled batches, and the
  RDP accountant's (epsilon, delta). Opacus is the optional extra `adversa[privacy]` and is
  imported only when DP-SGD is asked for.

`defense_tradeoff` trains the target once per option on the same members and reports, beside
the undefended run, the MIA AUC and TPR at low FPR of the loss-threshold attack (Yeom et al.
2018) and, with `lira_references > 0`, of offline LiRA (Carlini et al. 2022) whose reference
models train with the same option (so a DP-SGD target meets DP-SGD references), and the test
accuracy: the privacy gained and the accuracy paid.

Cost: `epochs` passes over the members per option (DP-SGD: with per-sample gradients, about
2-3x a normal pass for an MLP), `lira_references` such trainings on halves of the candidates
per option (sequential), and one forward pass per candidate per model for the attacks.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from adversa.errors import AdversaError, BadInput
from adversa.model.wrapped import Model
from adversa.nets import MLP
from adversa.privacy.lira import lira_scores
from adversa.privacy.membership import ThresholdAttack, logit_confidence, model_logits
from adversa.privacy.metrics import DEFAULT_FPRS, membership_metrics
from adversa.privacy.stacked import random_halves


class MissingExtra(AdversaError):
    """An optional dependency is not installed."""


def require_opacus() -> Any:
    """Import Opacus, or raise `MissingExtra` naming the extra that installs it."""
    try:
        import opacus
    except ImportError:
        raise MissingExtra(
            "DP-SGD needs Opacus, which is not installed: pip install adversa[privacy]"
        ) from None
    return opacus


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DPSGD:
    """DP-SGD settings (Abadi et al. 2016)."""

    noise_multiplier: float = 1.0  # sigma: noise std / max_grad_norm
    max_grad_norm: float = 1.0  # per-sample gradient clipping norm C
    delta: float = 1e-5  # the delta of the reported (epsilon, delta)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise BadInput(f"noise_multiplier must be >= 0 and finite, got {self.noise_multiplier}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise BadInput(f"max_grad_norm must be > 0 and finite, got {self.max_grad_norm}")
        if not 0 < self.delta < 1:
            raise BadInput(f"delta must lie in (0, 1), got {self.delta}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TargetTraining:
    """How a target MLP is trained: plain, with label smoothing, early stopping or DP-SGD."""

    hidden: tuple[int, ...] = (256,)  # hidden widths of the MLP
    epochs: int = 60  # passes over the training set
    batch_size: int = 32  # (expected, under DP-SGD's Poisson sampling) batch size
    lr: float = 1e-3  # Adam's learning rate (DP-SGD uses it too)
    label_smoothing: float = 0.0  # in [0, 1)
    early_stopping: bool = False  # keep the epoch with the lowest validation loss
    dp: DPSGD | None = None  # DP-SGD through Opacus when set
    seed: int = 0  # initialisation, batch order and DP noise

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput(f"{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BadInput(f"lr must be a finite number > 0, got {self.lr}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise BadInput(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TrainedTarget:
    module: nn.Module
    epochs_run: int  # epochs whose weights are kept (early stopping: the best one)
    epsilon: float | None  # DP-SGD's epsilon at `delta` (None without DP)


def _validation_loss(net: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(net(x), y))


def train_target(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    config: TargetTraining,
    validation: tuple[Tensor, Tensor] | None = None,
) -> TrainedTarget:
    """Train an MLP on (x, y) with `config`; `validation` is needed for early stopping."""
    if config.early_stopping and validation is None:
        raise BadInput("early stopping needs validation data (x_val, y_val)")
    flat = x.reshape(x.shape[0], -1).float()
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net: nn.Module = MLP(flat.shape[1], config.hidden, num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(flat, y),
        batch_size=config.batch_size,
        shuffle=True,
        generator=gen,
    )
    engine = None
    with warnings.catch_warnings():
        # Opacus warns that its RNG is not cryptographically secure (we seed it for
        # reproducibility) and about full backward hooks on modules whose inputs need no grad.
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the.*")
        if config.dp is not None:
            opacus = require_opacus()
            engine = opacus.PrivacyEngine(accountant="rdp")
            net, opt, loader = engine.make_private(
                module=net,
                optimizer=opt,
                data_loader=loader,
                noise_multiplier=config.dp.noise_multiplier,
                max_grad_norm=config.dp.max_grad_norm,
                noise_generator=torch.Generator().manual_seed(config.seed + 1),
            )
        best = (float("inf"), 0, None)
        for epoch in range(1, config.epochs + 1):
            net.train()
            for xb, yb in loader:
                if xb.shape[0] == 0:  # Poisson sampling may draw an empty batch
                    continue
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(
                    net(xb), yb, label_smoothing=config.label_smoothing
                )
                loss.backward()
                opt.step()
            if config.early_stopping and validation is not None:
                net.eval()
                val = _validation_loss(
                    net, validation[0].reshape(len(validation[1]), -1), validation[1]
                )
                if val < best[0]:
                    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    best = (val, epoch, state)
        epsilon = engine.get_epsilon(config.dp.delta) if engine is not None and config.dp else None
    module = net._module if hasattr(net, "_module") else net  # unwrap Opacus' GradSampleModule
    epochs_run = config.epochs
    if config.early_stopping and best[2] is not None:
        net.load_state_dict(best[2])
        epochs_run = best[1]
    return TrainedTarget(module=module.eval(), epochs_run=epochs_run, epsilon=epsilon)


def accuracy(model: Model, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of `model` on (x, y)."""
    return float((model_logits(model, x).argmax(1).cpu() == y.cpu()).float().mean())


def _offline_lira(
    model: Model,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    config: TargetTraining,
    masks: Tensor,
    validation: tuple[Tensor, Tensor] | None,
    fixed_variance: bool,
) -> Tensor:
    """Offline LiRA scores (N,) of `model` on (x, y) against references that train with
    `config` (seeds config.seed + 1 + m) on the halves `masks` (M, N) of the candidates."""
    refs = []
    for m in range(masks.shape[0]):
        ref_config = dataclasses.replace(config, seed=config.seed + 1 + m)
        ref = train_target(x[masks[m]], y[masks[m]], num_classes, ref_config, validation)
        refs.append(logit_confidence(model_logits(Model(ref.module), x), y))
    target = logit_confidence(model_logits(model, x), y)
    return lira_scores(
        target, torch.stack(refs), masks, online=False, fixed_variance=fixed_variance
    )


def _metric_cells(prefix: str, scores: Tensor, members: Tensor, fprs: tuple[float, ...]) -> dict:
    """One attack's metrics under `prefix`: AUC, balanced accuracy, TPR at each FPR with
    whether the non-members resolve that FPR, and its warnings (an AUC below 0.5); then, with
    no prefix, the sample's sizes and the smallest FPR it resolves."""
    metrics = membership_metrics(scores, members, fprs).as_dict()
    cells = {
        f"{prefix}{key}": metrics[key]
        for key in ("auc", "balanced_accuracy", "tpr_at_fpr", "tpr_at_fpr_resolvable", "warnings")
    }
    if not prefix:
        cells |= {key: metrics[key] for key in ("n_members", "n_nonmembers", "min_fpr")}
    return cells


def defense_tradeoff(
    members: tuple[Tensor, Tensor],
    nonmembers: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    options: dict[str, TargetTraining],
    validation: tuple[Tensor, Tensor] | None = None,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    *,
    lira_references: int = 0,
    lira_fixed_variance: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Train the target on `members` once per option ("none" first when present) and report
    per option: loss-threshold MIA AUC, balanced accuracy and TPR at `fprs` (members vs
    `nonmembers`; "tpr_at_fpr_resolvable" says whether the non-members resolve each FPR,
    "min_fpr" is the smallest they do, "warnings" flags an AUC below 0.5), train and test
    accuracy, the accuracy cost against "none", the epochs kept
    and DP-SGD's epsilon. `validation` (disjoint from the candidates) drives early stopping.

    With `lira_references` = M > 0, also offline LiRA ("lira_auc", "lira_tpr_at_fpr", ...):
    M reference models per option, trained with that option on random halves of the
    candidates (complementary pairs drawn with `seed`, so each candidate is OUT for M/2 of
    them; a reference sees (members + non-members) / 2 examples, the target its members);
    M >= 4, or >= 2 with `lira_fixed_variance` (one pooled variance)."""
    if not options:
        raise BadInput("options must name at least one training configuration")
    least = 2 if lira_fixed_variance else 4
    if lira_references and lira_references < least:
        raise BadInput(
            f"lira_references must be 0 (off) or >= {least} for offline LiRA "
            f"{'with' if lira_fixed_variance else 'without'} fixed variance, got {lira_references}"
        )
    x = torch.cat([members[0], nonmembers[0]])
    y = torch.cat([members[1], nonmembers[1]])
    is_member = torch.arange(len(y)) < len(members[1])
    masks = random_halves(lira_references, len(y), seed) if lira_references else None
    rows = []
    for name, config in options.items():
        trained = train_target(*members, num_classes, config, validation)
        model = Model(trained.module, num_classes=num_classes, name=name)
        scores = ThresholdAttack()(model, x, y).scores
        row = {"name": name, **_metric_cells("", scores, is_member, fprs)}
        if masks is not None:
            lira = _offline_lira(
                model, x, y, num_classes, config, masks, validation, lira_fixed_variance
            )
            row.update(_metric_cells("lira_", lira, is_member, fprs))
        row.update(
            {
                "train_accuracy": accuracy(model, *members),
                "test_accuracy": accuracy(model, *test),
                "epochs_run": trained.epochs_run,
                "epsilon": trained.epsilon,
            }
        )
        rows.append(row)
    base = next((r for r in rows if r["name"] == "none"), rows[0])
    for row in rows:
        row["accuracy_cost"] = base["test_accuracy"] - row["test_accuracy"]
    return rows
