"""Properties of MedverseNet that hold for any weights."""

from __future__ import annotations

import pytest
import torch

from medverse.errors import InputError
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet


def _inputs(window: int, num_contexts: int, batch: int = 1) -> tuple[torch.Tensor, ...]:
    shape = (window,) * 3
    target = torch.rand(batch, 1, *shape)
    context_in = torch.rand(batch, num_contexts, 1, *shape)
    context_out = (torch.rand(batch, num_contexts, 1, *shape) > 0.5).float()
    ar_in, ar_out = torch.rand(batch, 1, 1, *shape), torch.rand(batch, 1, 1, *shape)
    return target, context_in, context_out, ar_in, ar_out


def _scaled(net: MedverseNet, gain: float = 2.0) -> MedverseNet:
    """Default init gives an almost constant output; a gain makes every part show (as golden)."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".weight"):
                p.mul_(gain)
    return net.eval()


def test_output_shape_and_finite(tiny_config: ModelConfig) -> None:
    net = _scaled(MedverseNet(tiny_config))
    t, ci, co, ai, ao = _inputs(16, 3, batch=2)
    with torch.no_grad():
        y = net(t, ci, co, ai, ao)
    assert y.shape == (2, 1, 16, 16, 16)
    assert torch.isfinite(y).all()


def test_independent_of_context_order_and_batch(tiny_config: ModelConfig) -> None:
    net = _scaled(MedverseNet(tiny_config))
    t, ci, co, ai, ao = _inputs(16, 5)
    with torch.no_grad():
        ref = net(t, ci, co, ai, ao, context_batch=None)
        perm = torch.tensor([3, 0, 4, 1, 2])
        shuffled = net(t, ci[:, perm], co[:, perm], ai, ao, context_batch=2)
        one_by_one = net(t, ci, co, ai, ao, context_batch=1)
    assert (ref - shuffled).abs().max() <= 1e-5
    assert (ref - one_by_one).abs().max() <= 1e-5


def test_output_changes_with_context(tiny_config: ModelConfig) -> None:
    net = _scaled(MedverseNet(tiny_config))
    t, ci, co, ai, ao = _inputs(16, 2)
    with torch.no_grad():
        a = net(t, ci, co, ai, ao)
        b = net(t, ci, 1.0 - co, ai, ao)
        c = net(t, ci, co)  # without the autoregressive context
    assert (a - b).abs().max() > 1e-3
    assert (a - c).abs().max() > 1e-3


def test_gradients_reach_every_parameter(tiny_config: ModelConfig) -> None:
    net = MedverseNet(tiny_config).train()
    t, ci, co, ai, ao = _inputs(16, 3)
    net(t, ci, co, ai, ao, context_batch=2).square().mean().backward()
    missing = [
        n
        for n, p in net.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert missing == []
    assert not net.sincos_pos_embed.requires_grad


def test_minibatch_gradient_scaling_matches_full_batch_value(tiny_config: ModelConfig) -> None:
    """Training with mini-batches: value identical; the last chunk carries k x its gradient."""
    net = MedverseNet(tiny_config).train()
    t, ci, co, _, _ = _inputs(16, 4)
    full = net(t, ci, co, context_batch=None)
    chunked = net(t, ci, co, context_batch=2)
    assert (full - chunked).abs().max() <= 1e-5


@pytest.mark.parametrize("window", [64, 128])
def test_layouts_differ_and_run(window: int) -> None:
    outs = {}
    for layout in ("strided", "contiguous"):
        torch.manual_seed(0)
        cfg = ModelConfig(channels=(2, 4, 4, 4, 8), window=window, token_layout=layout)
        net = _scaled(MedverseNet(cfg))
        torch.manual_seed(1)
        t, ci, co, ai, ao = _inputs(window, 1)
        with torch.no_grad():
            outs[layout] = net(t, ci, co, ai, ao)
        assert outs[layout].shape == (1, 1, window, window, window)
    assert (outs["strided"] - outs["contiguous"]).abs().max() > 1e-3


def test_window_not_fixed_at_construction(tiny_config: ModelConfig) -> None:
    net = _scaled(MedverseNet(tiny_config))
    for window in (16, 32):
        t, ci, co, _, _ = _inputs(window, 1)
        with torch.no_grad():
            assert net(t, ci, co).shape[-1] == window


def test_input_skip_starts_as_the_same_function_and_then_copies(tiny_config: ModelConfig) -> None:
    plain = _scaled(MedverseNet(tiny_config))
    skip_config = ModelConfig(channels=tiny_config.channels, window=16, input_skip=True)
    skipped = MedverseNet(skip_config).eval()
    result = skipped.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == [
        "target_decoder.output_block.gate.bias",
        "target_decoder.output_block.gate.weight",
    ]
    t, ci, co, _, _ = _inputs(16, 2)
    with torch.no_grad():
        assert torch.equal(skipped(t, ci, co), plain(t, ci, co))  # zero gate: same function
        skipped.target_decoder.output_block.gate.bias.fill_(1.0)
        assert torch.allclose(skipped(t, ci, co), t, atol=1e-6)  # gate 1: the input itself
        skipped.target_decoder.output_block.gate.bias.fill_(0.25)
        expected = 0.75 * plain(t, ci, co) + 0.25 * t
        assert torch.allclose(skipped(t, ci, co), expected, atol=1e-6)


def test_released_architecture_has_no_input_skip() -> None:
    keys = MedverseNet(ModelConfig(channels=(4, 8, 16), window=16)).state_dict()
    assert not any(".gate." in k for k in keys)
    with pytest.raises(Exception, match="input_skip"):
        ModelConfig(channels=(4, 8, 16), window=16, input_skip="yes")  # type: ignore[arg-type]


def test_prior_gate_starts_at_the_prior_and_only_acts_in_guided_calls(
    tiny_config: ModelConfig,
) -> None:
    plain = _scaled(MedverseNet(tiny_config))
    gated = MedverseNet(ModelConfig(channels=tiny_config.channels, window=16, prior_gate=True))
    result = gated.eval().load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert sorted(result.missing_keys) == [
        "target_decoder.output_block.prior_gate.bias",
        "target_decoder.output_block.prior_gate.weight",
    ]
    t, ci, co, ar_in, _ = _inputs(16, 2)
    prior = torch.rand(1, 1, 1, 16, 16, 16)
    with torch.no_grad():
        # unguided calls are the plain network's, with or without an AR pair
        assert torch.equal(gated(t, ci, co), plain(t, ci, co))
        assert torch.equal(gated(t, ci, co, ar_in, prior), plain(t, ci, co, ar_in, prior))
        # guided, zero gate: exactly the prior
        assert torch.equal(gated(t, ci, co, t[:, None], prior, guided=True), prior[:, 0])
        head = plain(t, ci, co, t[:, None], prior)
        gated.target_decoder.output_block.prior_gate.bias.fill_(1.0)  # gate 1: the head
        assert torch.allclose(gated(t, ci, co, t[:, None], prior, guided=True), head, atol=1e-6)
        gated.target_decoder.output_block.prior_gate.bias.fill_(0.25)
        expected = 0.75 * prior[:, 0] + 0.25 * head
        assert torch.allclose(gated(t, ci, co, t[:, None], prior, guided=True), expected, atol=1e-6)
        # a network without the gate answers a guided call with its own head
        assert torch.equal(plain(t, ci, co, t[:, None], prior, guided=True), head)
    with pytest.raises(ValueError, match="prior"):
        gated(t, ci, co, guided=True)
    with pytest.raises(Exception, match="prior_gate"):
        ModelConfig(channels=(4, 8, 16), window=16, prior_gate=1)  # type: ignore[arg-type]


def test_guided_refiner_starts_at_zero_and_only_acts_in_guided_calls(
    tiny_config: ModelConfig,
) -> None:
    gated_config = ModelConfig(channels=tiny_config.channels, window=16, prior_gate=True)
    gated = _scaled(MedverseNet(gated_config)).eval()
    refined = MedverseNet(
        ModelConfig(channels=tiny_config.channels, window=16, prior_gate=True, guided_refiner=4)
    ).eval()
    result = refined.load_state_dict(gated.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(".refiner." in k for k in result.missing_keys)
    gated.target_decoder.output_block.prior_gate.bias.data.fill_(0.5)
    refined.target_decoder.output_block.prior_gate.bias.data.fill_(0.5)
    t, ci, co, ar_in, _ = _inputs(16, 2)
    prior = torch.rand(1, 1, 1, 16, 16, 16)
    with torch.no_grad():
        # zero-initialised: every call, guided or not, is the gated network's
        assert torch.equal(refined(t, ci, co), gated(t, ci, co))
        assert torch.equal(refined(t, ci, co, ar_in, prior), gated(t, ci, co, ar_in, prior))
        guided = gated(t, ci, co, t[:, None], prior, guided=True)
        assert torch.equal(refined(t, ci, co, t[:, None], prior, guided=True), guided)
        # trained: the correction moves guided calls only, and depends on the target image
        refined.target_decoder.output_block.refiner.out.bias.fill_(0.1)
        assert torch.equal(refined(t, ci, co, ar_in, prior), gated(t, ci, co, ar_in, prior))
        moved = refined(t, ci, co, t[:, None], prior, guided=True)
        assert torch.allclose(moved, guided + 0.1, atol=1e-6)
        # it reads the features, the prior and the target image
        refiner = refined.target_decoder.output_block.refiner
        torch.nn.init.normal_(refiner.out.weight, std=1.0)
        f = torch.rand(1, tiny_config.channels[0], 8, 8, 8)
        p, x = torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8)
        base = refiner(f, p, x)
        for changed in ((f + 1, p, x), (f, 1 - p, x), (f, p, 1 - x)):
            assert not torch.allclose(refiner(*changed), base)
    for bad in (-1, True, 2.5):
        with pytest.raises(InputError, match="guided_refiner"):
            ModelConfig(channels=(4, 8, 16), window=16, prior_gate=True, guided_refiner=bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="needs prior_gate"):
        ModelConfig(channels=(4, 8, 16), window=16, guided_refiner=4)


@pytest.mark.parametrize("autoregressive", [False, True])
def test_group_sums_run_large_stages_one_context_at_a_time(
    autoregressive: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ContextUNet.group_sums`` (CPU, no gradient) gives the batch's summed features while
    its large stages (every axis >= ITEMWISE_MIN_EDGE) see one context at a time, so their
    working memory does not grow with the mini-batch of contexts."""
    from medverse.model import network

    torch.manual_seed(0)
    net = _scaled(MedverseNet(ModelConfig(channels=(2, 4, 4, 4, 8), window=64)))
    unet, group = net.context_unet, 3
    target, context_in, context_out, *_ = _inputs(64, group)
    seen: list[tuple[int, int]] = []
    for block in unet.enc_blocks[:-1]:
        real = block.forward

        def spy(x, *args, _real=real, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            seen.append((x.shape[0], x.shape[-1]))
            return _real(x, *args, **kwargs)

        monkeypatch.setattr(block, "forward", spy)
    with torch.no_grad():
        state = net.encode_target(target)
        pairs = torch.cat([context_in, context_out], dim=2).flatten(0, 1)
        position = net._position("ar" if autoregressive else "semantic")
        embedding = net.image_context_embedding if autoregressive else None
        args = (pairs, state.key_values, position, group, embedding)
        expected = [network._sum_groups(f, group) for f in unet(*args)]
        seen.clear()
        got = unet.group_sums(*args)
    assert [tuple(g.shape) for g in got] == [tuple(e.shape) for e in expected]
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-6)
    large = [n for n, edge in seen if edge >= network.ITEMWISE_MIN_EDGE]
    assert large == [1] * (3 * group)  # stages at 64, 32, 16 voxels: one context each
    assert [n for n, edge in seen if edge < network.ITEMWISE_MIN_EDGE] == [group]
