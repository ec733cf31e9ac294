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


def test_uint8_masks_give_the_float32_output_and_are_cropped_as_views(monkeypatch) -> None:  # noqa: ANN001
    """Masks kept as uint8 (as ``ModelInputs.from_arrays`` passes them) give the float32 masks'
    output, and every window's context crops are views of the caller's volumes (no float32
    copy of the masks, no copy of several windows' contexts at once)."""
    import medverse.inference.driver as driver

    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 4), window=16)).eval()
    target = torch.rand(1, 1, 30, 20, 18)
    ctx_in = torch.rand(1, 3, 1, 30, 20, 18)
    masks = torch.rand(1, 3, 2, 30, 20, 18) > 0.5
    cfg = InferenceConfig(sw_batch_size=2)
    expected = run_inference(net, target, ctx_in, masks.float(), cfg).output
    crops = []
    real = driver.predict_window

    def spy(net, target, context_in, context_out, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        crops.append((context_in, context_out))
        return real(net, target, context_in, context_out, *args, **kwargs)

    monkeypatch.setattr(driver, "predict_window", spy)
    compact = masks.to(torch.uint8)
    got = run_inference(net, target, ctx_in, compact, cfg).output
    assert torch.equal(got, expected)
    full = [(i, o) for i, o in crops if o.shape[-3:] == (16, 16, 16) and o.dtype == torch.uint8]
    assert full, "the full-resolution level must see the uint8 masks"
    for image, mask in full:
        assert image.shape[0] == mask.shape[0] == 1  # one window at a time on the CPU
        assert image.untyped_storage().data_ptr() == ctx_in.untyped_storage().data_ptr()
        assert mask.untyped_storage().data_ptr() == compact.untyped_storage().data_ptr()
