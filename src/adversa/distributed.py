"""torch.distributed helpers for sharded evaluation and data-parallel training (torchrun; gloo
on CPU, nccl on GPU).

Ranks split the work batch by batch, round-robin, over the same batches a single process
would run, and every rank receives everyone's per-sample results after each stage. Attacks
are seeded per call, so a batch yields the same result whichever rank runs it: a K-process
run reports exactly what a 1-process run with the same seed reports (timings aside). An
evaluation of fewer than batch_size x K points runs in batches of n // K (`batch_size_for`),
so that no rank idles; it then reports what one process reports with that batch size.
Without an initialised process group every helper is the single-process identity.

Training (`data_parallel`) wraps the module in DistributedDataParallel; each rank trains on
its shard of every global batch, and the gradient all-reduce weights each rank by its share of
the batch, so the update is the one a single process computes on the whole batch;
`gather_rows` joins the shards of a per-sample tensor (free-AT's carried perturbation).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from adversa.model import Cost

logger = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1).

    Returns True when this call initialised a group (the caller should `shutdown()` it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return False
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    logger.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def batch_size_for(n: int, batch_size: int) -> int:
    """The batch size that gives every rank work on `n` points: `batch_size`, or n // K when
    `n` points in batches of `batch_size` would be fewer than K batches (at least 1: with
    n < K, K - n ranks stay idle). A K-process evaluation of `n` points therefore reports what
    one process reports with this batch size. Outside a process group: `batch_size`."""
    size = world()[1]
    if size == 1 or n >= batch_size * size:
        return batch_size
    return max(1, n // size)


def my_batches(idx: Tensor, batch_size: int) -> Iterator[Tensor]:
    """This rank's share of the batches `idx` splits into: batch j goes to rank j mod K."""
    rank, size = world()
    for j, start in enumerate(range(0, idx.shape[0], batch_size)):
        if j % size == rank:
            yield idx[start : start + batch_size]


def all_gather(payload: Any) -> list[Any]:
    """Every rank's `payload`, in rank order (tensors travel through CPU)."""
    size = world()[1]
    if size == 1:
        return [payload]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, _to_cpu(payload))
    return out


def gather_rows(shard: Tensor) -> Tensor:
    """Every rank's `shard` of a per-sample tensor, concatenated in rank order on `shard`'s
    device (`shard` itself outside a process group)."""
    return torch.cat([part.to(shard.device) for part in all_gather(shard)])


def sum_costs(cost: Cost) -> Cost:
    """The cost over all ranks: passes add up; seconds are the slowest rank's."""
    costs = all_gather(cost)
    total = Cost()
    for c in costs:
        total = total + c
    return Cost(total.forward, total.backward, total.queries, max(c.seconds for c in costs))


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The elementwise sum of `tensor` over all ranks (in place; returned for chaining)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@dataclasses.dataclass
class ShardWeight:
    """This rank's share of the current global batch: local samples / global samples."""

    value: float = 1.0


def _weighted_sum_hook(weight, bucket):  # type: ignore[no-untyped-def]
    """DDP communication hook: sum over ranks of (share of the batch) x (local mean gradient),
    the gradient of the global-batch mean even when shards differ in size (DDP's default
    divides by the world size, which is right only for equal shards).

    (weight: ShardWeight, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]; left
    unannotated because DDP checks annotations against the classes, and postponed
    annotations are strings.)"""
    buffer = bucket.buffer().mul_(weight.value)
    future = dist.all_reduce(buffer, async_op=True).get_future()  # type: ignore[union-attr]
    return future.then(lambda done: done.value()[0])


def data_parallel(module: nn.Module, weight: ShardWeight) -> nn.Module:
    """`module` wrapped in DistributedDataParallel with the batch-share-weighted gradient
    all-reduce (set `weight.value` before each batch); `module` itself outside a process group.
    Parameters are broadcast from rank 0 when the wrapper is built."""
    if world()[1] == 1:
        return module
    if is_main() and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        logger.warning(
            "BatchNorm under data-parallel training normalises each rank's shard by its own "
            "statistics: the weights will differ from a 1-process run's"
        )
    param = next(module.parameters())
    device_ids = [param.device.index] if param.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    ddp.register_comm_hook(weight, _weighted_sum_hook)
    return ddp


def _to_cpu(payload: Any) -> Any:
    if isinstance(payload, Tensor):
        return payload.cpu()
    if isinstance(payload, tuple | list):
        return type(payload)(_to_cpu(p) for p in payload)
    return payload


__all__ = [
    "ShardWeight",
    "all_gather",
    "all_reduce_sum",
    "barrier",
    "batch_size_for",
    "data_parallel",
    "gather_rows",
    "init_from_env",
    "is_main",
    "my_batches",
    "shutdown",
    "sum_costs",
    "world",
]
