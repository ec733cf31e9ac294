"""Tests for medverse.inference.window: cropping at MONAI window coordinates and one call per class."""

from __future__ import annotations

import pytest
import torch

from medverse.errors import InputError
from medverse.inference.window import crop_windows, predict_window
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet, TargetState

WINDOW = 16
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _net(config: ModelConfig) -> MedverseNet:
    torch.manual_seed(0)
    return MedverseNet(config).eval()


def _inputs(
    num_windows: int = 2, num_contexts: int = 3, num_classes: int = 2
) -> tuple[torch.Tensor, ...]:
    shape = (WINDOW,) * 3
    target = torch.rand(num_windows, 1, *shape)
    context_in = torch.rand(num_windows, num_contexts, 1, *shape)
    context_out = (torch.rand(num_windows, num_contexts, num_classes, *shape) > 0.5).float()
    return target, context_in, context_out


# ----------------------------------------------------------------------------- crop_windows


def _slices(batch: int, start: tuple[int, int, int], size: int = 8) -> list[slice]:
    """One window as MONAI's ``unravel_slice`` gives it: ``[batch, channel, x, y, z]``."""
    return [slice(batch, batch + 1), slice(None), *(slice(s, s + size) for s in start)]


def test_crop_windows_crops_every_context_and_class_at_the_window() -> None:
    volume = torch.arange(2 * 3 * 2 * 16 * 12 * 10, dtype=torch.float32).reshape(
        2, 3, 2, 16, 12, 10
    )
    slices = [_slices(1, (0, 4, 2)), _slices(0, (8, 0, 1))]
    crops = crop_windows(volume, slices)
    assert crops.shape == (2, 3, 2, 8, 8, 8)
    assert torch.equal(crops[0], volume[1, :, :, 0:8, 4:12, 2:10])
    assert torch.equal(crops[1], volume[0, :, :, 8:16, 0:8, 1:9])


def test_crop_windows_of_one_window_is_that_crop() -> None:
    volume = torch.rand(1, 2, 1, 12, 12, 12)
    crops = crop_windows(volume, [_slices(0, (2, 3, 4))])
    assert crops.shape == (1, 2, 1, 8, 8, 8)
    assert torch.equal(crops, volume[0:1, :, :, 2:10, 3:11, 4:12])


def test_crop_windows_of_no_window_is_refused_clearly() -> None:
    """No window has no window size to give an empty batch: a clear error, not an IndexError."""
    with pytest.raises(InputError, match="at least one window"):
        crop_windows(torch.rand(1, 2, 1, 12, 12, 12), [])


# --------------------------------------------------------------------------- predict_window


@pytest.fixture
def net(tiny_config: ModelConfig) -> MedverseNet:
    assert tiny_config.window == WINDOW
    return _net(tiny_config)


@torch.no_grad()
def test_each_class_is_one_network_call_on_its_own_output_channel(net: MedverseNet) -> None:
    target, context_in, context_out = _inputs(num_classes=3)
    out = predict_window(net, target, context_in, context_out)
    assert out.shape == (2, 3, WINDOW, WINDOW, WINDOW)
    for k in range(3):
        expected = net(target, context_in, context_out[:, :, k : k + 1])
        torch.testing.assert_close(out[:, k : k + 1], expected, **TOL)
    assert (out[:, 0] - out[:, 1]).abs().max() > 1e-4  # the classes differ


@torch.no_grad()
def test_the_target_is_encoded_once_for_all_classes(
    net: MedverseNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    encode = net.encode_target

    def counting(target: torch.Tensor) -> TargetState:
        calls.append(target.shape)
        return encode(target)

    monkeypatch.setattr(net, "encode_target", counting)
    target, context_in, context_out = _inputs(num_classes=3)
    predict_window(net, target, context_in, context_out)
    # on the CPU the windows run one at a time: one encoding per window, shared by the classes
    assert calls == [(1, *target.shape[1:])] * target.shape[0]


@torch.no_grad()
def test_context_order_and_batch_do_not_change_the_output(net: MedverseNet) -> None:
    target, context_in, context_out = _inputs(num_contexts=3)
    out = predict_window(net, target, context_in, context_out)
    order = torch.tensor([2, 0, 1])
    permuted = predict_window(net, target, context_in[:, order], context_out[:, order])
    torch.testing.assert_close(permuted, out, **TOL)
    batched = predict_window(net, target, context_in, context_out, context_batch=1)
    torch.testing.assert_close(batched, out, **TOL)


@torch.no_grad()
def test_the_output_changes_with_the_context(net: MedverseNet) -> None:
    target, context_in, context_out = _inputs()
    out = predict_window(net, target, context_in, context_out)
    other = predict_window(net, target, context_in, 1.0 - context_out)
    assert (out - other).abs().max() > 1e-4


@torch.no_grad()
def test_autoregressive_pair_per_class(net: MedverseNet) -> None:
    target, context_in, context_out = _inputs(num_classes=2)
    ar_in = torch.rand(2, 1, 1, WINDOW, WINDOW, WINDOW)
    ar_out = torch.rand(2, 1, 2, WINDOW, WINDOW, WINDOW)
    out = predict_window(net, target, context_in, context_out, ar_in, ar_out)
    for k in range(2):
        expected = net(
            target, context_in, context_out[:, :, k : k + 1], ar_in, ar_out[:, :, k : k + 1]
        )
        torch.testing.assert_close(out[:, k : k + 1], expected, **TOL)
    without = predict_window(net, target, context_in, context_out)
    assert (out - without).abs().max() > 1e-4
    # half a pair is no pair
    torch.testing.assert_close(predict_window(net, target, context_in, context_out, ar_in), without)


@torch.no_grad()
def test_guided_call_starts_from_the_prior_with_a_prior_gate(tiny_config: ModelConfig) -> None:
    """The prior gate is zero-initialised: a guided call returns the prior of each class."""
    gated = _net(ModelConfig(channels=tiny_config.channels, window=WINDOW, prior_gate=True))
    target, context_in, context_out = _inputs(num_classes=2)
    ar_in = target[:, None]
    ar_out = torch.rand(2, 1, 2, WINDOW, WINDOW, WINDOW)
    out = predict_window(gated, target, context_in, context_out, ar_in, ar_out, guided=True)
    torch.testing.assert_close(out, ar_out[:, 0], rtol=0, atol=0)
    unguided = predict_window(gated, target, context_in, context_out, ar_in, ar_out)
    assert (unguided - ar_out[:, 0]).abs().max() > 1e-3


@torch.no_grad()
def test_guided_is_ignored_without_a_prior_gate(net: MedverseNet) -> None:
    target, context_in, context_out = _inputs(num_classes=2)
    ar_in, ar_out = target[:, None], torch.rand(2, 1, 2, WINDOW, WINDOW, WINDOW)
    guided = predict_window(net, target, context_in, context_out, ar_in, ar_out, guided=True)
    plain = predict_window(net, target, context_in, context_out, ar_in, ar_out)
    torch.testing.assert_close(guided, plain, rtol=0, atol=0)


def test_guided_call_without_the_prior_is_refused(net: MedverseNet) -> None:
    target, context_in, context_out = _inputs(num_classes=1)
    ar_in = target[:, None]
    with pytest.raises(ValueError, match="guided call needs the AR pair"):
        predict_window(net, target, context_in, context_out, ar_in, None, guided=True)
