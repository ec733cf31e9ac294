"""``registration/transform.py``: what a :class:`Registration` says about itself."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.io.volume import Volume
from medverse.registration.driver import register
from tests.registration.phantom import subject


def test_a_registration_that_shrinks_the_anatomy_is_doubted(
    fixed: tuple[Volume, np.ndarray],
) -> None:
    target, _ = fixed
    same = register(target, Volume(target.array.copy(), target.affine, name="same.nii.gz"))
    assert same.doubt() is None
    # the same phantom at 0.6 times the size: a registration that has to scale it by ~0.6
    small, _ = subject(target.affine, target.shape, warp=lambda p: p / 0.6, name="small.nii.gz")
    reg = register(target, small, kind="affine", engine="sitk")
    doubt = reg.doubt()
    assert doubt is not None and "'small.nii.gz'" in doubt
    low, high = (float(v) for v in re.search(r"scaled it by ([\d.]+)-([\d.]+)", doubt).groups())
    assert 0.5 < low <= high < 0.7


def test_arrays_off_the_moving_grid_and_bad_interpolations_are_refused(
    fixed: tuple[Volume, np.ndarray],
) -> None:
    target, _ = fixed
    reg = register(target, target, kind="affine", engine="sitk")
    with pytest.raises(InputError, match="expects the moving grid"):
        reg.warp(np.zeros((5, 5, 5)))
    with pytest.raises(InputError, match="interpolation must be one of"):
        reg.warp(target.array, interpolation="cubic")
