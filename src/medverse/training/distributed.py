"""Multi-process training under ``torchrun``: process group, DDP wrap, episode sharding.

``torchrun --nproc_per_node N -m medverse.training --config run.yaml`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address); :func:`init_distributed` reads them
and joins the group with ``nccl`` on CUDA and ``gloo`` on CPU. A plain ``python -m`` run is a
world of one and touches no process group.

Episodes are numbered globally: step ``s`` uses episodes ``s * B .. s * B + B - 1`` of the global
batch ``B``, and rank ``r`` of ``W`` takes the contiguous share :func:`shard` gives it. Every
random choice depends only on (seed, step, episode number), never on the rank, and DDP averages
the gradients of the per-rank mean losses, so 2 ranks x ``B/2`` episodes compute the same update
as 1 process x ``B`` (up to float rounding). Only rank 0 logs, writes checkpoints and validates.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from medverse.errors import InputError

__all__ = [
    "DistInfo",
    "init_distributed",
    "wrap_model",
    "unwrap",
    "shard",
    "barrier",
    "all_reduce_min",
    "broadcast_object",
    "cleanup",
    "resolve_device",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: this process's device.
        backend: ``"nccl"``, ``"gloo"`` or None (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, validates and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device 'cuda' requested but CUDA is not available; use device: cpu")
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(device)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str = "auto", *, timeout_s: float = 1800.0) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; the backend follows (nccl on CUDA, gloo on
            CPU).
        timeout_s: collective timeout.

    Returns:
        :class:`DistInfo` for this process.
    """
    rank = _env_int("RANK", 0)
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    torch_device = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistInfo(0, 1, 0, torch_device, None)
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    log.info("rank %d/%d on %s (%s)", rank, world_size, torch_device, backend)
    return DistInfo(rank, world_size, local_rank, torch_device, backend)


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP-wrap ``model`` when distributed (else return it unchanged).

    ``find_unused_parameters=True`` because level-1 steps leave the AR role code and embedding
    without gradient; every rank takes the same kind of step, so the unused set agrees.
    """
    if not info.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside a DDP wrapper."""
    return model.module if hasattr(model, "module") else model


def shard(global_batch: int, rank: int, world_size: int) -> range:
    """This rank's episode offsets within a global batch (contiguous, equal shares).

    Raises:
        InputError: the global batch does not divide by the world size.

    Example:
        >>> list(shard(4, 1, 2))
        [2, 3]
    """
    if global_batch % world_size:
        raise InputError(
            f"batch_size {global_batch} (the global batch) must be a multiple of the number of "
            f"processes {world_size}; set batch_size to {world_size * max(1, global_batch // world_size)}"
        )
    per_rank = global_batch // world_size
    return range(rank * per_rank, (rank + 1) * per_rank)


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_min(value: int, info: DistInfo) -> int:
    """The smallest ``value`` over all ranks (itself when not distributed)."""
    if not info.distributed:
        return int(value)
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def broadcast_object(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not info.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(info: DistInfo) -> None:
    """Barrier, then leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
