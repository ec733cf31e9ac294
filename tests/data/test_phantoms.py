"""Synthetic phantoms: label maps, rendered images, subjects and nnU-Net folders."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medverse.data.phantoms import (
    draw_anatomy,
    make_label_map,
    make_subject,
    render_modality,
    write_synthetic_dataset,
)
from medverse.errors import InputError

SHAPE = (32, 32, 32)


@pytest.mark.parametrize("num_classes", [1, 3, 8, 12])
def test_label_map_has_every_class_and_a_body(num_classes: int) -> None:
    labels = make_label_map(SHAPE, num_classes=num_classes, rng=np.random.default_rng(1))
    assert labels.shape == SHAPE
    assert np.issubdtype(labels.dtype, np.integer)
    assert sorted(np.unique(labels).tolist()) == list(range(num_classes + 1))
    # an object in a field of view: background all around the border, body not touching it much
    border = np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel()])
    assert (border == 0).mean() > 0.5
    assert 0.05 < (labels > 0).mean() < 0.6


def test_label_map_is_deterministic_by_seed() -> None:
    a = make_label_map(SHAPE, num_classes=6, rng=np.random.default_rng(3))
    b = make_label_map(SHAPE, num_classes=6, rng=np.random.default_rng(3))
    c = make_label_map(SHAPE, num_classes=6, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shared_anatomy_gives_similar_subjects() -> None:
    anatomy = draw_anatomy(4, np.random.default_rng(0))
    maps = [
        make_label_map(SHAPE, num_classes=4, rng=np.random.default_rng(s), anatomy=anatomy)
        for s in range(3)
    ]
    unrelated = make_label_map(SHAPE, num_classes=4, rng=np.random.default_rng(99))
    same = [np.mean(maps[0] == m) for m in maps[1:]]
    assert min(same) > np.mean(maps[0] == unrelated) - 0.05
    assert all(not np.array_equal(maps[0], m) for m in maps[1:])  # but jittered


def test_render_modality_in_unit_range_and_tracks_the_table() -> None:
    rng = np.random.default_rng(0)
    labels = make_label_map(SHAPE, num_classes=4, rng=rng)
    table = np.array([0.0, 0.2, 0.4, 0.6, 0.9])
    image = render_modality(labels, rng=rng, table=table)
    assert image.dtype == np.float32 and image.shape == SHAPE
    assert image.min() >= 0.0 and image.max() <= 1.0
    means = [image[labels == k].mean() for k in range(5)]
    assert means[0] < means[1] < means[4]  # class order of the table survives blur/bias/noise


def test_make_subject_is_deterministic_and_modalities_differ() -> None:
    a = make_subject(SHAPE, num_classes=4, num_modalities=3, seed=5)
    b = make_subject(SHAPE, num_classes=4, num_modalities=3, seed=5)
    assert a.images.shape == (3, *SHAPE) and a.labels.shape == SHAPE
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.allclose(a.images[0], a.images[1])
    assert a.images.min() >= 0 and a.images.max() <= 1


def test_bad_synthesis_arguments_raise() -> None:
    with pytest.raises(InputError, match="num_classes"):
        make_label_map(SHAPE, num_classes=0, rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="shape"):
        make_label_map((8, 8), num_classes=2, rng=np.random.default_rng(0))
    with pytest.raises(InputError, match="num_modalities"):
        make_subject(SHAPE, num_classes=2, num_modalities=0, seed=0)


def test_write_synthetic_dataset_layout(tmp_path) -> None:
    root = write_synthetic_dataset(
        tmp_path / "ds", num_subjects=2, shape=(12, 10, 8), num_classes=3, num_modalities=2, seed=1
    )
    description = json.loads((root / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "synth0", "1": "synth1"}
    assert description["labels"] == {"background": 0, "body": 1, "structure_2": 2, "structure_3": 3}
    assert description["numTraining"] == 2 and description["file_ending"] == ".nii.gz"
    image = nib.load(root / "imagesTr" / "synth_0001_0001.nii.gz")
    label = nib.load(root / "labelsTr" / "synth_0001.nii.gz")
    assert image.shape == label.shape == (12, 10, 8)
    assert not np.allclose(image.affine, np.eye(4))  # non-identity affine, as real data
    assert sorted(np.unique(np.asarray(label.dataobj)).tolist()) == [0, 1, 2, 3]
    again = write_synthetic_dataset(
        tmp_path / "again",
        num_subjects=2,
        shape=(12, 10, 8),
        num_classes=3,
        num_modalities=2,
        seed=1,
    )
    np.testing.assert_array_equal(
        nib.load(again / "imagesTr" / "synth_0001_0001.nii.gz").get_fdata(), image.get_fdata()
    )
