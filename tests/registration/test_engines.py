"""Both engines (``registration/sitk_engine.py``, ``registration/ants_engine.py``) through
:func:`medverse.registration.register`: known transforms recovered, deformable beats affine,
deterministic results."""

from __future__ import annotations

import numpy as np
import pytest

from medverse.io.volume import Volume
from medverse.registration.driver import register
from medverse.registration.settings import ENGINES, REGISTRATION_KINDS
from medverse.registration.transform import Registration
from tests.registration.phantom import (
    GRID,
    dice,
    known_transform,
    smooth_deformation,
    subject,
    world_points,
)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_known_affine_is_recovered(engine: str, fixed: tuple[Volume, np.ndarray]) -> None:
    target, target_mask = fixed
    truth = known_transform()
    # The moving subject is the phantom moved by `truth`, stored on another grid: 1.25 mm
    # voxels, x and y flipped (LPS), another origin and shape.
    moving_affine = np.diag([-1.25, -1.25, 1.25, 1.0])
    moving_affine[:3, 3] = (22.0, 21.0, -23.0)
    moving, moving_mask = subject(
        moving_affine,
        (36, 34, 38),
        warp=lambda p: (
            np.einsum("ij,j...->i...", np.linalg.inv(truth)[:3, :3], p)
            + np.linalg.inv(truth)[:3, 3].reshape(3, 1, 1, 1)
        ),
        name="moving.nii.gz",
    )

    reg = register(target, moving, kind="affine", engine=engine)

    assert isinstance(reg, Registration) and reg.kind == "affine" and reg.engine == engine
    # fixed world -> moving world is `truth` itself: compare where the anatomy is
    points = world_points(target.shape, target.affine)[:, target_mask > 0.5].reshape(3, -1)
    mapped = reg.world[:3, :3] @ points + reg.world[:3, 3:4]
    expected = truth[:3, :3] @ points + truth[:3, 3:4]
    assert np.abs(mapped - expected).max() < 1.0  # mm, over the organ
    warped = reg.warp(moving.array)
    assert warped.shape == target.shape and warped.dtype == np.float32
    assert np.corrcoef(warped.ravel(), target.array.ravel())[0, 1] > 0.98
    # a small organ (520 voxels) on another grid: sub-millimetre errors cost Dice
    assert dice(reg.warp(moving_mask, interpolation="nearest"), target_mask) > 0.8
    assert reg.seconds > 0 and not reg.cached
    assert "centre shift" in reg.describe() and "\n" not in reg.describe()


@pytest.mark.parametrize("engine", ENGINES)
def test_identical_subject_mask_comes_back(engine: str, fixed: tuple[Volume, np.ndarray]) -> None:
    target, target_mask = fixed
    same = Volume(target.array.copy(), target.affine, name="same.nii.gz")
    reg = register(target, same, kind="deformable", engine=engine)
    warped = reg.warp(target_mask, interpolation="nearest")
    assert set(np.unique(warped)) <= {0.0, 1.0}
    assert dice(warped, target_mask) > 0.98


@pytest.mark.parametrize("engine", ENGINES)
def test_deformable_beats_affine_on_a_deformed_phantom(
    engine: str, fixed: tuple[Volume, np.ndarray]
) -> None:
    target, target_mask = fixed
    moving, moving_mask = subject(warp=smooth_deformation, name="deformed.nii.gz")
    scores = {}
    for kind in REGISTRATION_KINDS:
        reg = register(target, moving, kind=kind, engine=engine)
        scores[kind] = dice(reg.warp(moving_mask, interpolation="nearest"), target_mask)
    assert scores["deformable"] > scores["affine"] + 0.02, scores
    assert scores["deformable"] > 0.85, scores  # ants ~0.875, sitk ~0.92 (affine ~0.82)


@pytest.mark.slow  # two ANTs deformable registrations, ~7 s or more on 2 cores
def test_registration_is_deterministic(fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    moving, _ = subject(warp=smooth_deformation, name="deformed.nii.gz")
    first = register(target, moving, kind="deformable", engine="ants")
    second = register(target, moving, kind="deformable", engine="ants")
    np.testing.assert_array_equal(first.world, second.world)
    assert first.field is not None and second.field is not None
    np.testing.assert_array_equal(first.field, second.field)


def test_a_large_offset_between_affines_is_bridged(fixed: tuple[Volume, np.ndarray]) -> None:
    target, target_mask = fixed
    far = GRID.copy()
    far[:3, 3] += (300.0, -200.0, 150.0)  # scanner coordinates far apart: no physical overlap
    moving = Volume(target.array, far, name="far.nii.gz")
    reg = register(target, moving, kind="affine", engine="ants")
    assert dice(reg.warp(target_mask, interpolation="nearest"), target_mask) > 0.95
