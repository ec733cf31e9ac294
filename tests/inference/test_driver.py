"""The coarse-to-fine driver with a known-answer network and real shapes."""

from __future__ import annotations

import torch

from medverse.inference.driver import InferenceConfig, run_inference
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet


class _Identity(MedverseNet):
    """Returns the target window: the stitched output must equal the input."""

    def encode_contexts(self, state, *args, **kwargs):  # noqa: ANN001, ANN201
        return []

    def encode_target(self, target):  # noqa: ANN001, ANN201
        return target

    def decode(self, state, semantic, autoregressive=None, prior=None):  # noqa: ANN001, ANN201
        return state


def test_identity_network_returns_its_input() -> None:
    net = _Identity(ModelConfig(channels=(2, 2), window=16))
    target = torch.rand(1, 1, 37, 20, 9)
    ctx = torch.rand(1, 2, 1, 37, 20, 9)
    res = run_inference(net, target, ctx, ctx, InferenceConfig())
    assert res.output.shape == target.shape
    assert torch.allclose(res.output, target, atol=1e-5)
    assert res.plan.num_levels == 3  # 37 -> 10, 19, 37


def test_thin_anisotropic_volume_keeps_full_resolution() -> None:
    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 4, 4), window=16)).eval()
    target = torch.rand(1, 1, 40, 30, 7)
    ctx_in, ctx_out = torch.rand(1, 2, 1, 40, 30, 7), (torch.rand(1, 2, 2, 40, 30, 7) > 0.5).float()
    res = run_inference(net, target, ctx_in, ctx_out, InferenceConfig(sw_batch_size=2))
    assert res.output.shape == (1, 2, 40, 30, 7)
    assert [lv.shape for lv in res.plan.levels][-1] == (40, 30, 7)
    assert torch.isfinite(res.output).all()
