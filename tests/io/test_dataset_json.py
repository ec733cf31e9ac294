"""``read_dataset_json``: the one reader of an nnU-Net folder's description."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medverse.errors import InputError
from medverse.io.dataset_json import read_dataset_json


def test_reads_the_object_and_a_missing_file_is_empty_unless_required(tmp_path: Path) -> None:
    assert read_dataset_json(tmp_path) == {}
    with pytest.raises(InputError, match=r"dataset\.json' not found; an nnU-Net raw dataset"):
        read_dataset_json(tmp_path, required=True)
    meta = {"labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    assert read_dataset_json(tmp_path) == meta
    assert read_dataset_json(str(tmp_path), required=True) == meta


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{labels: ", r"dataset\.json': not readable as JSON \(Expecting property name"),
        (b"\xff\xfe{}", r"dataset\.json': not readable as JSON \('utf-8' codec"),
        (b"[1, 2]", r"dataset\.json': expected a JSON object, got list"),
        (b'"text"', r"dataset\.json': expected a JSON object, got str"),
    ],
)
def test_a_broken_file_is_named_with_the_problem(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "dataset.json").write_bytes(content)
    for required in (False, True):
        with pytest.raises(InputError, match=message) as caught:
            read_dataset_json(tmp_path, required=required)
        assert str(tmp_path / "dataset.json") in str(caught.value)


def test_every_reader_of_the_description_gives_the_same_message(tmp_path: Path) -> None:
    from medverse.data.nnunet_raw import NnUNetDataset
    from medverse.evaluation.nnunet import NnunetDataset
    from medverse.io.context import Context

    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "dataset.json").write_text("[]")
    messages = set()
    for read in (Context.from_nnunet, NnunetDataset, NnUNetDataset):
        with pytest.raises(InputError) as caught:
            read(tmp_path)
        messages.add(str(caught.value))
    assert messages == {f"'{tmp_path / 'dataset.json'}': expected a JSON object, got list"}
