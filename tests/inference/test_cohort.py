"""``inference/cohort.py``: target discovery, sharding, the per-rank logs and their merge.

``tests/cli/test_cohort.py`` runs whole cohorts through ``medverse predict`` (a tiny network,
resume, two ranks, a killed run); here each function on its own with a stand-in predictor, so
the edge cases (nnU-Net channel files, CSV problems, failures, the merge rules) cost
milliseconds.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.inference.cohort import (
    LOG_FOLDER,
    SUMMARY_NAME,
    CohortItem,
    discover_targets,
    merge_summary,
    run_cohort,
    shard_items,
)


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def _segmentation(array: np.ndarray, spacing: float = 2.0, std=None) -> SimpleNamespace:
    return SimpleNamespace(
        task="segmentation",
        array=array,
        labels=[1, 2],
        affine=np.diag([spacing, spacing, spacing, 1.0]),
        std=std,
    )


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- discover_targets -----------------------------------------------------------------------


def test_folder_targets_sorted_with_output_extensions(tmp_path) -> None:
    src = _touch(tmp_path / "in", "b.nrrd", "a.nii.gz", "c.mhd", "c.raw", "notes.txt", ".d.nii")
    (src / "sub.nii.gz").mkdir()  # a folder is not a target
    items = discover_targets(src, tmp_path / "out")
    assert [i.case for i in items] == ["a", "b", "c"]
    assert [i.output.name for i in items] == ["a.nii.gz", "b.nrrd", "c.nii.gz"]  # .mhd -> .nii.gz
    assert items[0] == CohortItem("a", src / "a.nii.gz", tmp_path / "out" / "a.nii.gz")


def test_nnunet_channel_files_keep_channel_0000_only(tmp_path) -> None:
    src = _touch(tmp_path / "imagesTs", "x_0000.nii.gz", "x_0001.nii.gz", "y_0000.nii.gz")
    items = discover_targets(src, tmp_path / "out")
    assert [(i.case, i.target.name, i.output.name) for i in items] == [
        ("x", "x_0000.nii.gz", "x.nii.gz"),
        ("y", "y_0000.nii.gz", "y.nii.gz"),
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _touch(p / "empty", "readme.txt"), "no volume files (.nii.gz"),
        (lambda p: p / "missing", "no such folder or CSV file"),
        (lambda p: _touch(p, "list.txt") / "list.txt", "takes a folder of volumes or a .csv"),
    ],
)
def test_bad_sources_name_the_path(tmp_path, make, message) -> None:
    source = make(tmp_path)
    with pytest.raises(InputError, match="'" + str(source).replace("\\", "\\\\")) as info:
        discover_targets(source, tmp_path / "out")
    assert message in str(info.value)


def test_an_output_that_is_a_target_is_refused(tmp_path) -> None:
    """--output-dir the targets' own folder: each output would replace its target."""
    src = _touch(tmp_path / "in", "a.nii.gz", "b.nrrd")
    with pytest.raises(InputError, match="never overwrites its inputs") as info:
        discover_targets(src, src)
    a = src / "a.nii.gz"
    assert f"'{a}': the output of target '{a}' is the input file '{a}'" in str(info.value)
    listing = tmp_path / "list.csv"
    listing.write_text(f"target,output\n{src / 'a.nii.gz'},{src / 'b.nrrd'}\n{src / 'b.nrrd'},\n")
    with pytest.raises(InputError, match="the output of target '.*a.nii.gz' is the input file"):
        discover_targets(listing, tmp_path / "out")  # a's output is the target b


def test_csv_relative_paths_and_outputs(tmp_path) -> None:
    listing = tmp_path / "lists" / "cohort.csv"
    listing.parent.mkdir()
    listing.write_text(
        " Target , OUTPUT\n"
        "scans/p1_0000.nii.gz,\n"
        f"{tmp_path / 'abs' / 'p2.nrrd'},renamed.nii.gz\n"
        f"p3.mha,{tmp_path / 'elsewhere' / 'p3_seg.nii.gz'}\n"
    )
    out = tmp_path / "out"
    items = discover_targets(listing, out)
    assert items == [
        CohortItem("p1", listing.parent / "scans" / "p1_0000.nii.gz", out / "p1.nii.gz"),
        CohortItem("p3_seg", listing.parent / "p3.mha", tmp_path / "elsewhere" / "p3_seg.nii.gz"),
        CohortItem("renamed", tmp_path / "abs" / "p2.nrrd", out / "renamed.nii.gz"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image,output\na.nii.gz,b.nii.gz\n", "expected a header with a 'target' column"),
        ("target\na.nii.gz\n\n,\n", "line 3: empty target"),
        ("target\n", "no targets listed"),
    ],
)
def test_csv_problems_name_the_file(tmp_path, text, message) -> None:
    listing = tmp_path / "cohort.csv"
    listing.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        discover_targets(listing, tmp_path / "out")
    assert str(listing) in str(info.value)


def test_two_targets_with_one_output_are_refused(tmp_path) -> None:
    src = _touch(tmp_path / "in", "a.nhdr", "a.mhd")  # both written as a.nii.gz
    with pytest.raises(InputError, match="would both write") as info:
        discover_targets(src, tmp_path / "out")
    assert "'a'" in str(info.value) and "give distinct outputs" in str(info.value)


# -- shard_items ----------------------------------------------------------------------------


def test_shards_partition_the_cohort_in_order() -> None:
    items = [CohortItem(c, Path(c), Path(c)) for c in "abcdefg"]
    shards = [shard_items(items, rank, 3) for rank in range(3)]
    assert [[i.case for i in s] for s in shards] == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    assert shard_items(items, 0, 1) == items


# -- run_cohort and merge_summary -----------------------------------------------------------


def _items(tmp_path: Path, *cases: str) -> list[CohortItem]:
    return [
        CohortItem(c, tmp_path / "in" / f"{c}.nii.gz", tmp_path / "out" / f"{c}.nii.gz")
        for c in cases
    ]


def _save(result, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("written")


def test_run_measures_skips_and_records_failures(tmp_path) -> None:
    items = _items(tmp_path, "a", "b", "c", "d")
    items[1].output.parent.mkdir(parents=True)
    items[1].output.write_text("from an earlier run")
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[:2] = 1
    labels[0, 0, 0] = 2
    std = np.full((2, 4, 4, 4), 0.1, np.float32)
    std[1] = 0.3  # uncertainty_mean is the mean over voxels of the largest std over classes

    def predict(path: Path):
        if path.name.startswith("c"):
            raise InputError(f"'{path}': unreadable")
        if path.name.startswith("d"):
            raise RuntimeError("boom")
        return _segmentation(labels, std=std)

    echoed: list[str] = []
    rows = run_cohort(predict, items, tmp_path / "out", save=_save, progress=False,
                      echo=echoed.append)  # fmt: skip
    assert [r["status"] for r in rows] == ["done", "exists", "failed", "failed"]
    a = rows[0]
    assert (a["voxels_1"], a["voxels_2"]) == (31, 1)
    assert a["volume_ml_1"] == pytest.approx(31 * 8 / 1000)
    assert a["uncertainty_mean"] == pytest.approx(0.3)
    assert items[1].output.read_text() == "from an earlier run"  # not redone
    assert rows[2]["error"] == f"'{items[2].target}': unreadable"
    assert rows[3]["error"] == "RuntimeError: boom"  # a stray error names its type
    assert echoed == [f"failed: {items[2].target}: {rows[2]['error']}",
                      f"failed: {items[3].target}: RuntimeError: boom"]  # fmt: skip
    assert (tmp_path / "out" / LOG_FOLDER / "summary-rank0.csv").is_file()


def test_overwrite_redoes_and_image_rows_have_intensity_numbers(tmp_path) -> None:
    (item,) = _items(tmp_path, "a")
    _save(None, item.output)
    image = SimpleNamespace(task="image", array=np.array([[[-1.0, 3.0]]]), std=None)
    (row,) = run_cohort(lambda p: image, [item], tmp_path / "out", save=_save, overwrite=True,
                        progress=False)  # fmt: skip
    assert row["status"] == "done" and row["task"] == "image"
    assert (row["output_min"], row["output_max"], row["output_mean"]) == (-1.0, 3.0, 1.0)
    assert "uncertainty_mean" not in row


def test_rank_takes_its_share_and_writes_its_own_log(tmp_path) -> None:
    items = _items(tmp_path, "a", "b", "c")
    seen: list[str] = []

    def predict(path: Path):
        seen.append(path.name)
        return _segmentation(np.zeros((2, 2, 2), np.uint8))

    rows = run_cohort(predict, items, tmp_path / "out", save=_save, rank=1, world_size=2,
                      progress=False)  # fmt: skip
    assert seen == ["b.nii.gz"] and [r["case"] for r in rows] == ["b"]
    assert [p.name for p in (tmp_path / "out" / LOG_FOLDER).iterdir()] == ["summary-rank1.csv"]


def test_merge_keeps_latest_record_and_the_measurements_of_the_run_that_wrote(tmp_path) -> None:
    out = tmp_path / "out"
    items = _items(tmp_path, "a", "b", "c")
    labels = np.ones((2, 2, 2), np.uint8)
    run_cohort(lambda p: _segmentation(labels), items[:2], out, save=_save, progress=False)

    def failing(path: Path):
        raise InputError("bad header")

    # later runs: rank 1 of 2 (its own log) redoes b, which fails; a rerun finds a's output
    run_cohort(failing, items, out, save=_save, rank=1, world_size=2, overwrite=True,
               progress=False)  # fmt: skip
    run_cohort(failing, items[:1], out, save=_save, progress=False)
    summary, counts = merge_summary(out, items)
    assert summary == out / SUMMARY_NAME
    assert counts == {"exists": 1, "failed": 1, "missing": 1}
    rows = _read(summary)
    assert [(r["case"], r["status"]) for r in rows] == [
        ("a", "exists"), ("b", "failed"), ("c", "missing"),
    ]  # fmt: skip
    assert rows[0]["voxels_1"] == "8" and rows[0]["task"] == "segmentation"  # from the done run
    assert rows[1]["error"] == "bad header" and rows[1]["voxels_1"] == ""
    header = list(rows[0])
    assert header[:6] == ["case", "target", "output", "status", "seconds", "task"]
    assert header[-2:] == ["uncertainty_mean", "error"] and "finished" not in header
    assert not list(out.glob(".tmp*"))
