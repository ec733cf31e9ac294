"""Registration-guided segmentation: the prior pass, fusion and the leave-one-out stacking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medverse.errors import InputError
from medverse.inference.driver import InferenceConfig, run_inference
from medverse.inference.guided import (
    STACK_WEIGHTS,
    HeldOut,
    LocalStacking,
    Stacking,
    fit_local_stacking,
    fit_stacking,
    fuse,
    guided_network,
    labels_from_raw,
    leave_one_out,
)
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet


def _gated_net(seed: int = 0) -> MedverseNet:
    torch.manual_seed(seed)
    return MedverseNet(ModelConfig(channels=(4, 8, 16), window=16, prior_gate=True)).eval()


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape).astype(np.float32)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    return (distance <= radius).astype(np.float32)


def test_guided_pass_of_a_zero_gate_network_returns_the_prior_on_any_shape() -> None:
    net = _gated_net()
    rng = np.random.default_rng(0)
    shape = (20, 13, 27)  # one axis below the window, two above: padding and several windows
    target = rng.random(shape).astype(np.float32)
    images = rng.random((3, 1, *shape)).astype(np.float32)
    soft = rng.random((3, 2, *shape)).astype(np.float32)
    out = guided_network(net, target, images, soft, InferenceConfig(sw_batch_size=2))
    assert out.shape == (2, *shape)
    np.testing.assert_allclose(out, fuse(soft), atol=1e-6)
    # the gate moves the output away from the prior, and only in guided calls
    with torch.no_grad():
        net.target_decoder.output_block.prior_gate.bias.fill_(1.0)
    moved = guided_network(net, target, images, soft)
    assert np.abs(moved - fuse(soft)).max() > 1e-3
    result = run_inference(
        net,
        torch.from_numpy(target)[None, None],
        torch.from_numpy(images)[None],
        torch.from_numpy(soft)[None],
        InferenceConfig(),
    )
    assert result.plan.num_levels == 2 and len(result.num_windows) == 2  # unguided: all levels
    with pytest.raises(InputError, match="prior shape"):
        run_inference(
            net,
            torch.from_numpy(target)[None, None],
            torch.from_numpy(images)[None],
            torch.from_numpy(soft)[None],
            prior=torch.zeros(1, 1, *shape),
        )


def test_stacking_picks_fusion_when_fusion_is_right_and_the_network_when_it_is() -> None:
    shape = (16, 16, 16)
    truth = [_ball(shape, (8, 8, 8), r)[None] for r in (4, 5, 6)]
    wrong = [_ball(shape, (3, 3, 3), 3)[None] for _ in truth]
    fusion_right = fit_stacking([(w, t, t) for w, t in zip(wrong, truth)])
    assert fusion_right.weight == 0.0 and fusion_right.scores[0.0] == pytest.approx(1.0)
    network_right = fit_stacking([(t, w, t) for w, t in zip(wrong, truth)])
    # binary parts: every weight > 0.5 thresholds to the network's mask
    assert network_right.weight == 0.75 and network_right.scores[1.0] == pytest.approx(1.0)
    assert set(network_right.scores) == set(STACK_WEIGHTS)
    blend = network_right
    applied = blend.apply(truth[0], 0.9 * wrong[0])
    np.testing.assert_allclose(applied, 0.75 * truth[0] + 0.25 * 0.9 * wrong[0], atol=1e-6)
    assert "leave-one-out Dice" in blend.describe() and blend.to_dict()["contexts"] == 3


def test_leave_one_out_holds_out_at_most_four_contexts_and_needs_two() -> None:
    seen = []
    ball = _ball((8, 8, 8), (4, 4, 4), 2)[None]

    def predict(j: int):
        seen.append(j)
        return ball, ball, ball

    assert leave_one_out(6, predict).contexts == 4 and seen == [0, 1, 2, 3]
    with pytest.raises(InputError, match="2 or more"):
        leave_one_out(1, predict)
    with pytest.raises(InputError, match="held-out"):
        fit_stacking([])


def test_labels_from_raw_argmax_above_threshold() -> None:
    raw = np.zeros((2, 2, 1, 1), np.float32)
    raw[0, 0] = 0.7
    raw[1, 0] = 0.9
    raw[0, 1] = 0.4
    assert labels_from_raw(raw, (3, 7)).ravel().tolist() == [7, 0]


def test_uncertain_box_covers_disagreement_grown_to_a_window() -> None:
    from medverse.inference.guided import uncertain_box

    prior = np.zeros((2, 40, 30, 50), np.float32)
    assert uncertain_box(prior, 16) is None
    prior[1, 20:23, 10:12, 44:48] = 0.5  # contexts disagree here only
    box = uncertain_box(prior, 16, margin=2)
    assert box == (slice(14, 30), slice(3, 19), slice(34, 50))  # >= 16 wide, inside the volume
    # the guided pass of a zero-gate network is the prior inside and outside the box
    net = _gated_net()
    rng = np.random.default_rng(1)
    target = rng.random(prior.shape[1:]).astype(np.float32)
    images = rng.random((2, 1, *prior.shape[1:])).astype(np.float32)
    soft = np.stack([prior, prior])
    np.testing.assert_allclose(guided_network(net, target, images, soft), prior, atol=1e-6)


def _tissue_case(rng: np.random.Generator, radius: float, shape=(28, 28, 28), shift=2.0):
    """A bright ball whose label is 'intensity above half' (a partial-volume convention) and a
    fusion that misses it by ``shift`` voxels (warped masks of other balls, blurred)."""
    from scipy import ndimage

    grid = np.indices(shape).astype(np.float32)
    centre = np.asarray(shape, np.float32) / 2 + rng.uniform(-1, 1, 3)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    image = 1.0 / (1.0 + np.exp((distance - radius) / 1.5))  # soft edge, 0.5 at the radius
    image = (image + rng.normal(0, 0.02, shape)).astype(np.float32)
    truth = (distance <= radius).astype(np.float32)[None]
    fusion = ndimage.gaussian_filter((distance <= radius + shift).astype(np.float32), 1.0)[None]
    network = np.clip(fusion + rng.normal(0, 0.05, fusion.shape), 0, 1).astype(np.float32)
    return image, fusion.astype(np.float32), network, truth


def _dice(a, b) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_local_stacking_learns_the_contexts_boundary_convention_from_the_image() -> None:
    rng = np.random.default_rng(0)
    # the registration error differs between calls: only the image says where the boundary is
    held = [HeldOut(net, fus, truth, img) for img, fus, net, truth in
            (_tissue_case(rng, r, shift=s) for r, s in ((6.0, 3.0), (7.5, -1.5), (9.0, 1.0)))]  # fmt: skip
    image, fusion, network, truth = _tissue_case(rng, 8.0, shift=2.5)  # a new target
    for use_network in (True, False):
        stacking = fit_local_stacking(held, use_network=use_network)
        assert isinstance(stacking, LocalStacking)
        assert stacking.name == ("local" if use_network else "local_fusion")
        out = stacking.apply(network, fusion, image)
        assert out.shape == fusion.shape and out.dtype == np.float32
        fusion_dice = _dice(fusion[0] > 0.5, truth[0] > 0.5)
        local_dice = _dice(out[0] > 0.5, truth[0] > 0.5)
        assert fusion_dice < 0.8 and local_dice > 0.95  # the boundary is read from the image
        assert stacking.scores["local"] > stacking.scores["fusion"]
    record = stacking.to_dict()
    assert record["kind"] == "local_fusion" and record["contexts"] == 3
    assert "fusion and image" in stacking.describe()
    # far from any disagreement the output is the fusion itself
    far = fusion[0] <= 0.0
    np.testing.assert_array_equal(out[0][far], fusion[0][far])


def test_local_stacking_keeps_the_fusion_where_there_is_nothing_to_fit() -> None:
    shape = (12, 12, 12)
    empty = np.zeros((2, *shape), np.float32)
    certain = empty.copy()
    certain[0, 3:9, 3:9, 3:9] = 1.0  # label 0: contexts agree everywhere; label 1: absent
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    held = [HeldOut(certain, certain, certain, image) for _ in range(2)]
    stacking = fit_local_stacking(held)
    assert stacking.models == [None, None] and stacking.samples == [0, 0]
    np.testing.assert_array_equal(stacking.apply(certain, certain, image), certain)
    with pytest.raises(InputError, match="target image"):
        stacking.apply(certain, certain)
    with pytest.raises(InputError, match="image"):
        fit_local_stacking([HeldOut(certain, certain, certain)])
    with pytest.raises(InputError, match="held-out"):
        fit_local_stacking([])


def test_leave_one_out_fits_the_stacking_asked_for() -> None:
    rng = np.random.default_rng(2)
    cases = [_tissue_case(rng, r, shape=(20, 20, 20)) for r in (5.0, 6.0, 7.0)]

    def predict(j: int) -> HeldOut:
        image, fusion, network, truth = cases[j]
        return HeldOut(network, fusion, truth, image)

    assert isinstance(leave_one_out(3, predict), Stacking)  # the old default of this function
    assert leave_one_out(3, predict, stacking="local").use_network
    assert not leave_one_out(3, predict, stacking="local_fusion").use_network
    with pytest.raises(InputError, match="stacking"):
        leave_one_out(3, predict, stacking="mean")
