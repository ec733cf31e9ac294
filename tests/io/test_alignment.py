"""Tests for medverse.io.alignment: bringing context pairs onto the target grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage

from medverse.errors import InputError
from medverse.io import ContextPair, Volume, align_pair, align_to_target

# Target: 40^3 voxels of 1 mm covering world [-0.5, 39.5] mm on each axis.
TARGET_SHAPE = (40, 40, 40)
TARGET_AFFINE = np.eye(4)
CENTRE = (19.5, 19.5, 19.5)


def _affine(diagonal: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*diagonal, 1.0])
    affine[:3, 3] = origin
    return affine


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


# Coarser, anisotropic, LPS-flipped grids over (about) the same world extent as the target.
COARSE_GRIDS = {
    # 2 mm voxels, centres 0.5, 2.5, ..., 38.5: exactly the target's extent.
    "2mm": ((20, 20, 20), _affine((2.0, 2.0, 2.0), (0.5, 0.5, 0.5))),
    # anisotropic and flipped in x and y (LPS): x centres 38.5 ... 0.5
    "aniso-lps": ((20, 27, 16), _affine((-2.0, -1.5, 2.5), (38.5, 39.25, 0.75))),
}


@pytest.fixture
def target(make_blob: Callable[..., np.ndarray]) -> Volume:
    return Volume(
        make_blob(TARGET_SHAPE, TARGET_AFFINE, CENTRE, 6.0), TARGET_AFFINE, name="target.nii.gz"
    )


def _pair(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    make_blob: Callable[..., np.ndarray],
    make_sphere: Callable[..., np.ndarray],
) -> ContextPair:
    image = Volume(make_blob(shape, affine, CENTRE, 6.0), affine, name="a.nii.gz")
    mask = make_sphere(shape, affine, CENTRE, 10.0)
    return ContextPair(image, Volume(mask, affine, name="a_seg.nii.gz", kind="label"))


# ------------------------------------------------------------------------- physical mode


@pytest.mark.parametrize("grid", sorted(COARSE_GRIDS))
def test_physical_resampling_recovers_target_content(
    grid: str,
    target: Volume,
    make_blob: Callable[..., np.ndarray],
    make_sphere: Callable[..., np.ndarray],
) -> None:
    shape, affine = COARSE_GRIDS[grid]
    pair = _pair(shape, affine, make_blob, make_sphere)
    truth_mask = make_sphere(TARGET_SHAPE, TARGET_AFFINE, CENTRE, 10.0)

    image, mask, description = align_pair(pair, target)

    assert image.shape == mask.shape == TARGET_SHAPE
    assert image.dtype == mask.dtype == np.float32
    # Trilinear interpolation of a sigma-6 mm Gaussian sampled every h <= 2.5 mm errs by at most
    # sum over axes of h^2/8 max|f''| = (2^2 + 1.5^2 + 2.5^2)/8/36 = 0.043 (measured 0.035);
    # a 1 mm misplacement would give ~0.1 (max gradient exp(-1/2)/6 per mm).
    assert np.abs(image - target.array).max() < 0.045
    assert _dice(mask, truth_mask) > 0.9
    assert set(np.unique(mask)) <= {0.0, 1.0}  # nearest neighbour keeps masks binary
    assert description.startswith("context 'a.nii.gz': resampled from")
    assert "to target grid (40,40,40) 1.0 mm (physical)" in description
    assert "covers" not in description


def test_description_format(
    make_blob: Callable[..., np.ndarray], make_sphere: Callable[..., np.ndarray]
) -> None:
    shape, affine = COARSE_GRIDS["2mm"]
    pair = _pair(shape, affine, make_blob, make_sphere)
    target = Volume(np.ones((40, 40, 20)), _affine((1.0, 1.0, 2.0), (0.0, 0.0, 0.5)))
    _, _, description = align_pair(pair, target)
    assert description == (
        "context 'a.nii.gz': resampled from (20,20,20) 2.0 mm to target grid (40,40,20) "
        "1x1x2 mm (physical)"
    )


def test_flipped_orientation_is_undone_exactly(rng: np.random.Generator) -> None:
    data = rng.random((20, 24, 16)).astype(np.float32)
    affine_ras = _affine((1.2, 0.9, 2.0), (-10.0, 5.0, 30.0))
    target = Volume(data, affine_ras, name="target")
    # The same voxels stored with x and y reversed: index i' = n - 1 - i.
    flip = np.array([[-1, 0, 0, 19], [0, -1, 0, 23], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    context = Volume(data[::-1, ::-1, :].copy(), affine_ras @ flip, name="lps")
    assert context.orientation == ("L", "P", "S") and target.orientation == ("R", "A", "S")

    for interpolation in ("linear", "nearest"):
        aligned = align_to_target(context, target, interpolation=interpolation)
        np.testing.assert_allclose(aligned, data, atol=1e-5)
    np.testing.assert_allclose(align_to_target(context, target, mode="fov"), data, atol=1e-6)


def test_masks_stay_binary_images_do_not(
    make_blob: Callable[..., np.ndarray], make_sphere: Callable[..., np.ndarray]
) -> None:
    affine = _affine((1.7, 1.3, 2.9), (0.3, 0.1, 0.9))
    pair = _pair((23, 30, 14), affine, make_blob, make_sphere)
    target = Volume(np.ones((40, 40, 40)), TARGET_AFFINE)
    image, mask, _ = align_pair(pair, target)
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert len(np.unique(image)) > 100
    # align_to_target picks nearest for a label volume by default, linear when asked
    assert set(np.unique(align_to_target(pair.output, target))) == {0.0, 1.0}
    assert len(np.unique(align_to_target(pair.output, target, interpolation="linear"))) > 2
    # an output image (not a label) is interpolated linearly
    _, output, _ = align_pair(pair, target, output_kind="image")
    assert len(np.unique(output)) > 2


def test_same_grid_returns_arrays_untouched(
    target: Volume, make_sphere: Callable[..., np.ndarray]
) -> None:
    mask = make_sphere(TARGET_SHAPE, TARGET_AFFINE, CENTRE, 10.0)
    pair = ContextPair(target, Volume(mask, TARGET_AFFINE, name="m", kind="label"))
    for mode in ("physical", "fov"):
        image, output, description = align_pair(pair, target, mode=mode)
        assert image is pair.image.array and output is pair.output.array
        expected = {
            "physical": "already on the target grid (40,40,40) 1.0 mm; not resampled",
            "fov": "same shape (40,40,40) and orientation RAS as the target; not resized (fov)",
        }[mode]
        assert description == f"context 'target.nii.gz': {expected}"
        assert align_to_target(pair.image, target, mode=mode) is pair.image.array


def test_voxels_outside_the_context_are_zero(rng: np.random.Generator) -> None:
    data = rng.random((20, 40, 40)).astype(np.float32) + 1.0
    context = Volume(data, TARGET_AFFINE, name="half")  # covers x in [-0.5, 19.5]
    mask = Volume((data > 1.5).astype(np.float32), TARGET_AFFINE, name="half_seg", kind="label")
    target = Volume(rng.random(TARGET_SHAPE), TARGET_AFFINE, name="t")

    image, output, description = align_pair(ContextPair(context, mask), target)

    np.testing.assert_allclose(image[:20], data, atol=1e-6)
    assert np.all(image[20:] == 0) and np.all(output[20:] == 0)
    assert "it covers 50% of the target, the rest is 0" in description


def test_edge_voxels_within_half_a_voxel_take_the_edge_value() -> None:
    context = Volume(np.ones((20, 20, 20)), _affine((2.0, 2.0, 2.0), (0.5, 0.5, 0.5)), name="c")
    target = Volume(np.ones((40, 40, 40)), TARGET_AFFINE)
    aligned = align_to_target(context, target)
    assert np.all(aligned == 1.0)  # target centres 0 and 39 mm lie inside the outer 2 mm voxels


def test_no_overlap_is_an_error_naming_both(rng: np.random.Generator) -> None:
    context = Volume(rng.random((10, 10, 10)), _affine((1, 1, 1), (500, 0, 0)), name="far")
    target = Volume(rng.random((10, 10, 10)), np.eye(4), name="here")
    with pytest.raises(InputError, match="does not overlap") as info:
        align_to_target(context, target)
    message = str(info.value)
    assert "'far'" in message and "'here'" in message and "mode='fov'" in message


# ------------------------------------------------------------------------------ fov mode


def test_fov_mode_ignores_spacing_and_origin_but_reorients(
    target: Volume, make_blob: Callable[..., np.ndarray], make_sphere: Callable[..., np.ndarray]
) -> None:
    # Sample the target scene on a 2 mm grid, then store it flipped in x and with x and z
    # swapped, under an affine with the right axis directions but wrong spacing and origin.
    shape, affine = COARSE_GRIDS["2mm"]
    blob = make_blob(shape, affine, CENTRE, 6.0)
    sphere = make_sphere(shape, affine, CENTRE, 10.0)
    stored_image = blob[::-1].transpose(2, 1, 0).copy()
    stored_mask = sphere[::-1].transpose(2, 1, 0).copy()
    # stored axis 0 → world +z, axis 1 → +y, axis 2 → -x; spacing 3 mm, far away
    bogus = np.array([[0, 0, -3, 900], [0, 3, 0, 900], [3, 0, 0, 900], [0, 0, 0, 1]], float)
    pair = ContextPair(
        Volume(stored_image, bogus, name="far.nii.gz"),
        Volume(stored_mask, bogus, name="far_seg.nii.gz", kind="label"),
    )
    with pytest.raises(InputError, match="does not overlap"):
        align_pair(pair, target, mode="physical")

    image, mask, description = align_pair(pair, target, mode="fov")

    assert np.abs(image - target.array).max() < 0.045  # as in the physical test
    truth = make_sphere(TARGET_SHAPE, TARGET_AFFINE, CENTRE, 10.0)
    assert _dice(mask, truth) > 0.9
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert "voxel for voxel after reorienting SAL to RAS (fov" in description


# ---------------------------------------------------------------------------- affine mode


def _scene(
    size: int, shift: tuple[float, float, float] = (0.0, 0.0, 0.0), scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 'body' with two inner structures on a zero background; returns (image, organ)."""
    grid = np.indices((size,) * 3).astype(np.float32) - (size - 1) / 2
    grid = [(grid[axis] - shift[axis]) / scale for axis in range(3)]

    def ellipsoid(centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
        return sum(((grid[a] - centre[a] * size) / (radii[a] * size)) ** 2 for a in range(3)) <= 1

    body = ellipsoid((0, 0, 0), (0.32, 0.27, 0.3))
    organ = ellipsoid((0.1, -0.06, 0.04), (0.1, 0.12, 0.09))
    other = ellipsoid((-0.12, 0.08, -0.05), (0.07, 0.06, 0.1))
    image = ndimage.gaussian_filter((0.4 * body + 0.5 * organ + 0.3 * other).astype(np.float32), 1)
    return image.astype(np.float32), organ.astype(np.float32)


@pytest.mark.parametrize("stored", ["same-grid", "lps-flipped"])
def test_affine_mode_recovers_a_translation_and_scale(stored: str) -> None:
    size = 40
    target_image, target_organ = _scene(size)
    # The context subject is 10 % larger and shifted by (2.4, -1.6, 1.2) mm in the same world
    # box, so physical resampling cannot help.
    moved_image, moved_organ = _scene(size, shift=(2.4, -1.6, 1.2), scale=1.1)
    affine = _affine((1.0, 1.0, 1.0), (-20.0, 30.0, 5.0))
    target = Volume(target_image, affine, name="target")
    context_affine = affine
    if stored == "lps-flipped":  # same world, voxels stored with x and y reversed
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:2, 3] = size - 1
        context_affine = affine @ flip
        moved_image, moved_organ = moved_image[::-1, ::-1].copy(), moved_organ[::-1, ::-1].copy()
    pair = ContextPair(
        Volume(moved_image, context_affine, name="ctx.nii.gz"),
        Volume(moved_organ, context_affine, name="ctx_seg.nii.gz", kind="label"),
    )
    assert _dice(align_to_target(pair.output, target), target_organ) < 0.6  # physical: poor

    image, mask, description = align_pair(pair, target, mode="affine")

    assert _dice(mask, target_organ) > 0.9
    assert set(np.unique(mask)) <= {0.0, 1.0}
    physical = align_to_target(pair.image, target)
    assert (
        np.corrcoef(image.ravel(), target_image.ravel())[0, 1]
        > np.corrcoef(physical.ravel(), target_image.ravel())[0, 1]
    )
    assert description.startswith("context 'ctx.nii.gz': registered (rigid+affine, Mattes MI;")
    assert description.endswith("(affine)") or "(affine);" in description
    # deterministic: a second run gives bit-identical results
    image_again, mask_again, _ = align_pair(pair, target, mode="affine")
    np.testing.assert_array_equal(image, image_again)
    np.testing.assert_array_equal(mask, mask_again)


# ------------------------------------------------------------------------------- options


def test_options_list_the_valid_values(target: Volume) -> None:
    with pytest.raises(InputError, match="mode must be one of 'physical', 'fov', 'affine'") as info:
        align_to_target(target, target, mode="phisical")
    assert "Did you mean 'physical'?" in str(info.value)
    with pytest.raises(InputError, match="interpolation must be one of 'linear', 'nearest'"):
        align_to_target(target, target, interpolation="cubic")
    pair = ContextPair(target, Volume(target.array > 0.5, target.affine, kind="label"))
    with pytest.raises(InputError, match="output_kind must be one of"):
        align_pair(pair, target, output_kind="mask")
    with pytest.raises(InputError, match="mode must be one of"):
        align_pair(pair, target, mode="rigid")


def test_fov_ignores_spacing_when_shape_and_orientation_match(rng: np.random.Generator) -> None:
    data = rng.random((10, 12, 8)).astype(np.float32)
    context = Volume(data, _affine((3.0, 3.0, 3.0), (100.0, 0.0, 0.0)), name="c")
    target = Volume(rng.random((10, 12, 8)), np.eye(4), name="t")
    assert align_to_target(context, target, mode="fov") is context.array
    with pytest.raises(InputError, match="does not overlap"):
        align_to_target(context, target, mode="physical")
