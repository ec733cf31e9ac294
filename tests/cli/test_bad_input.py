"""Bad input found by a sweep of the command line as an outside checker runs it.

Each case is one ``error:`` line naming the file, exit code 1, no traceback, nothing written and
no input modified. The cases where the fault showed at the command line run the installed
``medverse`` entry point in a subprocess; the others run the command in-process (CliRunner).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medverse.checkpoint.io import save_model
from medverse.cli.main import app
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

ROOT = Path(__file__).parents[2]
SHAPE = (24, 20, 16)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict[str, Path]:
    """A tiny model, a target and two context pairs (smooth blobs, mask = inner part)."""
    root = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    cfg = ModelConfig(channels=(2, 4, 4), window=16)
    save_model(root / "model", MedverseNet(cfg).state_dict(), cfg, source="test")
    grid = np.indices(SHAPE).astype(np.float32)
    rng = np.random.default_rng(0)
    files = {"model": root / "model"}
    for name, shift in (("t", 0.0), ("a", 1.0), ("b", -1.0)):
        d = sum(((g - c - shift) / r) ** 2 for g, c, r in zip(grid, (12, 10, 8), (7, 6, 5)))
        image = (np.exp(-d) * 200 + 5 * rng.random(SHAPE)).astype(np.float32)
        for suffix, array in (("", image), ("_seg", (d < 0.6).astype(np.uint8))):
            files[name + suffix] = root / f"{name}{suffix}.nii.gz"
            nib.save(nib.Nifti1Image(array, AFFINE), files[name + suffix])
    return files


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _medverse(*args: object) -> subprocess.CompletedProcess[str]:
    if shutil.which("medverse") is None:
        pytest.fail("the medverse console script is not on PATH: pip install -e .")
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["medverse", *map(str, args)], capture_output=True, text=True, timeout=300, env=env
    )


def _predict_args(case: dict[str, Path]) -> list[object]:
    return ["predict", "--no-progress", "--model", case["model"], "--align", "physical"]


def _one_error_line(text: str) -> str:
    assert "Traceback" not in text, text
    (line,) = [line for line in text.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.slow  # a subprocess that imports torch: ~10 s on 2 busy cores
def test_output_that_is_the_target_is_refused_and_the_target_kept(case, tmp_path) -> None:
    target = tmp_path / "t.nii.gz"
    shutil.copy(case["t"], target)
    before = _digest(target)
    res = _medverse(
        *_predict_args(case), "-t", target, "-c", case["a"], case["a_seg"],
        "-o", tmp_path / "." / "t.nii.gz",
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    line = _one_error_line(res.stderr)
    assert "is the input file" in line and "never overwrites its inputs" in line
    assert _digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.nii.gz"]  # no sidecar either


@pytest.mark.parametrize("which", ["target", "context mask", "context image", "uncertainty"])
def test_output_that_is_an_input_is_refused(case, tmp_path, which) -> None:
    """In-process, fast; the entry point's own run is the slow test above."""
    mask = tmp_path / "a_seg.nii.gz"
    shutil.copy(case["a_seg"], mask)
    before = _digest(mask)
    args = [*_predict_args(case), "-t", case["t"], "-c", case["a"], mask]
    if which == "target":
        args += ["-o", case["t"]]
    elif which == "context mask":
        args += ["-o", mask]
    elif which == "context image":
        args += ["-o", case["a"]]
    else:  # --uncertainty onto --output: the segmentation would be replaced by the std map
        out = tmp_path / "p.nii.gz"
        args += ["-c", case["b"], case["b_seg"], "--ensemble", "2", "-o", out]
        args += ["--uncertainty", tmp_path / "sub" / ".." / "p.nii.gz"]
    (tmp_path / "sub").mkdir()
    res = CliRunner().invoke(app, list(map(str, args)))
    assert res.exit_code == 1, res.output
    assert "never overwrites its inputs" in _one_error_line(res.output)
    assert _digest(mask) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_seg.nii.gz", "sub"]
    assert not case["t"].with_name("t.labels.json").exists()


@pytest.mark.slow  # a subprocess that imports torch
def test_mask_with_huge_labels_is_refused_naming_it(case, tmp_path) -> None:
    """1e30 is integer-valued, so the task is detected as segmentation; it used to end in an
    OverflowError traceback after the network had run."""
    mask = tmp_path / "huge.nii.gz"
    nib.save(nib.Nifti1Image(nib.load(case["a_seg"]).get_fdata().astype(np.float32) * 1e30,
                             AFFINE), mask)  # fmt: skip
    res = _medverse(
        *_predict_args(case), "-t", case["t"], "-c", case["a"], mask, "-o", tmp_path / "p.nii.gz"
    )
    assert res.returncode == 1, res.stderr
    line = _one_error_line(res.stderr)
    assert f"'{mask}': a segmentation mask holds integer labels" in line
    assert "above 2,147,483,647" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.nii.gz"]


def test_labels_above_int16_are_written_as_int32(case, tmp_path) -> None:
    """A label of 100000 used to fail at the very end (int16 output) after the whole run."""
    mask = tmp_path / "big.nii.gz"
    seg = nib.load(case["a_seg"]).get_fdata().astype(np.int32) * 100000
    nib.save(nib.Nifti1Image(seg, AFFINE), mask)
    out = tmp_path / "p.nii.gz"
    res = CliRunner().invoke(
        app,
        list(map(str, [*_predict_args(case), "-t", case["t"], "-c", case["a"], mask, "-o", out])),
    )
    assert res.exit_code == 0, res.output
    written = nib.load(out)
    assert written.get_data_dtype() == np.int32
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 100000}


def test_output_that_is_a_folder_is_refused_before_predicting(case, tmp_path) -> None:
    folder = tmp_path / "p.nii.gz"
    folder.mkdir()
    args = [*_predict_args(case), "-t", case["t"], "-c", case["a"], case["a_seg"], "-o", folder]
    res = CliRunner().invoke(app, list(map(str, args)))
    assert res.exit_code == 1, res.output
    assert f"'{folder}' is a folder; give the output file's name" in _one_error_line(res.output)
    assert "segmentation:" not in res.output  # refused before the network ran
    assert list(folder.iterdir()) == [] and sorted(tmp_path.iterdir()) == [folder]


def test_negative_seed_is_one_line(case, tmp_path) -> None:
    """Before: numpy's 'expected non-negative integer' ValueError traceback at the first draw."""
    args = [*_predict_args(case), "-t", case["t"], "-c", case["a"], case["a_seg"],
            "-c", case["b"], case["b_seg"], "--ensemble", "2", "--seed", "-1",
            "-o", tmp_path / "p.nii.gz"]  # fmt: skip
    res = CliRunner().invoke(app, list(map(str, args)))
    assert res.exit_code == 1, res.output
    assert _one_error_line(res.output) == "error: --seed must be >= 0, got -1"
    assert list(tmp_path.iterdir()) == []


def test_upper_case_output_extension_is_written(case, tmp_path) -> None:
    """Inputs named .NII.GZ were read, outputs so named refused as unsupported."""
    out = tmp_path / "P.NII.GZ"
    args = [*_predict_args(case), "-t", case["t"], "-c", case["a"], case["a_seg"], "-o", out]
    res = CliRunner().invoke(app, list(map(str, args)))
    assert res.exit_code == 0, res.output
    assert nib.load(out).shape == SHAPE


def test_a_cache_dir_that_is_a_file_is_refused(case, tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    args = ["predict", "--no-progress", "--model", case["model"], "--align", "deformable",
            "-t", case["t"], "-c", case["a"], case["a_seg"], "-o", tmp_path / "p.nii.gz",
            "--cache-dir", cache]  # fmt: skip
    res = CliRunner().invoke(app, list(map(str, args)))
    assert res.exit_code == 1, res.output
    assert _one_error_line(res.output) == f"error: registration cache '{cache}': not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
    assert cache.read_text() == "not a folder"


def test_a_folder_where_the_label_names_go_is_refused_before_predicting(case, tmp_path) -> None:
    (tmp_path / "p.labels.json").mkdir()
    args = [*_predict_args(case), "-t", case["t"], "-c", case["a"], case["a_seg"],
            "-o", tmp_path / "p.nii.gz"]  # fmt: skip
    res = CliRunner().invoke(app, list(map(str, args)))
    assert res.exit_code == 1, res.output
    line = _one_error_line(res.output)
    assert f"'{tmp_path / 'p.labels.json'}' is a folder" in line and "label names" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.labels.json"]


def test_a_target_too_thin_to_register_says_how_to_align_it(case, tmp_path) -> None:
    thin = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(nib.load(case["t"]).get_fdata()[:, :, 7:9].astype(np.float32),
                             AFFINE), thin)  # fmt: skip
    args = ["predict", "--no-progress", "--model", case["model"], "--align", "affine",
            "-t", thin, "-c", case["a"], case["a_seg"], "-o", tmp_path / "p.nii.gz"]  # fmt: skip
    res = CliRunner().invoke(app, list(map(str, args)))
    assert res.exit_code == 1, res.output
    line = _one_error_line(res.output)
    assert f"target '{thin}' has 2 voxel(s) along axis 2" in line and "--align physical" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slice.nii.gz"]
