"""Tests for medverse.validation: every check raises InputError naming the volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medverse.errors import InputError
from medverse.validation import (
    check_3d,
    check_finite,
    check_label_map,
    check_nonempty_mask,
    check_not_an_input,
    check_option,
    check_same_grid,
    check_volume,
    format_shape,
    format_spacing,
)


def _volume() -> np.ndarray:
    return np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)


def test_good_volume_passes() -> None:
    check_volume(_volume(), "ok.nii.gz")
    check_volume(torch.from_numpy(_volume()), "tensor")  # torch tensors are accepted


@pytest.mark.parametrize("shape", [(20, 24), (1, 20, 24, 16), (2, 2, 2, 2, 2)])
def test_check_volume_wants_3d(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError) as info:
        check_volume(np.ones(shape), "t1.nii.gz")
    assert str(info.value) == f"'t1.nii.gz': expected a 3-D volume, got shape {shape}"


def test_check_3d_refuses_empty_axes() -> None:
    check_3d((2, 3, 4), "x")
    with pytest.raises(InputError, match=r"non-empty.*\(2, 0, 4\)"):
        check_3d((2, 0, 4), "x")


def test_nan_and_inf_are_counted() -> None:
    array = _volume()
    array[0, 0, :3] = np.nan
    array[1, 1, 1] = np.inf
    array[2, 2, 2] = -np.inf
    with pytest.raises(InputError) as info:
        check_volume(array, "ct.nii.gz")
    message = str(info.value)
    assert message.startswith("'ct.nii.gz': expected finite values")
    assert "3 NaN and 2 Inf voxel(s) out of 7680" in message
    with pytest.raises(InputError, match="0 NaN and 1 Inf"):
        check_finite(np.array([1.0, np.inf]), "v")


def test_integer_arrays_are_always_finite() -> None:
    check_finite(np.arange(10), "ints")


def test_constant_volume_is_refused() -> None:
    with pytest.raises(InputError) as info:
        check_volume(np.full((4, 5, 6), 7.0), "blank.nii.gz")
    message = str(info.value)
    assert "'blank.nii.gz': constant image (every voxel is 7)" in message
    assert "min-max normalisation would divide by zero" in message


def test_empty_mask_is_refused() -> None:
    mask = np.zeros((4, 5, 6), dtype=np.float32)
    mask[0, 0, 0] = 0.5  # not foreground: the threshold is > 0.5
    with pytest.raises(InputError) as info:
        check_nonempty_mask(mask, "liver_007.nii.gz")
    message = str(info.value)
    assert "'liver_007.nii.gz': context mask has no foreground voxel" in message
    assert "maximum is 0.5" in message
    mask[0, 0, 0] = 0.51
    check_nonempty_mask(mask, "liver_007.nii.gz")


@pytest.mark.parametrize(
    ("value", "what"),
    [(0.8, "non-integer"), (-3.0, "negative"), (1e30, "above 2,147,483,647"), (np.nan, "NaN")],
)
def test_label_map_wants_integer_labels(value, what) -> None:
    mask = np.zeros((4, 5, 6), dtype=np.float32)
    mask[1:3, 1:3, 1:3] = 1
    check_label_map(mask, "seg.nii.gz")
    check_label_map(mask * 40000, "seg.nii.gz")  # large but integer: fine
    mask[0, 0, 0] = value
    with pytest.raises(InputError) as info:
        check_label_map(mask, "seg.nii.gz")
    assert str(info.value).startswith("'seg.nii.gz': ") and what in str(info.value)


def test_output_may_not_be_an_input(tmp_path) -> None:
    target = tmp_path / "t.nii.gz"
    target.write_bytes(b"x")
    (tmp_path / "link.nii.gz").symlink_to(target)
    check_not_an_input(tmp_path / "p.nii.gz", [target, None])
    for same in (target, tmp_path / "." / "t.nii.gz", tmp_path / "sub" / ".." / "t.nii.gz",
                 tmp_path / "link.nii.gz"):  # fmt: skip
        with pytest.raises(InputError, match="never overwrites its inputs"):
            check_not_an_input(same, [None, target], "--uncertainty")
    with pytest.raises(InputError, match="--uncertainty is the input file"):
        check_not_an_input(tmp_path / "u.nii.gz", [tmp_path / "u.nii.gz"], "--uncertainty")


def test_same_grid_passes_within_tolerance() -> None:
    affine = np.diag([0.8, 1.2, 2.5, 1.0])
    nudged = affine.copy()
    nudged[0, 3] += 5e-5
    check_same_grid((4, 5, 6), affine, (4, 5, 6), nudged, "a", "b")
    with pytest.raises(InputError, match="affine differs"):
        check_same_grid((4, 5, 6), affine, (4, 5, 6), nudged, "a", "b", atol=1e-5)


def test_same_grid_message_shows_both_grids_and_the_fix() -> None:
    affine_a = np.diag([1.0, 1.0, 2.5, 1.0])
    affine_b = np.diag([0.8, 0.8, 2.5, 1.0])
    with pytest.raises(InputError) as info:
        check_same_grid(
            (512, 512, 90),
            affine_a,
            (512, 512, 88),
            affine_b,
            "liver_007.nii.gz",
            "case_001.nii.gz",
        )
    message = str(info.value)
    assert "'liver_007.nii.gz' and 'case_001.nii.gz'" in message
    assert "spatial shape and affine" in message
    assert "(512,512,90) 1x1x2.5 mm" in message
    assert "(512,512,88) 0.8x0.8x2.5 mm" in message
    assert "resample" in message.lower() and "--no-resample" in message


def test_same_grid_shape_only() -> None:
    with pytest.raises(InputError, match=r"spatial shape differs.*\(4,5,6\).*\(4,5,7\)"):
        check_same_grid((4, 5, 6), np.eye(4), (4, 5, 7), np.eye(4), "a", "b")


def test_check_option_lists_choices_and_guesses() -> None:
    assert check_option("fov", ("physical", "fov", "affine"), "mode") == "fov"
    with pytest.raises(InputError) as info:
        check_option("phisical", ("physical", "fov", "affine"), "mode")
    message = str(info.value)
    assert "mode must be one of 'physical', 'fov', 'affine'; got 'phisical'" in message
    assert "Did you mean 'physical'?" in message
    with pytest.raises(InputError, match="got 3"):
        check_option(3, ("a",), "x")  # type: ignore[arg-type]


def test_formatting_helpers() -> None:
    assert format_shape((90, 100, 80)) == "(90,100,80)"
    assert format_spacing((2.0, 2.0, 2.0)) == "2.0 mm"
    assert format_spacing((0.8, 1.2, 2.5)) == "0.8x1.2x2.5 mm"
