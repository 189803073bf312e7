"""The training loop every training-time defense runs in: `train(config, out_dir)`.

The defense decides what one batch's optimizer step does (`Defense.train_batch`); the loop
owns the rest: seeded initialisation, data order and per-batch generators; the optimizer
(Adam, Kingma & Ba 2015, or SGD with momentum) with a cosine learning-rate decay to 0
(Loshchilov & Hutter 2017, "SGDR", arXiv:1608.03983, without restarts), stepped per batch;
per-epoch metrics; a checkpoint after every epoch; resume; data-parallel training under
torchrun; and the final model, card and evaluation (AutoAttack's APGD-CE and APGD-T by
default, Croce & Hein 2020, arXiv:2003.01690).

Reproducibility: the initialisation is seeded with `seed`, epoch e's order is a permutation
drawn from a generator seeded from (seed, stage, e), batch s's draws (random starts, noise)
come from a generator seeded from (seed, stage, s). Nothing depends on state that a
checkpoint does not hold, so a resumed run computes what an uninterrupted one does, bit for
bit on the same machine. Torch's global RNG is never touched.

Distributed (torchrun, process group already initialised): every rank draws the same
permutation, takes its contiguous shard of each global batch of `batch_size` samples, and
DistributedDataParallel averages the gradients weighted by shard size (a global batch smaller
than the world size is skipped). Every rank draws the whole batch's randomness from the same
generator and keeps its shard's rows (`StepContext`), so K processes train the weights one
does, within float tolerance. Only rank 0 writes files; the final evaluation is sharded.

Cost per epoch: the defense's cost per batch (see each defense) times the number of batches,
plus one forward pass over the test split for the per-epoch test accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adversa import distributed
from adversa.checks import check_in_bounds
from adversa.data import Dataset
from adversa.defenses.base import DefenseBase, DefenseState, StepContext
from adversa.errors import BadInput, describe
from adversa.nets import build_arch
from adversa.rng import make_generator
from adversa.train.card import TrainResult, build_card, final_evaluation
from adversa.train.config import TrainConfig, load_splits
from adversa.train.parts import (
    SUMS,
    accumulate,
    cosine,
    derive_seed,
    make_optimizer,
    test_accuracy,
)
from adversa.train.rundir import RunDir, cpu_state
from adversa.train.sampling import epoch_order

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (description, completed, total)


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
    description: str = "training",
    local: bool = False,
) -> TrainResult:
    """Train `config` and return the result; with `out_dir`, write the run there.

    `resume` continues the run in `out_dir` from its last finished epoch (or starts it when
    there is none; a finished run is returned as it is); `overwrite` replaces a run that is
    there. A directory holding another run raises `BadInput` unless `overwrite`.
    `progress(description, completed_batches, total_batches)` is called after each batch.
    `local=True` trains in this process alone even inside a process group (the zoo does, on
    rank 0 while the other ranks wait); it needs `final_eval=()`, since the evaluation would
    wait for the other ranks.
    """
    if not isinstance(config, TrainConfig):
        raise BadInput(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_arguments(out_dir, resume, overwrite, progress, device, description, local)
    if local and config.final_eval and distributed.world()[1] > 1:
        raise BadInput("a local run inside a process group needs final_eval=()")
    datasets = _in_declared_bounds(config, load_splits(config))  # before the directory is touched
    with torch.random.fork_rng(devices=[]):  # so does an arch that does not fit the data
        build_arch(config.arch, datasets[0].input_shape, datasets[0].num_classes)
    run = RunDir(Path(out_dir).expanduser()) if out_dir is not None else None
    main = local or distributed.is_main()
    checkpoint = None
    if run is not None:
        checkpoint = run.prepare(config.to_dict(), resume=resume, overwrite=overwrite, main=main)
        if not local:
            distributed.barrier()  # every rank has checked the directory before rank 0 writes
        if resume and run.finished_card() is not None:
            history = checkpoint["history"] if checkpoint is not None else []
            return TrainResult.load(run, history, device)
        if checkpoint is None and main:
            run.begin(config.to_dict())
    loop = _Loop(config, datasets, run, progress, torch.device(device), description, local)
    return loop.run(checkpoint)


def _check_arguments(
    out_dir: object,
    resume: object,
    overwrite: object,
    progress: object,
    device: object,
    description: object,
    local: object,
) -> None:
    """`train`'s keyword arguments, each named in a `BadInput` when it has the wrong type."""
    if out_dir is not None and not isinstance(out_dir, str | Path):
        raise BadInput(f"out_dir must be a path or None, got {describe(out_dir)}")
    for name, flag in (("resume", resume), ("overwrite", overwrite), ("local", local)):
        if not isinstance(flag, bool):
            raise BadInput(f"{name} must be True or False, got {describe(flag)}")
    if progress is not None and not callable(progress):
        raise BadInput(f"progress must be a callable or None, got {describe(progress)}")
    if not isinstance(description, str):
        raise BadInput(f"description must be a string, got {describe(description)}")
    if not isinstance(device, str | torch.device):
        raise BadInput(f"device must be a torch device or a string, got {describe(device)}")
    try:
        torch.device(device)
    except RuntimeError:
        raise BadInput(
            f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from None


def _in_declared_bounds(
    config: TrainConfig, datasets: tuple[Dataset, Dataset]
) -> tuple[Dataset, Dataset]:
    """Check both splits against the declared bounds (`config.data_bounds()`, else the
    dataset's), as the evaluation does: a defense's adversary or noise clips to them, so data
    outside would be trained on clipped inputs. The splits take the declared bounds, which
    the card and the final evaluation then use."""
    declared = config.data_bounds()
    checked = []
    for split, dataset in zip(("training", "test"), datasets, strict=True):
        bounds = declared if declared is not None else tuple(dataset.bounds)
        hint = (
            f"scale the data into [{bounds[0]:g}, {bounds[1]:g}], or declare its range "
            "(TrainConfig bounds=(LO, HI); adversa train --bounds LO,HI)"
        )
        check_in_bounds(dataset.x, bounds, f"{split} data {dataset.name!r}", hint)
        same = tuple(dataset.bounds) == bounds
        checked.append(dataset if same else dataclasses.replace(dataset, bounds=bounds))
    return checked[0], checked[1]


class _Loop:
    def __init__(
        self,
        config: TrainConfig,
        datasets: tuple[Dataset, Dataset],
        run: RunDir | None,
        progress: Progress | None,
        device: torch.device,
        description: str,
        local: bool = False,
    ) -> None:
        self.config = config
        self.run_dir = run
        self.progress = progress
        self.device = device
        self.description = description
        self.rank, self.world = (0, 1) if local else distributed.world()
        self.train_set, self.test_set = datasets
        self.x = self.train_set.x.to(device)
        self.y = self.train_set.y.to(device)
        full, rest = divmod(len(self.train_set), config.batch_size)
        self.per_epoch = full + (1 if rest >= self.world else 0)
        self.total = config.epochs * self.per_epoch  # batches per stage
        self.n_stages = len(config.defense.stages())
        self.weight = distributed.ShardWeight()
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def run(self, checkpoint: dict[str, Any] | None) -> TrainResult:
        plan = self.config.defense.stages()
        names = [name for name, _ in plan]
        done_stage = names.index(checkpoint["stage"]) if checkpoint else -1
        if checkpoint:
            self.history = list(checkpoint["history"])
            self.seconds, self.cpu_seconds = checkpoint["seconds"], checkpoint["cpu_seconds"]
        teacher: nn.Module | None = None
        module = None
        for index, (stage, defense) in enumerate(plan):
            if stage == "student":
                defense = defense.with_teacher(teacher)
            if index < done_stage:  # finished before the checkpoint: only the teacher matters
                assert checkpoint is not None
                teacher = self._module(stage, checkpoint["teacher"]).eval()
                continue
            own = checkpoint if index == done_stage else None
            module = self._fit(index, stage, defense, own, teacher)
            if stage == "teacher":
                teacher = module.eval()
        assert module is not None
        module.eval()
        last = self.history[-1] if self.history else {}
        evaluation = final_evaluation(
            self.config,
            module,
            self.test_set,
            self.device,
            self.progress,
            clean_accuracy=last.get("test_clean_accuracy"),  # measured on these weights
        )
        card = build_card(
            self.config,
            self.train_set,
            self.test_set,
            history=self.history,
            evaluation=evaluation,
            seconds=self.seconds,
            cpu_seconds=self.cpu_seconds,
            world=self.world,
            device=self.device,
            name=self.run_dir.path.name if self.run_dir is not None else None,
        )
        teacher_state = cpu_state(teacher) if teacher is not None else None
        if self.run_dir is not None and self.rank == 0:
            card = self.run_dir.save_final(cpu_state(module), card, teacher_state)
        if self.world > 1:
            distributed.barrier()
        return TrainResult(module, card, list(self.history), self.run_dir and self.run_dir.path)

    def _module(self, stage: str, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The architecture, initialised from the run's seed (without touching global RNG)."""
        seed = self.config.seed if stage != "student" else derive_seed(self.config.seed, stage)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build_arch(
                self.config.arch, self.train_set.input_shape, self.train_set.num_classes
            )
        if state is not None:
            module.load_state_dict(state)
        return module.to(self.device)

    def _fit(
        self,
        index: int,
        stage: str,
        defense: DefenseBase,
        checkpoint: dict[str, Any] | None,
        teacher: nn.Module | None,
    ) -> nn.Module:
        config = self.config
        module = self._module(stage)
        state = defense.new_state()  # fresh for the stage (free-AT's carried perturbation)
        optimizer = make_optimizer(config, module)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine(self.total))
        start = 0
        if checkpoint is not None:
            module.load_state_dict(checkpoint["module"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            start = int(checkpoint["epoch"])
            states = checkpoint.get("defense_state")
            if states:
                state.load_state_dict(states[self.rank % len(states)])
        net = distributed.data_parallel(module, self.weight) if self.world > 1 else module
        for epoch in range(start, config.epochs):
            began, cpu_began = time.perf_counter(), time.process_time()
            line = self._epoch(index, stage, epoch, net, optimizer, scheduler, defense, state)
            self.seconds += time.perf_counter() - began
            self.cpu_seconds += time.process_time() - cpu_began
            line.update(self._test_accuracy(module))
            self.history.append(line)
            log.info("%s: %s", self.description, line)
            self._save(stage, epoch + 1, module, optimizer, scheduler, state, teacher)
        return module

    def _epoch(
        self,
        index: int,
        stage: str,
        epoch: int,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        defense: DefenseBase,
        state: DefenseState,
    ) -> dict[str, Any]:
        config, size = self.config, self.config.batch_size
        began = time.perf_counter()
        order_gen = make_generator(derive_seed(config.seed, stage, "order", epoch))
        order = epoch_order(config.class_balance, self.train_set.y, order_gen).to(self.device)
        lr = optimizer.param_groups[0]["lr"]
        sums = dict.fromkeys(SUMS, 0.0)
        net.train()
        for b in range(self.per_epoch):
            step = epoch * self.per_epoch + b
            batch = order[b * size : (b + 1) * size]
            shards = batch.tensor_split(self.world)
            mine = shards[self.rank]
            self.weight.value = len(mine) / len(batch)
            ctx = StepContext(
                step=step,
                total=self.total,
                epoch=epoch,
                seed=config.seed,
                gen=self._generator(stage, step),
                state=state,
                offset=sum(len(s) for s in shards[: self.rank]),
                rows=len(batch),
                gather=distributed.gather_rows if self.world > 1 else None,
            )
            metrics = defense.train_batch(net, optimizer, self.x[mine], self.y[mine], ctx)
            scheduler.step()
            accumulate(sums, metrics, len(mine))
            if self.progress is not None:
                done = index * self.total + step + 1
                self.progress(self.description, done, self.n_stages * self.total)
        totals = torch.tensor([sums[k] for k in SUMS], dtype=torch.float64)
        if self.world > 1:
            distributed.all_reduce_sum(totals)
        s = dict(zip(SUMS, totals.tolist(), strict=True))
        n, n_adv = max(s["n"], 1.0), s["n_adv"]
        return {
            "stage": stage,
            "epoch": epoch + 1,
            "lr": lr,
            "loss": s["loss"] / n,
            "clean_loss": s["clean_loss"] / n,
            "clean_accuracy": s["clean_correct"] / n,
            "adv_loss": s["adv_loss"] / n_adv if n_adv else None,
            "adv_accuracy": s["adv_correct"] / n_adv if n_adv else None,
            "samples": int(s["n"]),
            "steps": (epoch + 1) * self.per_epoch,
            "seconds": round(time.perf_counter() - began, 4),
        }

    def _generator(self, stage: str, step: int) -> torch.Generator:
        """The batch's generator, the same on every rank (the 0 was the rank: kept, so that
        one-process runs draw as before)."""
        return make_generator(derive_seed(self.config.seed, stage, "batch", step, 0), self.device)

    def _test_accuracy(self, module: nn.Module) -> dict[str, float]:
        began = time.perf_counter()
        accuracy = test_accuracy(module, self.test_set, self.device)
        return {
            "test_clean_accuracy": accuracy,
            "eval_seconds": round(time.perf_counter() - began, 4),
        }

    def _save(
        self,
        stage: str,
        epoch: int,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        state: DefenseState,
        teacher: nn.Module | None,
    ) -> None:
        carried = state.state_dict()
        states = None
        if carried:
            states = distributed.all_gather(carried) if self.world > 1 else [carried]
        if self.run_dir is None or self.rank != 0:
            return
        self.run_dir.save_epoch(
            {
                "config": self.config.to_dict(),
                "stage": stage,
                "epoch": epoch,
                "module": cpu_state(module),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "defense_state": states,
                "teacher": cpu_state(teacher) if teacher is not None else None,
                "history": self.history,
                "seconds": self.seconds,
                "cpu_seconds": self.cpu_seconds,
            }
        )
