"""Kill and resume: a run stopped after step k and resumed to n ends bit-equal to an n-step run.

Every episode, crop and level choice is a function of (seed, step, episode number), and the
checkpoint holds the model, AdamW moments, the LR schedule position and the RNG states, so the
resumed run repeats the uninterrupted run's arithmetic exactly on the same machine.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medverse.training.checkpoints import latest_checkpoint
from medverse.training.loop import run

# Same machine, same thread count, same operations: equality is expected to the bit; 1e-6 is
# the brief's tolerance and what we assert.
ATOL = 1e-6


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = latest_checkpoint(out_dir)
    assert checkpoint is not None
    return torch.load(checkpoint, weights_only=True)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= ATOL, f"weights differ by {worst}"
    return worst


def test_stop_and_resume_in_process(make_config) -> None:
    # "mixed" AR exercises the model's own coarse predictions, which depend on the weights
    changes = dict(steps=6, checkpoint_every=2, ar_source="mixed", level1_prob=0.3)
    full = run(make_config("full", **changes))
    first = run(make_config("split", **changes), stop_at=3)
    assert first.step == 3 and first.weights is None
    assert first.checkpoint is not None and first.checkpoint.name == "step_0000003.pt"
    second = run(make_config("split", **changes), resume=True)
    assert second.step == 6 and second.weights is not None
    assert assert_same_weights(final_weights(full.out_dir), final_weights(second.out_dir)) == 0.0
    with open(second.out_dir / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # the log shows where the run was resumed, and only there
    assert [r["resumed_from"] for r in rows] == ["", "", "", "3", "", ""]
    assert all(r["time"].endswith("Z") for r in rows)
    with open(full.out_dir / "log.csv", newline="") as fh:
        losses_full = [r["loss"] for r in csv.DictReader(fh)]
    with open(second.out_dir / "log.csv", newline="") as fh:
        losses_split = [r["loss"] for r in csv.DictReader(fh)]
    assert losses_full == losses_split


def test_time_boxed_run_checkpoints_stops_and_resumes_bit_equal(make_config) -> None:
    changes = dict(steps=5, checkpoint_every=100, ar_source="mixed", level1_prob=0.3)
    full = run(make_config("full", **changes))
    # a limit already spent when the first step ends: stop after step 1, with a checkpoint
    boxed = run(make_config("boxed", **changes), time_limit=1e-9)
    assert boxed.step == 1 and boxed.weights is None
    assert boxed.checkpoint is not None and boxed.checkpoint.name == "step_0000001.pt"
    rest = run(make_config("boxed", **changes), resume=True, time_limit=3600.0)
    assert rest.step == 5 and rest.weights is not None
    assert assert_same_weights(final_weights(full.out_dir), final_weights(rest.out_dir)) == 0.0


@pytest.mark.slow
def test_sigkill_then_resume_in_a_new_process(make_config, tmp_path: Path) -> None:
    config = make_config("killed", steps=8, checkpoint_every=1, num_contexts=[1, 2])
    path = config.save(tmp_path / "killed.yaml")
    command = [sys.executable, "-m", "medverse.training", "--config", str(path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    out_dir = Path(config.out_dir)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            checkpoint = latest_checkpoint(out_dir)
            if checkpoint is not None and int(checkpoint.stem.split("_")[1]) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, (
            f"finished before it could be killed: {process.stderr.read()}"
        )
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    killed_at = int(latest_checkpoint(out_dir).stem.split("_")[1])
    assert 2 <= killed_at < 8
    resumed = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "trained 8 steps in" in resumed.stdout
    reference = run(make_config("uninterrupted", steps=8, checkpoint_every=8, num_contexts=[1, 2]))
    assert_same_weights(final_weights(out_dir), final_weights(reference.out_dir))
