"""Baselines on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medverse.errors import InputError
from medverse.evaluation.baselines import (
    clear_registration_cache,
    context_mean,
    identity,
    multi_atlas,
)
from medverse.evaluation.metrics import dice

SPACING = (1.5, 1.0, 2.0)


@pytest.fixture
def subject(ball_32) -> tuple[np.ndarray, np.ndarray]:
    return ball_32


def test_identical_context_gives_the_reference(subject):
    image, mask = subject
    mean = context_mean(image, [image], [mask], spacing=SPACING, task_family="segmentation")
    assert dice(mean, mask) == 1.0
    fused = multi_atlas(image, [image], [mask], spacing=SPACING, task_family="segmentation")
    assert dice(fused, mask) > 0.98


def test_multi_atlas_undoes_a_shift_that_context_mean_cannot(subject):
    image, mask = subject
    shift = (3, -2, 0)
    moved_image = ndimage.shift(image, shift, order=1)
    moved_mask = ndimage.shift(mask, shift, order=0)
    kwargs = {"spacing": (1.0, 1.0, 1.0), "task_family": "segmentation"}
    naive = dice(context_mean(image, [moved_image], [moved_mask], **kwargs), mask)
    registered = dice(multi_atlas(image, [moved_image], [moved_mask], **kwargs), mask)
    assert registered > 0.95 > naive


def test_majority_vote_and_mean_semantics(subject):
    image, mask = subject
    empty = np.zeros_like(mask)
    # Two of three contexts say foreground -> foreground; one of three -> background.
    two_of_three = context_mean(
        image, [image] * 3, [mask, mask, empty], spacing=SPACING, task_family="segmentation"
    )
    one_of_three = context_mean(
        image, [image] * 3, [mask, empty, empty], spacing=SPACING, task_family="segmentation"
    )
    assert dice(two_of_three, mask) == 1.0 and not one_of_three.any()
    # Image tasks average without thresholding.
    averaged = context_mean(
        image,
        [image] * 2,
        [np.zeros_like(image), np.ones_like(image)],
        spacing=SPACING,
        task_family="enhancement",
    )
    np.testing.assert_allclose(averaged, 0.5)


def test_multi_atlas_on_image_task_averages_warped_outputs(subject):
    image, _ = subject
    out = multi_atlas(
        image, [image, image], [image, image], spacing=SPACING, task_family="enhancement"
    )
    assert out.shape == image.shape
    assert np.abs(out - image).mean() < 0.01


def test_multi_atlas_is_deterministic(subject):
    image, mask = subject
    shifted_image = ndimage.shift(image, (1.5, 0, -1), order=1)
    shifted_mask = ndimage.shift(mask, (1.5, 0, -1), order=0)
    args = (image, [shifted_image, image], [shifted_mask, mask])
    clear_registration_cache()
    first = multi_atlas(*args, spacing=SPACING, task_family="segmentation")
    clear_registration_cache()  # registered afresh, not read from the cache
    second = multi_atlas(*args, spacing=SPACING, task_family="segmentation")
    third = multi_atlas(*args, spacing=SPACING, task_family="segmentation")  # from the cache
    np.testing.assert_array_equal(first, third)
    np.testing.assert_array_equal(first, second)


def test_identity_returns_the_input_and_refuses_segmentation(subject):
    image, mask = subject
    np.testing.assert_array_equal(
        identity(image, [image], [image], spacing=SPACING, task_family="enhancement"), image
    )
    assert "segmentation" not in identity.task_families
    with pytest.raises(InputError, match="image tasks"):
        identity(image, [image], [mask], spacing=SPACING, task_family="segmentation")


def test_bad_inputs_name_the_problem(subject):
    image, mask = subject
    with pytest.raises(InputError, match="context output 0: shape"):
        context_mean(image, [image], [np.pad(mask, 1)], spacing=SPACING, task_family="segmentation")
    with pytest.raises(InputError, match="no context pairs"):
        multi_atlas(image, [], [], spacing=SPACING, task_family="segmentation")
    with pytest.raises(InputError, match="task_family must be one of"):
        context_mean(image, [image], [mask], spacing=SPACING, task_family="segmentaton")
