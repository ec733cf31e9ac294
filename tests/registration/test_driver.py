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


def test_an_engine_failure_names_the_file(fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    tiny = Volume(np.random.default_rng(0).random((3, 3, 3)), np.eye(4), name="tiny.nii.gz")
    with pytest.raises(InputError, match="registration onto 'target.nii.gz' failed") as info:
        register(target, tiny, kind="affine", engine="sitk")
    assert "tiny.nii.gz" in str(info.value)


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
