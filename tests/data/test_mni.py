"""Training subjects made from the packaged MNI template (``kind: mni``), kept apart from the kit."""

from __future__ import annotations

import numpy as np
import pytest

from medverse.data.mni import (
    HEAD_CENTRE_MM,
    MNI_TRAIN_SEED_NAMESPACE,
    TISSUE_LABELS,
    AtlasRegions,
    AtlasStructure,
    BrainMask,
    Contrast,
    ElasticWarp,
    MniAnatomy,
    TissueClasses,
    TissueMask,
    aal3_pair_names,
    build_mni_subject,
    divide_by_peak,
    grid_affine,
    load_mni_sources,
    make_mni_cases,
    paint_shell,
    sample_on_grid,
)
from medverse.errors import InputError
from medverse.evaluation.kit_config import KIT_SEED_NAMESPACE

SMALL = dict(base_shape=(24, 28, 24), voxel_mm=(8.0, 10.0))


def test_subjects_are_replayable_and_differ_by_index_and_seed() -> None:
    first, _ = make_mni_cases(3, seed=0, **SMALL)
    again, _ = make_mni_cases(3, seed=0, **SMALL)
    other, _ = make_mni_cases(4, seed=0, **SMALL)
    reseeded, _ = make_mni_cases(3, seed=1, **SMALL)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert not np.array_equal(first.affine, other.affine) or first.shape != other.shape
    assert not np.allclose(first.affine, reseeded.affine)
    assert MNI_TRAIN_SEED_NAMESPACE != KIT_SEED_NAMESPACE


def test_grid_follows_the_voxel_size_over_one_field_of_view() -> None:
    base = (40, 46, 40)
    fine, _ = make_mni_cases(0, base_shape=base, voxel_mm=(5.0, 5.0))
    assert fine.shape == base and fine.spacing == (5.0, 5.0, 5.0)
    for index in range(3):
        case, _ = make_mni_cases(index, base_shape=base, voxel_mm=(5.0, 10.0))
        spacing = case.spacing[0]
        assert 5.0 <= spacing <= 10.0
        np.testing.assert_allclose(np.diag(case.affine)[:3], spacing)
        field_of_view = np.asarray(case.shape) * spacing
        assert np.all(np.abs(field_of_view - 5.0 * np.asarray(base)) <= spacing / 2 + 1e-6)


def test_labels_are_tissue_classes_and_aal_pairs_inside_the_brain() -> None:
    tissue, regions = make_mni_cases(1, base_shape=(48, 56, 48), voxel_mm=(4.0, 4.0))
    np.testing.assert_array_equal(tissue.images, regions.images)
    assert tissue.channel_names == ("T1w", "T2like")
    assert 0.0 <= tissue.images.min() and tissue.images.max() <= 1.0
    assert set(np.unique(tissue.labels)) == set(TISSUE_LABELS)
    # white matter is brighter than CSF on T1w and darker on the T2-like contrast
    t1, t2 = tissue.images
    csf, wm = tissue.labels == 1, tissue.labels == 3
    assert t1[wm].mean() > t1[csf].mean() and t2[wm].mean() < t2[csf].mean()
    found = set(np.unique(regions.labels)) - {0}
    assert len(found) > 40 and found <= set(aal3_pair_names())
    assert aal3_pair_names()[21] == "Hippocampus"
    # every region voxel is brain (label > 0 of the tissue map)
    assert np.all(tissue.labels[regions.labels > 0] > 0)


def test_tissue_threshold_labels_only_voxels_that_are_mostly_one_tissue() -> None:
    shape = dict(base_shape=(40, 46, 40), voxel_mm=(5.0, 5.0))
    argmax, regions = make_mni_cases(2, **shape)
    half, half_regions = make_mni_cases(2, tissue_threshold=0.5, **shape)
    # same subject (images, regions); only the tissue convention changes
    np.testing.assert_array_equal(argmax.images, half.images)
    np.testing.assert_array_equal(regions.labels, half_regions.labels)
    labelled = half.labels > 0
    assert np.all(half.labels[labelled] == argmax.labels[labelled])  # the same class where kept
    dropped = (argmax.labels > 0) & ~labelled
    # partial-volume voxels lose their label: a few percent of the brain, not none and not most
    assert 0.005 < dropped.sum() / (argmax.labels > 0).sum() < 0.3
    lower, _ = make_mni_cases(2, tissue_threshold=0.4, **shape)
    assert labelled.sum() <= (lower.labels > 0).sum() <= (argmax.labels > 0).sum()
    with pytest.raises(ValueError, match="tissue_threshold"):
        make_mni_cases(2, tissue_threshold=1.0, **shape)


@pytest.mark.parametrize("voxel_mm", [(0.0, 1.0), (3.0, 2.0)])
def test_bad_voxel_range_is_refused(voxel_mm) -> None:
    with pytest.raises(ValueError, match="voxel_mm"):
        make_mni_cases(0, base_shape=(16, 16, 16), voxel_mm=voxel_mm)


# -- the helpers shared with the evaluation kit (medverse.evaluation.kit_build) ----------------


def test_divide_by_peak_clips_negatives_and_keeps_the_minimum() -> None:
    out = divide_by_peak(np.array([-1.0, 1.0, 4.0]))
    assert out.dtype == np.float32 and out.tolist() == [0.0, 0.25, 1.0]
    assert divide_by_peak(np.array([2.0, 4.0])).tolist() == [0.5, 1.0]  # not a min-max
    assert divide_by_peak(np.array([-2.0, 0.0])).tolist() == [0.0, 0.0]  # no peak: zeros


def test_grid_affine_puts_the_grid_centre_on_the_given_point() -> None:
    affine = grid_affine((3, 5, 4), 2.0, (1.0, -17.0, 10.0))
    np.testing.assert_array_equal(np.diag(affine), [2.0, 2.0, 2.0, 1.0])
    np.testing.assert_allclose((affine @ [1.0, 2.0, 1.5, 1.0])[:3], (1.0, -17.0, 10.0))


def test_sample_on_grid_keeps_labels_and_interpolates_images() -> None:
    labels = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    coords = np.array([[0.0, 1.0, 5.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # 3 points
    nearest = sample_on_grid(labels, 0, coords=coords, shape=(3, 1, 1))
    assert nearest.dtype == np.uint8 and nearest.ravel().tolist() == [0, 7, 0]  # 0 outside
    halfway = np.array([[0.5], [0.0], [0.0]])
    linear = sample_on_grid(labels, 1, coords=halfway, shape=(1, 1, 1))
    assert linear.dtype == np.float32 and linear.item() == 2.0  # between 0 and 4


def test_paint_shell_gives_each_class_its_value_times_a_texture() -> None:
    shell = np.full((6, 6, 6), 4, np.uint8)
    shell[:3] = 3
    flat = paint_shell(shell, {3: 0.2, 4: 0.8}, np.random.default_rng(0), texture=0.0)
    assert flat.dtype == np.float32 and flat.shape == shell.shape
    np.testing.assert_allclose(flat[0], 0.2, rtol=1e-6)  # 3 voxels from the border: unblurred
    np.testing.assert_allclose(flat[-1], 0.8, rtol=1e-6)
    textured = paint_shell(shell, {3: 0.2, 4: 0.8}, np.random.default_rng(0), texture=0.15)
    assert not np.allclose(textured, flat) and abs(float(textured.mean() - flat.mean())) < 0.05


# -- the one subject builder (build_mni_subject), shared with the evaluation kit ----------------

GRID = (32, 38, 32)  # 6 mm over the head
GRID_AFFINE = grid_affine(GRID, 6.0, HEAD_CENTRE_MM)
PLAIN = Contrast("T1w", {2: (0.1, 0.1), 3: (0.05, 0.05), 4: (0.6, 0.6)}, template_peak=True)


def _build(seed: int = 0, **kwargs):
    options = dict(contrasts=[PLAIN], labels={"brain": BrainMask()}, gamma=(1.0, 1.0))
    options.update(kwargs)
    return build_mni_subject(np.random.default_rng(seed), GRID, GRID_AFFINE, **options)


@pytest.fixture(scope="module")
def anatomy() -> MniAnatomy:
    return MniAnatomy(GRID, GRID_AFFINE)


def test_tissue_conventions_most_probable_class_versus_each_tissue_alone(anatomy) -> None:
    brain = anatomy.brain_mask
    classes = TissueClasses()(anatomy)
    maps = np.stack([anatomy.csf, anatomy.grey, anatomy.white])
    # most probable class: every brain voxel, nothing outside, the argmax of the three maps
    assert classes.dtype == np.uint8 and np.array_equal(classes > 0, brain)
    np.testing.assert_array_equal(classes[brain], np.argmax(maps, axis=0)[brain] + 1)
    half = TissueClasses(0.5)(anatomy)
    np.testing.assert_array_equal(half > 0, brain & (maps.max(axis=0) >= 0.5))
    # each tissue alone: its own probability, so two tissues can share a partial-volume voxel
    grey, white = TissueMask("grey", 0.3)(anatomy), TissueMask("white", 0.3)(anatomy)
    np.testing.assert_array_equal(grey, anatomy.grey >= 0.3)
    assert (grey & white).sum() > 0 and not np.any((classes == 2) & (classes == 3))
    with pytest.raises(InputError, match="tissue"):
        TissueMask("gray")
    with pytest.raises(InputError, match="tissue_threshold"):
        TissueClasses(1.0)


def test_atlas_conventions_nearest_regions_versus_linear_structure() -> None:
    # a third of a template voxel off its lattice, where the two interpolations differ
    anatomy = MniAnatomy(GRID, GRID_AFFINE, pullback=lambda points: points + 0.3)
    regions = AtlasRegions()(anatomy)
    assert set(np.unique(regions)) - {0} <= set(aal3_pair_names())
    assert not np.any(regions[~anatomy.brain_mask])  # regions only inside the brain
    hippocampus = AtlasStructure((41, 42))(anatomy)  # AAL3 ids of the left and right pair 21
    nearest = regions == 21
    overlap = 2 * (hippocampus.astype(bool) & nearest).sum() / (hippocampus.sum() + nearest.sum())
    # the same structure, but the indicator is interpolated (> 0.5), not the nearest id taken
    assert hippocampus.dtype == np.uint8 and 0.5 < overlap < 1.0
    expected = sample_on_grid(
        np.isin(load_mni_sources().aal, (41, 42)).astype(np.float32),
        1,
        coords=anatomy.coords,
        shape=GRID,
    )
    np.testing.assert_array_equal(hippocampus, expected > 0.5)


def test_pullback_moves_the_anatomy(anatomy) -> None:
    same = MniAnatomy(GRID, GRID_AFFINE, pullback=lambda points: points)
    np.testing.assert_allclose(same.coords, anatomy.coords, atol=1e-3)
    # sampling 12 mm (two voxels) further along x shows the anatomy two voxels earlier
    shifted = MniAnatomy(GRID, GRID_AFFINE, pullback=lambda points: points + [[12.0], [0], [0]])
    np.testing.assert_allclose(shifted.brain[:-2], anatomy.brain[2:], atol=1e-4)
    assert not np.allclose(shifted.brain, anatomy.brain, atol=0.1)


def test_blend_max_keeps_the_template_in_the_brain_soft_mixes_it() -> None:
    def off_lattice(points: np.ndarray) -> np.ndarray:
        return points + 0.3  # partial-volume brain probabilities at the edge

    anatomy = MniAnatomy(GRID, GRID_AFFINE, pullback=off_lattice)
    template = anatomy.template(6.0)
    # the brain's edge, where its probability is below 0.95: soft mixing scales the template
    inside = anatomy.brain_mask & (anatomy.brain < 0.95) & (template > 0.05 * template.max())
    assert inside.sum() > 100
    for blend, proportional in (("max", True), ("soft", False)):
        contrast = Contrast("T1w", {4: (0.6, 0.6)}, blend=blend)
        image = _build(contrasts=[contrast], pullback=off_lattice).images["T1w"]
        ratio = image[inside] / template[inside]
        assert np.allclose(ratio, ratio.mean(), rtol=1e-4) == proportional, blend
    scalp = anatomy.shell == 4
    assert _build(contrasts=[PLAIN], pullback=off_lattice).images["T1w"][scalp].mean() > 0.1


def test_contrast_values_come_from_their_ranges_in_order() -> None:
    t2 = Contrast(
        "T2like", {2: (0.9, 0.9), 4: (0.2, 0.4)}, tissue=((1.0, 1.0), (0.5, 0.5), (0.1, 0.2))
    )
    subject = _build(contrasts=[PLAIN, t2], gamma=(0.8, 1.2))
    assert list(subject.images) == ["T1w", "T2like"]
    drawn = subject.params["T2like"]
    assert drawn["tissue_values"][:2] == [1.0, 0.5] and 0.1 <= drawn["tissue_values"][2] <= 0.2
    assert drawn["shell_values"][2] == 0.9 and 0.2 <= drawn["shell_values"][4] <= 0.4
    assert subject.params["T1w"]["shell_values"] == {2: 0.1, 3: 0.05, 4: 0.6}
    assert 0.8 <= drawn["gamma"] <= 1.2 and "noise_sigma" not in drawn
    for image in subject.images.values():
        assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() == 1.0
    with pytest.raises(InputError, match="blend"):
        Contrast("T1w", {4: (0.5, 0.5)}, blend="mean")
    with pytest.raises(InputError, match="unique"):
        _build(contrasts=[PLAIN, PLAIN])


def test_elastic_warp_moves_images_and_labels_together_noise_is_added() -> None:
    labels = {"tissue": TissueClasses(), "brain": BrainMask()}
    plain = _build(labels=labels)
    np.testing.assert_array_equal(plain.labels["tissue"], TissueClasses()(plain.anatomy))
    assert "elastic_seed" not in plain.params
    warped = _build(labels=labels, elastic=ElasticWarp(0.1))
    assert isinstance(warped.params["elastic_seed"], int)
    assert not np.array_equal(warped.labels["tissue"], plain.labels["tissue"])
    assert set(np.unique(warped.labels["tissue"])) == {0, 1, 2, 3}
    # the image followed the labels: the warped brain is where the warped image's brain is
    np.testing.assert_array_equal(warped.labels["brain"] > 0, warped.labels["tissue"] > 0)
    image = warped.images["T1w"]
    assert image[warped.labels["tissue"] == 3].mean() > image[warped.labels["tissue"] == 1].mean()
    noisy = _build(labels=labels, noise=(0.05, 0.05))
    assert noisy.params["T1w"]["noise_sigma"] == 0.05
    corner = (slice(0, 4),) * 3  # air, far from the head
    assert plain.images["T1w"][corner].std() < 1e-3 < noisy.images["T1w"][corner].std()
    again = _build(labels=labels, noise=(0.05, 0.05))
    np.testing.assert_array_equal(noisy.images["T1w"], again.images["T1w"])
