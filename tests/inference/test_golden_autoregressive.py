"""autoregressive_200 golden case: the full released pipeline (2 levels, squash at level 1).

Tolerance 1e-4 max |diff| (reference noise floor ~1e-6; smallest listed mistake 1e-3).
Also run through the CLI (`medverse predict --raw --compat released`) from NIfTI files.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medverse.checkpoint.io import load_network, read_weights
from medverse.inference.driver import InferenceConfig, run_inference
from tests.conftest import GOLDEN, GOLDEN_WEIGHTS, needs_reference

pytestmark = [pytest.mark.golden, pytest.mark.slow, needs_reference()]
TOL = 1e-4


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    raw = np.load(GOLDEN / "autoregressive_200_inputs.npz")
    target = torch.from_numpy(raw["target_in"].astype(np.float32) / 255.0)
    context_in = torch.from_numpy(raw["context_in"].astype(np.float32) / 255.0)
    context_out = torch.from_numpy(raw["context_out"].astype(np.float32))
    return target, context_in, context_out


def check_against_expected(y: np.ndarray) -> None:
    """``y`` is the full-resolution output ``(X, Y, Z)``."""
    exp = np.load(GOLDEN / "autoregressive_200_expected.npz")
    assert y.shape == (200, 180, 160)
    assert np.abs(y[::2, ::2, ::2] - exp["y_s2"][0, 0]).max() <= TOL
    assert np.abs(y[100] - exp["y_slice_d_center"]).max() <= TOL
    assert np.abs(y[:, 90] - exp["y_slice_h_center"]).max() <= TOL
    assert np.abs(y[:, :, 80] - exp["y_slice_w_center"]).max() <= TOL
    assert abs(float(y.mean()) - 0.29583818663732553) <= 1e-5
    assert abs(float(y.std()) - 0.09170355373751625) <= 1e-5


def test_driver_reproduces_released_pipeline() -> None:
    net = load_network(read_weights(GOLDEN_WEIGHTS))
    target, context_in, context_out = _inputs()
    cfg = InferenceConfig(compat="released", context_batch=2)
    result = run_inference(net, target, context_in, context_out, cfg, return_levels=True)
    assert result.num_windows == [1, 8]
    assert [lv.squashed for lv in result.plan.levels] == [True, False]
    level1 = result.level_outputs[0][..., ::4, ::4, ::4].numpy()
    exp = np.load(GOLDEN / "autoregressive_200_expected.npz")
    assert np.abs(level1 - exp["level1_out_s4"]).max() <= TOL
    check_against_expected(result.output[0, 0].numpy())
