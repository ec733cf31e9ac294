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
    joint_label_fusion,
    multi_atlas,
    multi_atlas_sitk,
    nl_means,
    noise_sigma,
    register_to_target,
)
from medverse.evaluation.metrics import dice, psnr
from medverse.registration import Registration, RegistrationCache

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


@pytest.mark.slow
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


# ------------------------------------------------------------ engines, JLF and non-local means


def _moved_subjects(image, mask):
    """Three contexts: the subject shifted and slightly scaled in three ways."""
    contexts = []
    for shift, zoom in (((3, -2, 0), 1.0), ((-2, 2, 1), 1.06), ((1, 3, -2), 0.95)):
        matrix = np.eye(3) / zoom
        centre = (np.asarray(image.shape) - 1) / 2
        offset = centre - matrix @ centre - np.asarray(shift)
        contexts.append(
            (
                ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="nearest"),
                ndimage.affine_transform(mask.astype(np.float32), matrix, offset=offset, order=0),
            )
        )
    return [c[0] for c in contexts], [c[1] for c in contexts]


@pytest.mark.slow  # deformable registrations with both engines, ~7 s or more on 2 cores
def test_both_engines_and_the_old_entry_points_work(subject, tmp_path):
    image, mask = subject
    images, masks = _moved_subjects(image, mask)
    kwargs = {"spacing": (1.0, 1.0, 1.0), "task_family": "segmentation"}
    naive = dice(context_mean(image, images, masks, **kwargs), mask)
    for fused in (
        multi_atlas(image, images, masks, engine="sitk", **kwargs),
        multi_atlas_sitk(image, images, masks, **kwargs),
        multi_atlas(image, images, masks, kind="affine", **kwargs),
        multi_atlas(image, images, masks, demons_iterations=0, engine="sitk", **kwargs),
    ):
        assert set(np.unique(fused)) <= {0.0, 1.0}
        assert dice(fused, mask) > max(0.9, naive)
    reg = register_to_target(image, images[0], spacing=(1.0, 1.0, 1.0))
    assert isinstance(reg, Registration) and reg.engine == "sitk" and reg.kind == "deformable"
    assert dice(reg.warp(masks[0], interpolation="nearest"), mask) > 0.9

    clear_registration_cache()
    cache = RegistrationCache(tmp_path)
    first = multi_atlas(image, images, masks, cache=cache, **kwargs)
    assert len(list(tmp_path.glob("*/*.npz"))) == 6  # 3 affine + 3 deformable entries
    clear_registration_cache()  # the disk cache still answers
    reg = register_to_target(image, images[0], spacing=(1.0, 1.0, 1.0), engine="ants", cache=cache)
    assert reg.cached
    np.testing.assert_array_equal(multi_atlas(image, images, masks, cache=cache, **kwargs), first)


def test_joint_label_fusion_beats_the_trivial_baseline(subject):
    image, mask = subject
    images, masks = _moved_subjects(image, mask)
    kwargs = {"spacing": (1.0, 1.0, 1.0), "task_family": "segmentation"}
    fused = joint_label_fusion(image, images, masks, **kwargs)
    assert fused.shape == mask.shape and set(np.unique(fused)) <= {0.0, 1.0}
    assert dice(fused, mask) > 0.9 > dice(context_mean(image, images, masks, **kwargs), mask)
    assert joint_label_fusion.task_families == ("segmentation",)
    with pytest.raises(InputError, match="segmentation, not image tasks"):
        joint_label_fusion(image, images, images, spacing=SPACING, task_family="enhancement")


def test_nl_means_denoises_better_than_the_noisy_input(subject):
    clean, _ = subject
    rng = np.random.default_rng(0)

    def noisy(array):
        return (array + rng.normal(0.0, 0.06, array.shape)).astype(np.float32)

    context_clean = [np.roll(clean, shift, axis=0) for shift in (2, -3)]
    contexts = [noisy(c) for c in context_clean]
    target = noisy(clean)
    assert abs(noise_sigma(target) - 0.06) < 0.01
    out = nl_means(target, contexts, context_clean, spacing=SPACING, task_family="enhancement")
    assert out.shape == clean.shape and out.dtype == np.float32
    before = psnr(target, clean, data_range=1.0)
    after = psnr(out, clean, data_range=1.0)
    assert after > before + 3.0, (before, after)
    assert nl_means.task_families == ("enhancement",)
    with pytest.raises(InputError, match="enhancement"):
        nl_means(target, contexts, context_clean, spacing=SPACING, task_family="segmentation")
