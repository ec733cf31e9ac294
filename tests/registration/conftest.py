"""Fixtures for tests/registration: the phantom on the target grid."""

from __future__ import annotations

import numpy as np
import pytest

from medverse.io.volume import Volume
from tests.registration.phantom import subject


@pytest.fixture(scope="module")
def fixed() -> tuple[Volume, np.ndarray]:
    return subject(name="target.nii.gz")
