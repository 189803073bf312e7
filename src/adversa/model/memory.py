"""How many points fit in one attack batch: `--batch-size auto`.

`auto_batch_size` measures what autograd keeps for a forward pass with input gradients (the
tensors saved for backward, through `torch.autograd.graph.saved_tensors_hooks`) at one and at
two points; the difference is the per-point cost and the rest is fixed (weights that layers
save). The batch is the share `FRACTION` of the memory available now (CUDA:
`torch.cuda.mem_get_info`; CPU: `MemAvailable` in /proc/meminfo) divided by `FACTOR` times the
per-point cost (the gradient, the attack's copies of the batch and per-class gradients), at
most `CAP`. Cost: three forward passes on at most two points, none counted.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from adversa.errors import BadInput
from adversa.model.wrapped import Model

FRACTION = 0.25  # of the available memory an attack batch may take
FACTOR = 4  # the batch's saved activations times this: gradients and the attack's copies
CAP = 1024  # no batch larger than this
FALLBACK_BYTES = 4 * 2**30  # when the available memory cannot be read


def available_memory(device: torch.device) -> int:
    """Bytes free on `device` now (CUDA) or available to a new allocation (CPU, Linux)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return FALLBACK_BYTES


def saved_bytes(model: Model, x: Tensor) -> int:
    """Bytes autograd saves for backward in one forward pass of `x` with input gradients."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x.detach().clone().requires_grad_(True))
    return total


def auto_batch_size(model: Model, x: Tensor, *, available: int | None = None) -> int:
    """The attack batch size for `model` on points like `x` (see the module docs); `available`
    overrides the measured free memory (bytes)."""
    if len(x) == 0:
        raise BadInput("--batch-size auto needs at least one point to measure")
    probe = x[:1].to(model.device)
    one = saved_bytes(model, probe)
    two = saved_bytes(model, probe.expand(2, *probe.shape[1:]))
    per_point = max(two - one, 1)
    fixed = max(one - per_point, 0)
    free = available_memory(model.device) if available is None else available
    budget = FRACTION * free - fixed
    return int(min(CAP, max(1, budget // (FACTOR * per_point))))
