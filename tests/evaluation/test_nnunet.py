"""``evaluation/nnunet.py``: an nnU-Net raw folder as an evaluation dataset.

``tests/cli/test_evaluate_dataset.py`` covers v2 label names, a case resampled onto the
reference grid and the ``medverse evaluate --dataset`` report; here the rest of the folder
conventions: v1 label tables, labels read from the first label map, name cleaning, the image
family, a chosen reference, and each refusal with its message.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medverse.errors import InputError
from medverse.evaluation.nnunet import NnunetDataset

SHAPE = (6, 5, 4)


def _save(path: Path, array: np.ndarray, spacing: float = 2.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([spacing, spacing, spacing, 1.0])), path)


def _folder(root: Path, *, cases=("c1", "c0"), labels=True, meta=None, values=(0, 1, 3)) -> Path:
    rng = np.random.default_rng(0)
    for number, case in enumerate(cases):
        image = rng.random(SHAPE).astype(np.float32) + number
        _save(root / "imagesTr" / f"{case}_0000.nii.gz", image)
        if labels:
            label = np.zeros(SHAPE, np.uint8)
            for index, value in enumerate(values):
                label[index] = value
            _save(root / "labelsTr" / f"{case}.nii.gz", label)
        else:
            _save(root / "imagesTr" / f"{case}_0001.nii.gz", image * 2)
    if meta is not None:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_v1_label_table_and_cleaned_names(tmp_path) -> None:
    meta = {"labels": {"0": "background", "1": "left kidney", "3": " ?? ", "x": [1, 3]}}
    data = NnunetDataset(_folder(tmp_path, meta=meta))
    assert data.kind == "segmentation" and data.subject_ids == ("c0", "c1")
    # "left kidney" -> left_kidney; a name with nothing usable -> label_<value>; lists skipped
    assert list(data.tasks) == ["left_kidney", "label_3"]
    case = data.load_case("c1", "label_3")
    assert case.subject_id == "c1" and case.task == "label_3"
    assert case.output.dtype == np.float32
    assert case.output[2].all() and case.output.sum() == np.prod(SHAPE[1:])
    np.testing.assert_allclose(case.spacing, (2.0, 2.0, 2.0))


def test_without_a_label_table_the_first_label_map_names_the_tasks(tmp_path) -> None:
    data = NnunetDataset(_folder(tmp_path, values=(0, 2, 5)))  # no dataset.json at all
    assert list(data.tasks) == ["label_2", "label_5"]
    assert {t.family for t in data.tasks.values()} == {"segmentation"}
    assert data.describe()["name"] == tmp_path.name and data.describe()["cases"] == 2


def test_background_only_label_map_is_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="no foreground label to evaluate") as info:
        NnunetDataset(_folder(tmp_path, values=(0,)))
    assert "c0.nii.gz" in str(info.value)


def test_image_task_family_and_reference(tmp_path) -> None:
    folder = _folder(tmp_path, labels=False, meta={"name": "Denoise",
                                                   "medverse_family": "enhancement"})  # fmt: skip
    data = NnunetDataset(folder, reference="c1")
    assert data.kind == "image" and data.subject_ids == ("c0", "c1")
    assert {n: t.family for n, t in data.tasks.items()} == {"image": "enhancement"}
    described = data.describe()
    assert described["name"] == "Denoise" and "'c1'" in described["grid"]
    case = data.load_case("c0", "image")
    np.testing.assert_allclose(case.output, case.image * 2, rtol=1e-6)
    assert data.load_case("c0", "image") is not case  # a new Case, same cached arrays
    with pytest.raises(KeyError, match=r"no task 'label_1'; it has \['image'\]"):
        data.load_case("c0", "label_1")


def _unlabelled(root: Path) -> Path:
    _folder(root, cases=("c0", "c1", "c2"))
    (root / "labelsTr" / "c1.nii.gz").unlink()
    return root


def _bad_json(root: Path) -> Path:
    _folder(root)
    (root / "dataset.json").write_text("{labels: ")
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_unlabelled, "imagesTr/c1_0000.nii.gz': no label '"),
        (_bad_json, "dataset.json': not readable as JSON"),
    ],
)
def test_a_malformed_folder_is_refused_naming_the_file(tmp_path, make, message) -> None:
    """Before: an image without label was skipped without a word, a bad dataset.json was a
    JSONDecodeError traceback."""
    with pytest.raises(InputError, match=message):
        NnunetDataset(make(tmp_path / "data"))


def test_a_mask_that_is_no_label_map_is_refused_when_read(tmp_path) -> None:
    folder = _folder(tmp_path / "data", values=(0, 1, 3))
    _save(folder / "labelsTr" / "c1.nii.gz", np.full(SHAPE, 0.5, np.float32))
    data = NnunetDataset(folder)  # the label table comes from c0, the reference
    with pytest.raises(InputError, match="c1.nii.gz': a segmentation mask holds integer labels"):
        data.load_case("c1", next(iter(data.tasks)))


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda p: p.mkdir() or p, {}, "expected an nnU-Net raw folder with imagesTr/"),
        (lambda p: _folder(p), {"align": "rigid"}, "align must be one of ('affine', 'physical')"),
        (lambda p: _folder(p), {"reference": "c9"}, "reference case 'c9' is not in"),
        (
            lambda p: _folder(p, labels=False, meta={"medverse_family": "segmentation"}),
            {},
            "medverse_family must be 'transformation' or 'enhancement'",
        ),
        (
            lambda p: (p / "imagesTr").mkdir(parents=True) or p,
            {},
            "no cases (labelsTr/CASE.nii.gz for segmentation",
        ),
    ],
)
def test_refusals_name_the_problem(tmp_path, make, kwargs, message) -> None:
    folder = make(tmp_path / "data")
    with pytest.raises(InputError) as info:
        NnunetDataset(folder, **kwargs)
    assert message in str(info.value)


def test_file_ending_from_dataset_json(tmp_path) -> None:
    folder = _folder(tmp_path, meta={"file_ending": ".nii", "labels": {"organ": 1}})
    with pytest.raises(InputError, match="no cases"):  # the .nii.gz files do not count
        NnunetDataset(folder)
