"""``InferenceConfig.precision``: bf16 autocast of the network calls (issue 14, item 3).

On CPU ``auto`` is float32 (bit for bit ``fp32``); ``bf16`` runs the network under autocast on
any device, so its effect is checked here without a GPU. ``--precision`` through the installed
entry point in a subprocess.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from medverse.errors import InputError
from medverse.inference.driver import InferenceConfig, autocast_dtype, run_inference
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

SHAPE = (24, 20, 16)  # window 16: two levels


@pytest.fixture(scope="module")
def case() -> tuple[MedverseNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(4, 8), window=16, bam_patches=2, bam_width=12)).eval()
    generator = torch.Generator().manual_seed(1)
    target = torch.rand(1, 1, *SHAPE, generator=generator)
    context_in = torch.rand(1, 2, 1, *SHAPE, generator=generator)
    context_out = (torch.rand(1, 2, 1, *SHAPE, generator=generator) > 0.5).float()
    return net, target, context_in, context_out


def _run(case, precision: str) -> torch.Tensor:  # noqa: ANN001
    net, target, context_in, context_out = case
    config = InferenceConfig(precision=precision)
    return run_inference(net, target, context_in, context_out, config).output


def test_auto_is_float32_on_cpu(case) -> None:  # noqa: ANN001
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("auto", "cuda") is torch.bfloat16
    assert autocast_dtype("fp32", "cuda") is None
    assert torch.equal(_run(case, "auto"), _run(case, "fp32"))


def test_bf16_runs_the_network_in_bf16_and_returns_float32(case) -> None:  # noqa: ANN001
    fp32, bf16 = _run(case, "fp32"), _run(case, "bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    diff = float((bf16 - fp32).abs().max())
    # bf16 keeps 8 bits of mantissa: the outputs differ (autocast was on), but only a little
    assert 0 < diff < 0.05 * float(fp32.abs().max()) + 1e-3


def test_bad_precision_names_the_choices() -> None:
    with pytest.raises(InputError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\)"):
        InferenceConfig(precision="fp16")
    with pytest.raises(InputError, match="precision"):
        autocast_dtype("half", "cpu")


def test_cli_precision_option() -> None:
    if shutil.which("medverse") is None:
        pytest.fail("the medverse console script is not on PATH: pip install -e .")
    help_text = subprocess.run(
        ["medverse", "predict", "--help"], capture_output=True, text=True, timeout=120
    )
    assert help_text.returncode == 0 and "--precision" in help_text.stdout
    bad = subprocess.run(
        ["medverse", "predict", "-t", "t.nii.gz", "-o", "o.nii.gz", "--precision", "fp16"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "Invalid value for '--precision'" in bad.stderr and "Traceback" not in bad.stderr
