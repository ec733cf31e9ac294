"""Context alignment through medverse.registration: the "deformable" mode, engine= and cache=."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.io import ALIGN_MODES, ContextPair, Volume, align_pair, align_to_target
from medverse.registration import RegistrationCache
from tests.registration.phantom import GRID, dice, smooth_deformation, subject


@pytest.fixture(scope="module")
def scene() -> tuple[Volume, np.ndarray, ContextPair]:
    target, target_mask = subject(name="target.nii.gz")
    # the context subject is deformed and stored on a 1.25 mm LPS grid
    affine = np.diag([-1.25, -1.25, 1.25, 1.0])
    affine[:3, 3] = (22.0, 21.0, -23.0)
    image, mask = subject(affine, (36, 34, 38), warp=smooth_deformation, name="ctx.nii.gz")
    pair = ContextPair(image, Volume(mask, affine, name="ctx_seg.nii.gz", kind="label"))
    return target, target_mask, pair


def test_deformable_is_an_align_mode() -> None:
    assert ALIGN_MODES == ("physical", "fov", "affine", "deformable")


@pytest.mark.slow  # ANTs affine and deformable registrations, ~7 s or more on 2 cores
def test_deformable_mode_beats_affine_mode(scene: tuple[Volume, np.ndarray, ContextPair]) -> None:
    target, target_mask, pair = scene
    _, affine_mask, _ = align_pair(pair, target, mode="affine")
    image, mask, description = align_pair(pair, target, mode="deformable")
    assert image.shape == mask.shape == target.shape
    assert set(np.unique(mask)) <= {0.0, 1.0}  # masks: nearest neighbour
    assert dice(mask, target_mask) > dice(affine_mask, target_mask) + 0.02
    assert description.startswith("context 'ctx.nii.gz': registered (ANTs affine + SyN;")
    assert "and warped from (36,34,38) 1.2 mm" in description
    assert description.endswith("(deformable)") or "(deformable);" in description
    # align_to_target registers the volume it is given, the same way
    np.testing.assert_array_equal(align_to_target(pair.image, target, mode="deformable"), image)


def test_engines_and_cache_can_be_chosen(
    scene: tuple[Volume, np.ndarray, ContextPair], tmp_path: Path
) -> None:
    target, target_mask, pair = scene
    cache = RegistrationCache(tmp_path)
    _, first, description = align_pair(pair, target, mode="deformable", engine="sitk", cache=cache)
    assert "then demons" in description and "cached" not in description
    _, second, description = align_pair(pair, target, mode="deformable", engine="sitk", cache=cache)
    assert "; cached)" in description
    np.testing.assert_array_equal(first, second)
    assert dice(second, target_mask) > 0.85
    _, ants_affine, description = align_pair(pair, target, mode="affine", engine="ants")
    assert "registered (ANTs affine;" in description
    assert dice(ants_affine, target_mask) > 0.7
    with pytest.raises(InputError, match="engine must be one of 'ants', 'sitk'"):
        align_pair(pair, target, mode="deformable", engine="elastix")


def test_physical_and_fov_ignore_the_engine(scene: tuple[Volume, np.ndarray, ContextPair]) -> None:
    target, _, pair = scene
    plain = align_to_target(pair.image, target)
    np.testing.assert_array_equal(align_to_target(pair.image, target, engine="ants"), plain)
    assert align_to_target(target, target, mode="fov", engine="sitk") is target.array


def test_a_constant_context_image_is_refused_naming_it() -> None:
    target, _ = subject(name="target.nii.gz")
    flat = Volume(np.full((20, 20, 20), 2.0), GRID, name="flat.nii.gz")
    with pytest.raises(InputError, match="constant image") as info:
        align_to_target(flat, target, mode="deformable")
    assert "flat.nii.gz" in str(info.value)
