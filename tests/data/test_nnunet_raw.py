"""nnU-Net raw datasets: reading, checks that name the file, preprocessing, cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medverse.data import nnunet_raw
from medverse.data.cases import Case
from medverse.data.nnunet_raw import NnUNetDataset
from medverse.data.preprocess import PreprocessConfig
from medverse.errors import InputError

# what tests/data/conftest.py writes (synthetic_spec)
SHAPE, NUM_CLASSES, NUM_SUBJECTS = (24, 24, 24), 5, 5

RAW = PreprocessConfig(orientation=None, crop_foreground=False, clip_percentiles=None)


@pytest.fixture
def broken_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset, free to damage."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "copy"))


def raw(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def test_reads_the_synthetic_dataset(synthetic_root: Path, synthetic_spec: dict) -> None:
    assert (synthetic_spec["shape"], synthetic_spec["num_classes"]) == (SHAPE, NUM_CLASSES)
    assert synthetic_spec["num_subjects"] == NUM_SUBJECTS
    dataset = NnUNetDataset(synthetic_root, preprocess=RAW)
    assert len(dataset) == NUM_SUBJECTS
    assert dataset.channel_names == ("synth0", "synth1")
    assert dataset.label_ids == tuple(range(1, NUM_CLASSES + 1))
    assert dataset.label_names[1] == "body"
    case = dataset.load_case(1)
    assert isinstance(case, Case) and case.name == "synth_0001"
    assert case.images.shape == (2, *SHAPE) and case.images.dtype == np.float32
    assert np.issubdtype(case.labels.dtype, np.integer)
    np.testing.assert_array_equal(
        case.labels, raw(synthetic_root / "labelsTr" / "synth_0001.nii.gz")
    )
    np.testing.assert_allclose(
        case.images[1], raw(synthetic_root / "imagesTr" / "synth_0001_0001.nii.gz"), atol=1e-6
    )
    assert case.spacing == (1.0, 1.0, 1.0) and case.dataset == dataset.name
    assert "Synthetic" in repr(dataset)


def test_default_preprocessing(synthetic_root: Path) -> None:
    case = NnUNetDataset(synthetic_root).load_case(0)
    assert case.images.min() == 0.0 and case.images.max() == 1.0
    assert case.labels.shape == case.images.shape[1:]


def test_reorientation_to_ras(tmp_path: Path) -> None:
    root = tmp_path / "lps"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS voxel axes
    image = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 1
    labels = (image > 60).astype(np.uint8)
    nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / "a_0000.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / "a.nii.gz")
    description = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "x": 1},
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description))
    config = PreprocessConfig(crop_foreground=False, clip_percentiles=None)
    case = NnUNetDataset(root, preprocess=config).load_case(0)
    np.testing.assert_allclose(case.images[0], image[::-1, ::-1])
    np.testing.assert_array_equal(case.labels, labels[::-1, ::-1])
    assert np.all(np.diag(case.affine)[:3] > 0)
    kept = NnUNetDataset(root, preprocess=RAW).load_case(0)
    np.testing.assert_allclose(kept.images[0], image)


def test_resampling_foreground_crop_and_clipping(broken_root: Path) -> None:
    path = broken_root / "imagesTr" / "synth_0000_0000.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj).astype(np.float32) + 0.5
    data[:3] = 0  # empty slab: cropped away
    data[10, 10, 10] = 1000.0  # hot voxel: clipped
    nib.save(nib.Nifti1Image(data, image.affine), path)
    other = broken_root / "imagesTr" / "synth_0000_0001.nii.gz"
    other_data = np.asarray(nib.load(other).dataobj).astype(np.float32)
    other_data[:3] = 0
    nib.save(nib.Nifti1Image(other_data, image.affine), other)
    label_path = broken_root / "labelsTr" / "synth_0000.nii.gz"
    label_data = np.asarray(nib.load(label_path).dataobj).copy()
    label_data[:3] = 0
    nib.save(nib.Nifti1Image(label_data, image.affine), label_path)

    cropped = NnUNetDataset(broken_root, preprocess=PreprocessConfig()).load_case(0)
    assert cropped.images.shape == (2, SHAPE[0] - 3, *SHAPE[1:])
    assert cropped.images[0].max() == 1.0
    assert np.percentile(cropped.images[0], 95) > 0.3  # the hot voxel did not squash the rest
    resampled = NnUNetDataset(
        broken_root, preprocess=PreprocessConfig(spacing=2.0, crop_foreground=False)
    )
    case = resampled.load_case(1)
    assert case.images.shape == (2, SHAPE[0] // 2, SHAPE[1] // 2, SHAPE[2] // 2)
    assert case.spacing == (2.0, 2.0, 2.0)
    assert set(np.unique(case.labels).tolist()) <= set(range(NUM_CLASSES + 1))


# ---------------------------------------------------------------------------------------------
# bad inputs: each error names the file
# ---------------------------------------------------------------------------------------------


def test_missing_dataset_json(broken_root: Path) -> None:
    (broken_root / "dataset.json").unlink()
    with pytest.raises(InputError, match=r"dataset\.json.*not found"):
        NnUNetDataset(broken_root)


def test_invalid_dataset_json(broken_root: Path) -> None:
    (broken_root / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match=r"dataset\.json': not readable as JSON"):
        NnUNetDataset(broken_root)


def test_missing_label_file(broken_root: Path) -> None:
    (broken_root / "labelsTr" / "synth_0002.nii.gz").unlink()
    with pytest.raises(InputError, match=r"label file '.*synth_0002\.nii\.gz' is missing"):
        NnUNetDataset(broken_root)
    dataset = NnUNetDataset(broken_root, require_labels=False)
    assert dataset.labeled_indices == (0, 1, 3, 4)
    assert dataset.load_case(2).labels is None


def test_missing_modality_file(broken_root: Path) -> None:
    (broken_root / "imagesTr" / "synth_0003_0001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"modality file '.*synth_0003_0001\.nii\.gz' is missing"):
        NnUNetDataset(broken_root)


def test_image_label_shape_mismatch(broken_root: Path) -> None:
    path = broken_root / "labelsTr" / "synth_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((SHAPE[0], SHAPE[1], 7), np.uint8), np.eye(4)), path)
    with pytest.raises(InputError, match=r"label '.*synth_0001\.nii\.gz' has shape \(24, 24, 7\)"):
        NnUNetDataset(broken_root)


def test_modality_shape_mismatch(broken_root: Path) -> None:
    path = broken_root / "imagesTr" / "synth_0004_0001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.eye(4)), path)
    with pytest.raises(InputError, match=r"synth_0004_0001\.nii\.gz' has shape \(5, 5, 5\)"):
        NnUNetDataset(broken_root)


def test_unknown_label_requested(synthetic_root: Path) -> None:
    with pytest.raises(InputError, match=r"dataset\.json.*unknown label 'liver'"):
        NnUNetDataset(synthetic_root, labels=["body", "liver"])
    with pytest.raises(InputError, match="unknown label 42"):
        NnUNetDataset(synthetic_root, labels=[42])
    with pytest.raises(InputError, match="no foreground"):
        NnUNetDataset(synthetic_root, labels=["background"])
    assert NnUNetDataset(synthetic_root, labels=["body", 3]).label_ids == (1, 3)


def test_unknown_label_id_in_a_label_file(broken_root: Path) -> None:
    path = broken_root / "labelsTr" / "synth_0003.nii.gz"
    image = nib.load(path)
    data = np.asarray(image.dataobj).copy()
    data[5, 5, 5] = 42
    nib.save(nib.Nifti1Image(data, image.affine), path)
    dataset = NnUNetDataset(broken_root)  # cheap checks pass; prepare() reads the values
    with pytest.raises(InputError, match=r"label '.*synth_0003\.nii\.gz' holds ids \[42\]"):
        dataset.prepare()


def test_region_based_labels_rejected(broken_root: Path) -> None:
    path = broken_root / "dataset.json"
    description = json.loads(path.read_text())
    description["labels"]["whole"] = [1, 2]
    path.write_text(json.dumps(description))
    with pytest.raises(InputError, match="region-based"):
        NnUNetDataset(broken_root)


def test_empty_after_filtering(synthetic_root: Path, broken_root: Path) -> None:
    with pytest.raises(InputError, match="no case left"):
        NnUNetDataset(synthetic_root, cases=[])
    with pytest.raises(InputError, match=r"cases \['nope'\] not found"):
        NnUNetDataset(synthetic_root, cases=["synth_0000", "nope"])
    assert NnUNetDataset(synthetic_root, cases=["synth_0003"]).case_names == ("synth_0003",)
    for path in (broken_root / "imagesTr").iterdir():
        path.unlink()
    with (
        pytest.raises(InputError, match=r"no case left in '.*imagesTr'"),
        pytest.warns(UserWarning, match="numTraining"),
    ):
        NnUNetDataset(broken_root)


def test_num_training_mismatch_warns(broken_root: Path) -> None:
    path = broken_root / "dataset.json"
    description = json.loads(path.read_text())
    description["numTraining"] = 99
    path.write_text(json.dumps(description))
    with pytest.warns(UserWarning, match="numTraining=99"):
        NnUNetDataset(broken_root)


def test_nnunet_v1_description(broken_root: Path) -> None:
    path = broken_root / "dataset.json"
    description = json.loads(path.read_text())
    description["modality"] = description.pop("channel_names")
    description["labels"] = {str(v): k for k, v in description["labels"].items()}
    path.write_text(json.dumps(description))
    dataset = NnUNetDataset(broken_root)
    assert dataset.channel_names == ("synth0", "synth1") and dataset.label_table["body"] == 1


# ---------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    original = nnunet_raw._read_image

    def counting(path: Path):
        calls.append(Path(path))
        return original(path)

    monkeypatch.setattr(nnunet_raw, "_read_image", counting)
    return calls


def test_cache_hit_avoids_reading(
    broken_root: Path, tmp_path: Path, counted_reads: list[Path]
) -> None:
    cache = tmp_path / "cache"
    first = NnUNetDataset(broken_root, cache_dir=cache).load_case(0)
    assert len(counted_reads) == 3  # two channels and the label
    again = NnUNetDataset(broken_root, cache_dir=cache)
    for _ in range(3):
        case = again.load_case(0)
    assert len(counted_reads) == 3  # served from the cache
    np.testing.assert_array_equal(case.images, first.images)
    np.testing.assert_array_equal(case.labels, first.labels)
    assert case.spacing == first.spacing and case.name == first.name
    np.testing.assert_allclose(case.affine, first.affine)

    NnUNetDataset(broken_root, cache_dir=cache, preprocess=PreprocessConfig(spacing=2.0)).load_case(
        0
    )
    assert len(counted_reads) == 6  # another configuration is another key

    label = broken_root / "labelsTr" / "synth_0000.nii.gz"
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the source changed
    again.load_case(0)
    assert len(counted_reads) == 9
    cache_files = sorted(p.name for p in again.cache_dir.glob("synth_0000-*.npz"))
    assert len(cache_files) == 1, cache_files  # the stale entry was replaced


def test_damaged_cache_file_is_rebuilt(broken_root: Path, tmp_path: Path, counted_reads) -> None:
    dataset = NnUNetDataset(broken_root, cache_dir=tmp_path / "cache")
    dataset.load_case(1)
    dataset.cache_path(1).write_bytes(b"garbage")
    case = dataset.load_case(1)
    assert len(counted_reads) == 6 and case.images.shape == (2, *SHAPE)
    dataset.load_case(1)
    assert len(counted_reads) == 6


def test_prepare_fills_the_cache(synthetic_root: Path, tmp_path: Path, counted_reads) -> None:
    dataset = NnUNetDataset(synthetic_root, cache_dir=tmp_path / "cache")
    dataset.prepare()
    assert all(dataset.cache_path(i).is_file() for i in range(len(dataset)))
    reads = len(counted_reads)
    list(dataset)
    assert len(counted_reads) == reads
