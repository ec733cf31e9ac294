"""``inference/guards.py``: target_warnings against a model's ``trained_on`` metadata.

The CLI side (``warning:`` lines of ``medverse predict``, the guided range of the bundled model) is
in ``tests/cli/test_guard_rails.py``; here the function itself: its tolerance edges, sorted
field-of-view axes, the message contents, and metadata that is missing or partial.
"""

from __future__ import annotations

import numpy as np
import pytest

from medverse.inference.guards import FOV_TOLERANCE, SPACING_TOLERANCE, target_warnings
from medverse.io.volume import Volume

VOXELS = {"voxel_size_mm": [3.5, 4.5]}
FOV = {"field_of_view_mm": [192, 224, 192]}


def _volume(spacing, shape=(8, 8, 8), name="t") -> Volume:
    return Volume(np.zeros(shape, np.float32), np.diag([*spacing, 1.0]), name=name)


@pytest.mark.parametrize("trained_on", [None, {}])
def test_no_metadata_checks_nothing(trained_on) -> None:
    assert target_warnings(_volume((0.1, 0.1, 0.1)), trained_on) == []
    assert target_warnings(_volume((0.1, 0.1, 0.1)), trained_on, guided=True) == []


@pytest.mark.parametrize(
    ("spacing", "warns"),
    [
        # the band is [3.5 / 1.5, 4.5 * 1.5] = [2.333, 6.75] mm, edges included
        (3.5 / SPACING_TOLERANCE, False),
        (4.5 * SPACING_TOLERANCE, False),
        (3.5 / SPACING_TOLERANCE - 0.01, True),
        (4.5 * SPACING_TOLERANCE + 0.01, True),
    ],
)
def test_voxel_size_tolerance_edges(spacing, warns) -> None:
    lines = target_warnings(_volume((spacing,) * 3), VOXELS)
    assert len(lines) == int(warns), lines


def test_one_axis_out_of_range_is_enough_and_the_message_names_everything() -> None:
    (line,) = target_warnings(_volume((4.0, 4.0, 8.0), name="scan.nii.gz"), VOXELS)
    assert line.startswith("target 'scan.nii.gz' has 4x4x8 mm voxels;")
    assert "trained on 3.5-4.5 mm voxels, so expect worse results" in line
    assert "resample the target" in line  # what to do
    assert "registration-guided" not in line


def test_unordered_voxel_range_is_read_as_low_high() -> None:
    assert target_warnings(_volume((4.0,) * 3), {"voxel_size_mm": [4.5, 3.5]}) == []
    (line,) = target_warnings(_volume((1.0,) * 3), {"voxel_size_mm": [4.5, 3.5]})
    assert "3.5-4.5 mm" in line


def test_guided_range_only_when_given_and_guided() -> None:
    trained = {**VOXELS, "guided_voxel_size_mm": [1.0, 2.0]}
    fine = _volume((1.5, 1.5, 1.5))
    assert len(target_warnings(fine, trained)) == 1
    assert target_warnings(fine, trained, guided=True) == []
    coarse = _volume((4.0, 4.0, 4.0))
    (line,) = target_warnings(coarse, trained, guided=True)
    assert "trained on 1-2 mm voxels for this registration-guided call" in line
    # an empty guided range falls back to the plain one (and says nothing of guidance)
    (line,) = target_warnings(fine, {**VOXELS, "guided_voxel_size_mm": []}, guided=True)
    assert "3.5-4.5 mm voxels," in line


def test_field_of_view_compares_sorted_axes() -> None:
    # 100 x 400 x 100 mm in another axis order is the same extent: no warning (axis by axis
    # the ratios would be 4 and 0.25)
    permuted = _volume((4.0, 4.0, 4.0), shape=(100, 25, 25))
    assert target_warnings(permuted, {"field_of_view_mm": [100, 400, 100]}) == []
    # sorted extent ratios (0.25, 1, 1.17): the short axis is below 1 / FOV_TOLERANCE
    short = _volume((4.0, 4.0, 4.0), shape=(12, 56, 48))
    (line,) = target_warnings(short, FOV)
    assert "covers 48x224x192 mm" in line and "about 192x224x192 mm" in line
    assert "crop or pad the target" in line


@pytest.mark.parametrize(
    ("factor", "warns"),
    [(1 / FOV_TOLERANCE, False), (FOV_TOLERANCE, False), (0.45, True), (2.1, True)],
)
def test_field_of_view_tolerance_edges(factor, warns) -> None:
    shape = (20, 20, 20)
    fov = {"field_of_view_mm": [80 / factor] * 3}  # the target covers 80 mm per axis
    assert len(target_warnings(_volume((4.0,) * 3, shape=shape), fov)) == int(warns)


def test_anatomy_is_named_and_both_checks_report() -> None:
    trained = {**VOXELS, **FOV, "anatomy": "adult head"}
    lines = target_warnings(_volume((1.0, 1.0, 1.0), shape=(20, 20, 20)), trained)
    assert len(lines) == 2
    assert "voxels" in lines[0] and "(adult head)" in lines[1]
    assert "(adult head)" not in target_warnings(_volume((1.0,) * 3, (20,) * 3), FOV)[0]
