"""Losses against values worked by hand (METHOD.md §4)."""

from __future__ import annotations

import pytest
import torch

from medverse.errors import InputError
from medverse.training.losses import (
    episode_loss,
    image_smooth_l1,
    mask_smooth_l1,
    soft_dice,
    spatial_differences,
)


def volume(values: list[float]) -> torch.Tensor:
    """Eight values -> a (1, 1, 2, 2, 2) tensor in C order (x slowest)."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 2, 2, 2)


def test_smooth_l1_regions() -> None:
    # beta 0.1: |d| = 0.05 is quadratic (0.5 * 0.05^2 / 0.1 = 0.0125), |d| = 0.5 linear (0.45)
    mask = volume([1, 0, 0, 0, 0, 0, 0, 0])
    pred = volume([0.95, 0.5, 0, 0, 0, 0, 0, 0])
    # voxel mean: (0.0125 + 0.45) / 8
    plain = mask_smooth_l1(pred, mask, beta=0.1, foreground_weight=None)
    assert plain.item() == pytest.approx(0.4625 / 8, rel=1e-6)
    # balanced (default): fg mean 0.0125; bg mean = 0.45 / 7
    expected = 0.5 * 0.0125 + 0.5 * 0.45 / 7
    assert mask_smooth_l1(pred, mask, beta=0.1).item() == pytest.approx(expected, rel=1e-6)


def test_mask_loss_balances_foreground_and_background() -> None:
    mask = volume([1, 1, 0, 0, 0, 0, 0, 0])
    pred = torch.zeros_like(mask)  # fg errors 1 -> SL1(beta=1) 0.5 each; bg errors 0
    plain = mask_smooth_l1(pred, mask, beta=1.0, foreground_weight=None)
    assert plain.item() == pytest.approx(1.0 / 8)  # voxel mean
    assert mask_smooth_l1(pred, mask, beta=1.0).item() == pytest.approx(0.25)
    assert mask_smooth_l1(pred, mask, beta=1.0, foreground_weight=1.0).item() == pytest.approx(0.5)
    assert mask_smooth_l1(pred, mask, beta=1.0, foreground_weight=0.0).item() == pytest.approx(0.0)


def test_mask_loss_soft_mask_weights() -> None:
    # soft voxel m = 0.5 counts half fg, half bg; prediction 0 everywhere, beta = 1
    mask = volume([1, 0.5, 0, 0, 0, 0, 0, 0])
    pred = torch.zeros_like(mask)
    # SL1 per voxel: 0.5 (err 1), 0.125 (err 0.5), 0 elsewhere
    fg = (1 * 0.5 + 0.5 * 0.125) / 1.5
    bg = (0.5 * 0.125) / 6.5
    balanced = mask_smooth_l1(pred, mask, beta=1.0, foreground_weight=0.5)
    assert balanced.item() == pytest.approx(0.5 * fg + 0.5 * bg)
    plain = mask_smooth_l1(pred, mask, beta=1.0, foreground_weight=None)
    assert plain.item() == pytest.approx((0.5 + 0.125) / 8)


def test_mask_loss_empty_and_full_masks() -> None:
    empty = torch.zeros(1, 1, 2, 2, 2)
    pred = torch.full_like(empty, 0.5)  # SL1(beta=1) of 0.5 = 0.125 everywhere
    for weight in (None, 0.5):  # balanced: an empty side gives all the weight to the other
        assert mask_smooth_l1(pred, empty, beta=1.0, foreground_weight=weight).item() == 0.125
        full = torch.ones_like(empty)
        assert mask_smooth_l1(pred, full, beta=1.0, foreground_weight=weight).item() == 0.125


def test_image_loss_hand_value() -> None:
    reference = torch.zeros(1, 1, 2, 2, 2)
    pred = volume([1, 0, 0, 0, 0, 0, 0, 0])
    # intensity: 0.5 / 8; differences: one of four entries is -1 on each axis -> 0.5 / 4 per axis
    assert image_smooth_l1(pred, reference, beta=1.0).item() == pytest.approx(0.0625 + 0.125)
    assert image_smooth_l1(pred, reference, beta=1.0, gradient_weight=0.0).item() == pytest.approx(
        0.0625
    )
    assert image_smooth_l1(pred, reference, beta=1.0, gradient_weight=2.0).item() == pytest.approx(
        0.0625 + 0.25
    )


def test_image_loss_ignores_constant_offset_in_difference_term() -> None:
    reference = torch.rand(1, 1, 4, 4, 4)
    shifted = reference + 0.05  # quadratic region of beta 0.1: 0.5 * 0.05^2 / 0.1
    loss = image_smooth_l1(shifted, reference, beta=0.1)
    assert loss.item() == pytest.approx(0.0125, rel=1e-4)


def test_spatial_differences_axes() -> None:
    x = torch.arange(24.0).reshape(1, 1, 2, 3, 4)
    dx, dy, dz = spatial_differences(x)
    assert dx.shape == (1, 1, 1, 3, 4) and torch.all(dx == 12)
    assert dy.shape == (1, 1, 2, 2, 4) and torch.all(dy == 4)
    assert dz.shape == (1, 1, 2, 3, 3) and torch.all(dz == 1)


def test_episode_loss_routes_by_family() -> None:
    mask = volume([1, 1, 0, 0, 0, 0, 0, 0])
    image = torch.zeros(1, 1, 2, 2, 2)
    pred = torch.cat([torch.zeros_like(mask), volume([1, 0, 0, 0, 0, 0, 0, 0])])
    reference = torch.cat([mask, image])
    losses = episode_loss(pred, reference, ["segmentation", "enhancement"], beta=1.0)
    assert losses.shape == (2,)
    assert losses[0].item() == pytest.approx(0.25)
    assert losses[1].item() == pytest.approx(0.1875)
    # order does not matter
    swapped = episode_loss(
        pred.flip(0), reference.flip(0), ["enhancement", "segmentation"], beta=1.0
    )
    assert torch.allclose(swapped, losses.flip(0))


def test_episode_loss_has_gradients() -> None:
    pred = torch.rand(3, 1, 4, 4, 4, requires_grad=True)
    reference = (torch.rand(3, 1, 4, 4, 4) > 0.5).float()
    episode_loss(
        pred, reference, ["segmentation", "transformation", "enhancement"]
    ).sum().backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert (pred.grad.abs().flatten(1).sum(1) > 0).all()


def test_soft_dice_hand_values() -> None:
    mask = volume([1, 1, 0, 0, 0, 0, 0, 0])
    assert soft_dice(mask.clone(), mask).item() == pytest.approx(0.0, abs=1e-6)
    # half the foreground found: Dice 2 * 1 / (1 + 2) = 2/3
    half = volume([1, 0, 0, 0, 0, 0, 0, 0])
    assert soft_dice(half, mask).item() == pytest.approx(1 / 3, abs=1e-5)
    # values outside [0, 1] count as their clamp: 2 -> 1, -1 -> 0
    assert soft_dice(mask * 3 - 1, mask).item() == pytest.approx(0.0, abs=1e-6)
    # an empty mask: an empty prediction is right, any foreground is wrong
    empty = torch.zeros(1, 1, 2, 2, 2)
    assert soft_dice(empty, empty).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice(half, empty).item() > 0.99


def test_episode_loss_adds_dice_to_segmentation_only() -> None:
    mask = volume([1, 1, 0, 0, 0, 0, 0, 0])
    pred = torch.cat([volume([1, 0, 0, 0, 0, 0, 0, 0])] * 2)
    reference = torch.cat([mask, mask])
    families = ["segmentation", "enhancement"]
    base = episode_loss(pred, reference, families, beta=1.0, foreground_weight=None)
    with_dice = episode_loss(
        pred, reference, families, beta=1.0, foreground_weight=None, dice_weight=2.0
    )
    assert base[0].item() == pytest.approx(0.5 / 8)  # plain mean: one voxel off by 1
    assert with_dice[0].item() == pytest.approx(0.5 / 8 + 2 / 3, abs=1e-5)
    assert with_dice[1].item() == pytest.approx(base[1].item())


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="same shape"):
        mask_smooth_l1(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 3))
    with pytest.raises(InputError, match="foreground_weight"):
        mask_smooth_l1(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2), foreground_weight=2)
    with pytest.raises(InputError, match="families"):
        episode_loss(torch.zeros(2, 1, 2, 2, 2), torch.zeros(2, 1, 2, 2, 2), ["segmentation"])
