"""`medverse evaluate --dataset DIR` on a tiny nnU-Net raw folder written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medverse.checkpoint.io import save_model
from medverse.cli.main import app
from medverse.evaluation.nnunet import NnunetDataset
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

SHAPE = (20, 18, 14)


def _blob(rng: np.random.Generator, shift: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(SHAPE).astype(np.float32)
    d = sum(((g - c - shift) / r) ** 2 for g, c, r in zip(grid, (10, 9, 7), (6, 5, 4)))
    image = (np.exp(-d) * 100 + 4 * rng.random(SHAPE)).astype(np.float32)
    return image, (d < 0.6).astype(np.uint8) + (d < 0.2).astype(np.uint8)


def _dataset(root: Path, *, image_task: bool = False) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        affine = np.diag([3.0, 3.0, 3.0, 1.0])
        if i == 3:  # one case on another grid: it is resampled onto case_000's
            affine = np.diag([3.3, 3.0, 2.8, 1.0])
            affine[:3, 3] = (-1.5, 0.5, 1.0)
        image, labels = _blob(rng, 0.6 * (i - 1.5))
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        if image_task:
            smooth = (image * 0.5 + 10).astype(np.float32)
            nib.save(
                nib.Nifti1Image(smooth, affine), root / "imagesTr" / f"case_{i:03d}_0001.nii.gz"
            )
        else:
            (root / "labelsTr").mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {"name": "Tiny", "file_ending": ".nii.gz", "channel_names": {"0": "MR"}}
    if not image_task:
        meta["labels"] = {"background": 0, "outer": 1, "core": 2}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_dataset_tasks_and_common_grid(tmp_path) -> None:
    data = NnunetDataset(_dataset(tmp_path / "seg"), align="physical")
    assert data.subject_ids == ("case_000", "case_001", "case_002", "case_003")
    assert {n: t.family for n, t in data.tasks.items()} == {
        "outer": "segmentation",
        "core": "segmentation",
    }
    case = data.load_case("case_003", "core")
    assert case.image.shape == SHAPE and set(np.unique(case.output)) <= {0.0, 1.0}
    np.testing.assert_allclose(case.spacing, (3.0, 3.0, 3.0))
    image_data = NnunetDataset(_dataset(tmp_path / "img", image_task=True))
    assert {n: t.family for n, t in image_data.tasks.items()} == {"image": "transformation"}


@pytest.mark.slow  # an end-to-end evaluate run, ~10 s on 2 cores
def test_evaluate_dataset_writes_the_kit_report(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(channels=(2, 4, 4), window=16)
    save_model(tmp_path / "model", MedverseNet(cfg).state_dict(), cfg, source="test")
    for name, image_task in (("seg", False), ("img", True)):
        folder = _dataset(tmp_path / name, image_task=image_task)
        out = tmp_path / f"report_{name}"
        res = CliRunner().invoke(
            app,
            ["evaluate", "--dataset", str(folder), "--dataset-align", "physical",
             "--model", str(tmp_path / "model"), "--methods", "medverse,context_mean,identity",
             "-k", "2", "-n", "1", "--no-progress", "--output-dir", str(out)],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        for file in ("index.html", "cases.csv", "summary.md"):
            assert (out / file).is_file(), file
        with open(out / "cases.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        tasks = {"outer", "core"} if name == "seg" else {"image"}
        assert {r["task"] for r in rows} == tasks
        assert {r["target"] for r in rows} == {f"case_{i:03d}" for i in range(4)}
        assert "medverse" in {r["method"] for r in rows}
        assert {r["status"] for r in rows} == {"ok"}, [r["reason"] for r in rows]


def test_evaluate_dataset_errors(tmp_path) -> None:
    res = CliRunner().invoke(
        app, ["evaluate", "--dataset", str(tmp_path), "--output-dir", str(tmp_path / "r")]
    )
    assert res.exit_code == 1 and "nnU-Net raw folder" in res.output


def _evaluate(folder: Path, out: Path, *extra: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        app,
        ["evaluate", "--dataset", str(folder), "--dataset-align", "physical",
         "--methods", "context_mean", "--no-progress", "--output-dir", str(out), *extra],
    )  # fmt: skip
    return res.exit_code, res.output


def test_evaluate_settings_are_checked_before_any_work(tmp_path) -> None:
    folder = _dataset(tmp_path / "seg")
    for flag in ("-k", "-n"):  # before: checked after the kit was built, in Python names
        code, text = _evaluate(tmp_path / "not-read", tmp_path / "r", flag, "0")
        assert code == 1 and ("--num-contexts" if flag == "-k" else "--num-draws") in text
        assert "must be >= 1, got 0" in text and "num_contexts" not in text
    report = tmp_path / "report.html"
    report.write_text("mine")
    code, text = _evaluate(folder, report)  # before: the whole run, then "Not a directory"
    assert code == 1 and f"'{report}' exists and is not a folder" in text
    assert report.read_text() == "mine"
    code, text = _evaluate(folder, tmp_path / "r", "--tasks", "outer,liver")
    assert code == 1 and "--tasks liver: not a task of this dataset; it has outer,core" in text
    assert not (tmp_path / "r").exists()  # before: exit 0 and a report of failures


def test_evaluate_with_nothing_evaluated_exits_1(tmp_path) -> None:
    """4 cases cannot give 4 contexts to a held-out target: the report says why, exit 1."""
    code, text = _evaluate(_dataset(tmp_path / "seg"), tmp_path / "r", "-k", "4", "-n", "1")
    assert code == 1, text
    assert "error: no case could be evaluated" in text and "--num-contexts 4" in text
    assert (tmp_path / "r" / "index.html").is_file()


def test_evaluate_malformed_dataset_folder(tmp_path) -> None:
    folder = _dataset(tmp_path / "seg")
    (folder / "labelsTr" / "case_001.nii.gz").unlink()
    code, text = _evaluate(folder, tmp_path / "r")  # before: case_001 skipped without a word
    assert code == 1 and "case_001_0000.nii.gz': no label" in text
    (folder / "dataset.json").write_text("{labels: ")
    code, text = _evaluate(folder, tmp_path / "r")  # before: a JSONDecodeError traceback
    assert code == 1 and "dataset.json': not readable as JSON" in text
    assert "Traceback" not in text and not (tmp_path / "r").exists()
