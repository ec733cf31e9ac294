"""``registration/driver.py``: :func:`register` refuses bad inputs and options, and its failures
name the moving volume."""

from __future__ import annotations

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.io.volume import Volume
from medverse.registration.driver import register
from medverse.registration.settings import ENGINES, RegistrationSettings
from tests.registration.phantom import smooth_deformation, subject


@pytest.mark.parametrize("engine", ENGINES)
def test_a_constant_context_names_the_file(engine: str, fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    constant = Volume(np.full((20, 20, 20), 3.0), np.eye(4), name="ctx_007.nii.gz")
    with pytest.raises(InputError, match="constant image") as info:
        register(target, constant, engine=engine)
    assert "ctx_007.nii.gz" in str(info.value)
    spot = np.zeros((20, 20, 20), np.float32)
    spot[0, 0, 0] = 1.0
    with pytest.raises(InputError, match="almost constant") as info:
        register(target, Volume(spot, np.eye(4), name="spot.nii.gz"), engine=engine)
    assert "spot.nii.gz" in str(info.value)


def test_an_engine_failure_names_the_file_in_one_line(
    fixed: tuple[Volume, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import medverse.registration.driver as driver

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("Exception thrown in SimpleITK\nITK ERROR: the filter\n  gave up")

    monkeypatch.setitem(driver._AFFINE, "sitk", broken)
    target, _ = fixed
    moving = Volume(target.array[::-1].copy(), target.affine, name="moving.nii.gz")
    with pytest.raises(InputError, match="registration onto 'target.nii.gz' failed") as info:
        register(target, moving, kind="affine", engine="sitk")
    assert "moving.nii.gz" in str(info.value)
    assert "\n" not in str(info.value) and "ITK ERROR: the filter gave up" in str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("role", ["target", "context"])
def test_a_volume_too_thin_to_register_is_refused_before_the_engine(
    fixed: tuple[Volume, np.ndarray], engine: str, role: str
) -> None:
    target, _ = fixed
    thin = Volume(target.array[:, :, 10:13].copy(), target.affine, name="thin.nii.gz")
    pair = (thin, target) if role == "target" else (target, thin)
    with pytest.raises(InputError) as info:
        register(*pair, kind="affine", engine=engine)
    message = str(info.value)
    assert "thin.nii.gz" in message and "3 voxel(s) along axis 2" in message
    assert "at least 4 along every axis" in message and "mode='physical'" in message


def test_no_overlap_after_registration_names_the_file(
    fixed: tuple[Volume, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration that ends with the context outside the target grid is an error."""
    from medverse.registration import driver

    target, _ = fixed
    moving, _ = subject(warp=smooth_deformation, name="lost.nii.gz")

    def diverged(fixed: Volume, moving: Volume, settings: RegistrationSettings) -> np.ndarray:
        world = np.eye(4)
        world[:3, 3] = (500.0, 0.0, 0.0)
        return world

    monkeypatch.setitem(driver._AFFINE, "ants", diverged)
    with pytest.raises(InputError, match="does not overlap") as info:
        register(target, moving, kind="affine", engine="ants")
    assert "lost.nii.gz" in str(info.value)


def test_bad_options_are_refused(fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    with pytest.raises(InputError, match="kind must be one of 'affine', 'deformable'"):
        register(target, target, kind="rigid")
    with pytest.raises(InputError, match="engine must be one of 'ants', 'sitk'"):
        register(target, target, engine="elastix")
