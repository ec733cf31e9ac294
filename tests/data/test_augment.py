"""Shared spatial augmentation, per-volume intensity augmentation and the window helper."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medverse.data.augment import (
    IntensityAugmentation,
    RandomIntensityAugmentation,
    RandomSpatialAugmentation,
    SpatialAugmentation,
    crop_or_resize_to_window,
    window_start,
)
from medverse.data.phantoms import make_subject
from medverse.errors import InputError

SHAPE = (24, 24, 24)


@pytest.fixture(scope="module")
def subject():
    return make_subject(SHAPE, num_classes=4, num_modalities=1, seed=0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_flip_and_rot90_match_numpy(subject) -> None:
    image = subject.images[0]
    augmentation = SpatialAugmentation(flip_axes=(0, 2), rot90_k=1, rot90_axes=(1, 2))
    (out,) = augmentation([image])
    expected = np.rot90(np.flip(image, axis=(0, 2)), k=1, axes=(1, 2))
    np.testing.assert_array_equal(out, expected)


def test_identity_when_nothing_drawn(subject) -> None:
    image, labels = subject.images[0], subject.labels
    out_image, out_labels = SpatialAugmentation()([image, labels], is_mask=[False, True])
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_labels, labels)
    assert out_labels.dtype == labels.dtype


def test_draw_is_seedable_and_replayable(subject) -> None:
    draw = RandomSpatialAugmentation(elastic_prob=1.0, anisotropy_prob=1.0)
    a = draw.draw(SHAPE, np.random.default_rng(5))
    assert a == draw.draw(SHAPE, np.random.default_rng(5))
    replay = SpatialAugmentation(**dataclasses.asdict(a))
    first = a([subject.images[0]])[0]
    np.testing.assert_array_equal(first, replay([subject.images[0]])[0])
    assert not np.allclose(first, subject.images[0])


@pytest.mark.parametrize("seed", range(4))
def test_shared_augmentation_keeps_masks_aligned_with_images(subject, seed: int) -> None:
    """An image that *is* its mask (scaled) must still match the mask after augmentation."""
    mask = subject.labels >= 2
    image = np.where(mask, 0.9, 0.1).astype(np.float32)
    draw = RandomSpatialAugmentation(
        flip_prob=0.5, rot90_prob=1.0, elastic_prob=1.0, anisotropy_prob=0.0
    )
    augmentation = draw.draw(SHAPE, np.random.default_rng(seed))
    out_image, out_mask, out_labels = augmentation(
        [image, mask, subject.labels], is_mask=[False, True, True]
    )
    assert out_mask.dtype == bool
    assert set(np.unique(out_labels).tolist()) <= set(np.unique(subject.labels).tolist())
    assert not np.array_equal(out_mask, mask)  # it did move
    assert dice(out_image > 0.5, out_mask) > 0.9
    np.testing.assert_array_equal(out_labels >= 2, out_mask)  # two masks move identically


def test_anisotropy_smooths_images_and_leaves_masks(subject) -> None:
    augmentation = SpatialAugmentation(anisotropy_axis=2, anisotropy_factor=3.0)
    noise = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    out_noise, out_mask = augmentation([noise, subject.labels > 1], is_mask=[False, True])
    assert out_mask.dtype == bool
    assert np.abs(np.diff(out_noise, axis=2)).mean() < 0.5 * np.abs(np.diff(noise, axis=2)).mean()
    np.testing.assert_array_equal(out_mask, subject.labels > 1)


def test_elastic_displacement_bounded_and_borders_locked() -> None:
    augmentation = SpatialAugmentation(elastic_seed=3, elastic_max_displacement=2.0)
    field = augmentation.displacement(SHAPE)
    assert field.shape == (3, *SHAPE)
    assert 0 < field.abs().max() <= 2.0
    assert field[:, 0].abs().max() == 0 and field[:, :, :, -1].abs().max() == 0


def test_rot90_only_in_square_planes() -> None:
    draw = RandomSpatialAugmentation(rot90_prob=1.0)
    for seed in range(10):
        augmentation = draw.draw((8, 8, 12), np.random.default_rng(seed))
        assert augmentation.rot90_axes == (0, 1)
    with pytest.raises(InputError, match="equal sizes"):
        SpatialAugmentation(rot90_k=1, rot90_axes=(0, 2))([np.zeros((8, 8, 12))])


def test_spatial_rejects_mixed_shapes() -> None:
    with pytest.raises(InputError, match="one shape"):
        SpatialAugmentation()([np.zeros((4, 4, 4)), np.zeros((4, 4, 5))])
    with pytest.raises(InputError, match="is_mask"):
        SpatialAugmentation()([np.zeros((4, 4, 4))], is_mask=[True, False])
    with pytest.raises(InputError, match="elastic_prob"):
        RandomSpatialAugmentation(elastic_prob=2.0)


def test_intensity_augmentation(subject) -> None:
    image = subject.images[0]
    np.testing.assert_allclose(IntensityAugmentation(gamma=2.0)(image), image**2, rtol=1e-5)
    contrasted = IntensityAugmentation(contrast=0.5)(image)
    assert contrasted.std() == pytest.approx(0.5 * image.std(), rel=0.02)
    assert IntensityAugmentation()(image) == pytest.approx(image)
    draw = RandomIntensityAugmentation(gamma_prob=1.0, contrast_prob=1.0)
    a, b = draw.draw(np.random.default_rng(0)), draw.draw(np.random.default_rng(0))
    assert a == b and a.gamma != 1.0 and a.contrast != 1.0
    out = a(image)
    assert out.min() >= 0 and out.max() <= 1


# ---------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------


def test_resize_to_window_shapes_types_and_masks() -> None:
    image = np.random.default_rng(0).random((40, 30, 20)).astype(np.float32)
    mask = image > 0.5
    batch = torch.rand(2, 3, 1, 40, 30, 20)
    out_image, out_mask, out_batch = crop_or_resize_to_window(
        [image, mask, batch], 16, mode="resize", is_mask=[False, True, False]
    )
    assert out_image.shape == (16, 16, 16) and out_image.dtype == np.float32
    assert out_mask.dtype == bool
    assert isinstance(out_batch, torch.Tensor) and out_batch.shape == (2, 3, 1, 16, 16, 16)
    assert abs(float(out_image.mean()) - float(image.mean())) < 0.02


def test_crop_is_shared_and_pads_small_axes() -> None:
    coords = np.indices((20, 12, 30)).astype(np.float32)
    volumes = [coords[0], coords[1], torch.from_numpy(coords[2])[None]]
    rng = np.random.default_rng(3)
    x, y, z = crop_or_resize_to_window(volumes, (8, 16, 8), mode="crop", rng=rng)
    start = (int(x[0, 0, 0]), int(y[0, 0, 0]), int(z[0, 0, 0, 0]))
    expected = coords[0][start[0] : start[0] + 8, :, start[2] : start[2] + 8]
    np.testing.assert_array_equal(x[:, :12], expected)
    assert y.shape == (8, 16, 8) and z.shape == (1, 8, 16, 8)
    assert start[1] == 0 and np.all(y[:, 12:] == 0)  # axis of 12 < 16 padded with zeros at the end
    again = crop_or_resize_to_window(volumes, (8, 16, 8), mode="crop", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(again[0], x)


def test_window_start_centres_on_request() -> None:
    assert window_start((64, 64, 64), 16, np.random.default_rng(0), center=(32, 5, 60)) == (
        24,
        0,
        48,
    )
    for seed in range(5):
        start = window_start((20, 10, 40), 16, np.random.default_rng(seed))
        assert 0 <= start[0] <= 4 and start[1] == 0 and 0 <= start[2] <= 24


def test_window_errors() -> None:
    with pytest.raises(InputError, match="mode"):
        crop_or_resize_to_window([np.zeros((4, 4, 4))], 2, mode="zoom")
    with pytest.raises(InputError, match="spatial shape"):
        crop_or_resize_to_window([np.zeros((4, 4, 4)), np.zeros((4, 4, 5))], 2)
    with pytest.raises(InputError, match="rng or start"):
        crop_or_resize_to_window([np.zeros((4, 4, 4))], 2, mode="crop")


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 20)] * 3),
    window=st.tuples(*[st.integers(1, 12)] * 3),
    seed=st.integers(0, 2**16),
)
def test_window_property_any_shape(shape, window, seed) -> None:
    """Any shape, any window: both modes return the window; a crop is a padded slice."""
    volume = np.random.default_rng(seed).random(shape).astype(np.float32) + 1
    (resized,) = crop_or_resize_to_window([volume], window, mode="resize")
    assert resized.shape == window
    start = window_start(shape, window, np.random.default_rng(seed))
    (crop,) = crop_or_resize_to_window([volume], window, mode="crop", start=start)
    assert crop.shape == window
    inside = tuple(slice(0, min(w, n - s)) for w, n, s in zip(window, shape, start))
    source = tuple(slice(s, s + w) for s, w in zip(start, window))
    np.testing.assert_array_equal(crop[inside], volume[source])
    assert crop.min() >= volume.min()  # padding uses the minimum, never zero for this volume
