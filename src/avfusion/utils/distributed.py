"""torchrun / DDP plumbing: init from the environment, rank helpers, exact gathers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK); NCCL on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / info.world_size


def max_over_ranks(values: list[float], info: DistInfo, device: torch.device | None = None) -> list[float]:
    """The element-wise maximum of ``values`` over ranks (one small all-reduce), so that decisions
    taken from per-rank observations (a non-finite loss, a signal) are the same on every rank."""
    if not info.enabled:
        return list(values)
    x = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x.tolist()


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """Every rank's ``obj`` in rank order (pickled over the process group; for metrics, not tensors in bulk)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_indices(n: int, info: DistInfo, pad: bool) -> list[int]:
    """Indices 0..n-1 split over ranks as rank, rank + world, ...

    ``pad=True`` (training) repeats the first indices so every rank gets the same count, as
    DistributedSampler does. Evaluation uses ``pad=False`` so no sample is counted twice: ranks may
    then get one sample fewer, and results are gathered by sample index.
    """
    idx = list(range(n))
    if pad and info.world_size > 1 and n % info.world_size:
        extra = info.world_size - n % info.world_size
        idx += idx[:extra]
    return idx[info.rank::info.world_size]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
