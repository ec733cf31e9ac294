"""``inference/allocator.py``: glibc keeps freed memory for reuse during CPU inference."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = """
import torch
import medverse.inference.allocator as allocator
from medverse.inference.driver import InferenceConfig, run_inference
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet
assert allocator._state == {}
net = MedverseNet(ModelConfig(channels=(2, 4), window=8)).eval()
x = torch.rand(1, 1, 8, 8, 8)
run_inference(net, x, x[:, None], x[:, None].round(), InferenceConfig())
print(allocator._state["active"], allocator.keep_freed_memory())
"""


def _run(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MEDVERSE_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["MEDVERSE_KEEP_FREED_MEMORY"] = env_value
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the setting exists only with glibc",
)
def test_the_first_cpu_inference_sets_it_once_and_the_variable_turns_it_off() -> None:
    assert _run(None) == ["True", "True"]
    assert _run("0") == ["False", "False"]
