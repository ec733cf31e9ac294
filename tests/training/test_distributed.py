"""Tests for medverse.training.distributed: sharding, devices, the torchrun environment, and the
collective helpers in a world of one and in two gloo CPU processes.

A whole two-rank training run is ``tests/training/test_ddp.py`` (slow); here two bare processes
check the helpers themselves in a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from medverse.errors import InputError
from medverse.training.distributed import (
    DistInfo,
    all_reduce_min,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
    resolve_device,
    shard,
    unwrap,
    wrap_model,
)

from .conftest import torchrun

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


# ---------------------------------------------------------------------------------- shard


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 6])
def test_shards_cover_every_episode_of_the_batch_exactly_once_in_rank_order(
    world_size: int,
) -> None:
    for global_batch in range(world_size, 25, world_size):
        shares = [list(shard(global_batch, rank, world_size)) for rank in range(world_size)]
        # concatenated in rank order they are the batch: each index once, contiguous shares
        assert [i for share in shares for i in share] == list(range(global_batch))
        assert {len(share) for share in shares} == {global_batch // world_size}


def test_shard_refuses_a_batch_that_does_not_divide_and_suggests_one() -> None:
    with pytest.raises(InputError, match=r"batch_size 6 .* processes 4; set batch_size to 4"):
        shard(6, 0, 4)
    with pytest.raises(InputError, match="set batch_size to 3"):
        shard(2, 1, 3)  # smaller than the world: one episode per process
    assert list(shard(4, 1, 2)) == [2, 3]


# ----------------------------------------------------------------------------- DistInfo


def test_dist_info_main_process_and_distributed() -> None:
    single = DistInfo()
    assert (single.rank, single.world_size, single.backend) == (0, 1, None)
    assert single.is_main and not single.distributed
    second = DistInfo(rank=1, world_size=2, backend="gloo")
    assert not second.is_main and second.distributed
    assert DistInfo(rank=0, world_size=2).is_main


# ------------------------------------------------------------------------- resolve_device


def test_resolve_device_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(InputError, match="CUDA is not available; use device: cpu"):
        resolve_device("cuda")


def test_resolve_device_takes_the_gpu_of_the_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)  # wraps around
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")


# ----------------------------------------------------------------------- init_distributed


def test_a_plain_run_is_a_world_of_one_without_a_process_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    joined = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: joined.append(k))
    assert init_distributed("cpu") == DistInfo(0, 1, 0, torch.device("cpu"), None)
    # torchrun with one process, or empty variables: still no process group
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "")
    assert init_distributed("cpu").world_size == 1
    assert joined == []


def test_init_distributed_names_a_variable_that_is_not_an_integer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed("cpu")


def test_init_distributed_joins_with_gloo_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    joined = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: joined.append(kwargs))
    info = init_distributed("cpu", timeout_s=12.0)
    assert info == DistInfo(3, 4, 1, torch.device("cpu"), "gloo")
    assert len(joined) == 1
    assert joined[0]["backend"] == "gloo"
    assert (joined[0]["rank"], joined[0]["world_size"]) == (3, 4)
    assert joined[0]["timeout"].total_seconds() == 12.0


# ------------------------------------------------------------- helpers in a world of one


def test_helpers_of_a_world_of_one_touch_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a world of one must not call torch.distributed")

    for name in ("all_reduce", "broadcast_object_list", "barrier", "destroy_process_group"):
        monkeypatch.setattr(dist, name, refuse)
    info = DistInfo()
    assert all_reduce_min(7, info) == 7
    assert type(all_reduce_min(torch.tensor(5), info)) is int
    value = {"seed": 3}
    assert broadcast_object(value, info) is value
    barrier(info)
    cleanup(info)
    model = nn.Linear(2, 1)
    assert wrap_model(model, info) is model


def test_unwrap_returns_the_network_inside_a_wrapper() -> None:
    model = nn.Linear(2, 1)
    assert unwrap(model) is model
    wrapper = nn.Module()
    wrapper.module = model
    assert unwrap(wrapper) is model


# ------------------------------------------------------------------ two gloo CPU processes


def test_two_gloo_processes_share_weights_minimum_broadcast_and_episodes(tmp_path: Path) -> None:
    # Two fresh processes started by torchrun, as users start them. Forking this pytest process
    # instead hung CI: a fork after OpenMP and gloo threads exist can deadlock the child.
    worker = Path(__file__).with_name("_two_rank_worker.py")
    command = [*torchrun(), "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, result in enumerate(ranks):
        assert result["info"] == [rank, 2, rank, "cpu", "gloo"]
        assert result["is_main"] is (rank == 0)
        assert result["min"] == 7  # rank 1's value on both ranks
        assert result["broadcast"] == {"from": 0, "seed": 100}  # rank 0's object on both
        assert result["shares"] == [[0, 1, 2], [3, 4, 5]]  # the global batch, once
        assert result["wrapped"] == "DistributedDataParallel" and result["unwrapped_is_model"]
        assert result["grad"] == pytest.approx(2.0)  # mean of the per-rank gradients 1 and 3
        assert result["initialized_after_cleanup"] is False
    assert ranks[0]["weight"] == ranks[1]["weight"]  # rank 1's own seed was overwritten
