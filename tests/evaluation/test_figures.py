"""``evaluation/figures.py``: orientation letters and world positions read from the affine,
triplanar example figures with their legends and colour bars."""

from __future__ import annotations

import numpy as np
import pytest

from medverse.evaluation.figures import (
    build_example_figure,
    example_figure,
    orientation_letters,
    plane_views,
)
from medverse.evaluation.records import Example, TaskInfo


def _texts(axes) -> set[str]:
    return {text.get_text() for text in axes.texts}


@pytest.mark.parametrize(
    ("diagonal", "expected"),
    [
        ((1.0, 1.0, 1.0), ("R", "A", "S")),  # RAS+ (nibabel's world)
        ((-1.0, -1.0, 1.0), ("L", "P", "S")),  # LPS (DICOM/ITK voxel order)
        ((2.0, -3.0, -1.5), ("R", "P", "I")),  # one flipped axis at a time, any spacing
    ],
)
def test_orientation_letters_follow_the_affine(diagonal, expected) -> None:
    assert orientation_letters(np.diag([*diagonal, 1.0])) == expected


def test_orientation_letters_of_permuted_axes() -> None:
    # voxel axes stored as (A->P, I->S, R->L): a coronal-first volume
    affine = np.array([[0, 0, -1, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    assert orientation_letters(affine) == ("P", "S", "L")


def test_orientation_letters_refuse_a_degenerate_affine() -> None:
    with pytest.raises(ValueError, match="4x4"):
        orientation_letters(np.eye(3))


def test_plane_views_letters_and_world_positions() -> None:
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    affine[:3, 3] = (30.0, 40.0, -20.0)
    axial, coronal, sagittal = plane_views(affine, (15, 17, 13))
    # LPS voxels drawn as stored: L on the right of the axial and coronal slices, P on top
    assert (axial.name, axial.left, axial.right, axial.bottom, axial.top) == (
        "axial", "R", "L", "A", "P",
    )  # fmt: skip
    assert (coronal.name, coronal.left, coronal.right, coronal.bottom, coronal.top) == (
        "coronal", "R", "L", "I", "S",
    )  # fmt: skip
    assert (sagittal.name, sagittal.left, sagittal.right) == ("sagittal", "A", "P")
    # world = affine @ (15, 17, 13, 1) = (0, 6, 19) mm
    assert axial.position == "z = 19.0 mm"
    assert coronal.position == "y = 6.0 mm"
    assert sagittal.position == "x = 0.0 mm"


def test_plane_names_come_from_the_affine_not_the_array_axes() -> None:
    # the last voxel axis points anterior: volume[:, :, k] is a coronal slice
    affine = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    names = [view.name for view in plane_views(affine, (0, 0, 0))]
    assert names == ["coronal", "axial", "sagittal"]


def _volumes(shape=(20, 22, 14)):
    grid = np.indices(shape).astype(np.float32)
    distance = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, (10, 11, 7), (6, 6, 4)))
    image = (np.exp(-distance) * 100 + grid[0]).astype(np.float32)
    labels = (distance < 1).astype(np.uint8) + (distance < 0.3).astype(np.uint8)
    return image, labels


LPS = np.diag([-2.0, -2.0, 3.0, 1.0])


def test_segmentation_figure_has_letters_positions_and_a_legend(tmp_path) -> None:
    image, labels = _volumes()
    example = Example.from_volumes(
        TaskInfo("organs", "segmentation"), "case_1", "medverse", 0, image, labels,
        np.roll(labels, 1, axis=0), (2.0, 2.0, 3.0), affine=LPS, label_names={1: "liver"},
    )  # fmt: skip
    figure = build_example_figure(example)
    panels = [axes for axes in figure.axes if axes.get_images()]
    assert len(panels) == 3
    assert {"R", "L", "A", "P"} <= _texts(panels[0])
    assert {"R", "L", "S", "I"} <= _texts(panels[1])
    assert [axes.get_title().split(",")[0] for axes in panels] == ["axial", "coronal", "sagittal"]
    assert all(axes.get_title().endswith(" mm") for axes in panels)
    legend = {text.get_text() for legend in figure.legends for text in legend.get_texts()}
    assert {"liver", "label 2"} <= legend  # an unnamed label is called "label N"
    data = example_figure(example)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 500_000
    (tmp_path / "seg.png").write_bytes(data)


def test_binary_segmentation_legend_names_the_task() -> None:
    image, labels = _volumes()
    example = Example.from_volumes(
        TaskInfo("liver", "segmentation"), "case_1", "m", 0, image, labels > 0, labels > 1,
        (1.0, 1.0, 1.0),
    )  # fmt: skip
    legend = {t.get_text() for g in build_example_figure(example).legends for t in g.get_texts()}
    assert legend == {"reference: liver", "prediction: liver"}


@pytest.mark.parametrize("with_reference", [True, False])
def test_image_figure_has_colour_bars_and_a_difference_map(with_reference) -> None:
    image, _ = _volumes()
    reference = image * 0.5
    example = Example.from_volumes(
        TaskInfo("denoise", "enhancement"), "case_1", "medverse", 0, image,
        reference if with_reference else None, reference + 1.0, (2.0, 2.0, 3.0), affine=LPS,
    )  # fmt: skip
    figure = build_example_figure(example)
    bars = [axes for axes in figure.axes if axes.get_label() == "<colorbar>"]
    panels = [axes for axes in figure.axes if axes.get_images() and axes not in bars]
    columns = 4 if with_reference else 3
    assert len(panels) == 3 * columns and len(bars) == columns
    titles = [axes.get_title() for axes in panels]
    difference = "prediction − reference" if with_reference else "prediction − input"
    assert any(title.startswith(difference) for title in titles)
    assert all({"R", "L"} <= _texts(axes) or {"A", "P"} <= _texts(axes) for axes in panels)
    # the difference map: diverging colour map centred on 0
    (diff_image,) = [a for a in panels if a.get_title().startswith(difference)][0].get_images()
    low, high = diff_image.get_clim()
    assert diff_image.get_cmap().name == "RdBu_r" and high > 0 and low == -high
    data = example_figure(example)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 500_000
