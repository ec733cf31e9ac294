"""One rank of tests/training/test_distributed.py's two-process check, started by torchrun.

Runs every collective helper of medverse.training.distributed in a gloo world of two and writes
what it saw to ``<folder>/rank<r>.json``; the test compares the two files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from medverse.training.distributed import (
    all_reduce_min,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    shard,
    unwrap,
    wrap_model,
)


def main(folder: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu", timeout_s=60.0)
    rank = info.rank
    # DDP starts every rank from rank 0's weights and averages the gradients
    torch.manual_seed(rank)
    model = nn.Linear(1, 1, bias=False)
    wrapped = wrap_model(model, info)
    x = torch.tensor([[1.0 + 2.0 * rank]])  # rank 0: 1, rank 1: 3 -> mean gradient 2
    wrapped(x).sum().backward()
    shares: list[list[int]] = [[], []]
    dist.all_gather_object(shares, list(shard(6, info.rank, info.world_size)))
    result = {
        "info": [info.rank, info.world_size, info.local_rank, str(info.device), info.backend],
        "is_main": info.is_main,
        "min": all_reduce_min(10 - 3 * rank, info),  # 10 and 7
        "broadcast": broadcast_object({"from": rank, "seed": 100 + rank}, info),
        "shares": shares,
        "wrapped": type(wrapped).__name__,
        "unwrapped_is_model": unwrap(wrapped) is model,
        "weight": float(model.weight.detach()),
        "grad": float(model.weight.grad.detach()),
    }
    barrier(info)
    cleanup(info)
    result["initialized_after_cleanup"] = dist.is_initialized()
    Path(folder, f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
