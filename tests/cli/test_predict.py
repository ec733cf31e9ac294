"""`medverse predict` end to end on small files: shapes, affines, tasks, and every bad input."""

from __future__ import annotations

import gzip
import json
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

AFFINE = np.array([[-0.8, 0, 0, 10.0], [0, 1.2, 0, -5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])


def _blob(shape, center, radius) -> np.ndarray:
    grid = np.indices(shape).astype(np.float32)
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radius))
    return d


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(channels=(2, 4, 4), window=16)
    net = MedverseNet(cfg)
    out = tmp_path_factory.mktemp("model") / "tiny"
    save_model(out, net.state_dict(), cfg, source="test")
    return out


@pytest.fixture
def case(tmp_path) -> dict[str, Path]:
    shape = (30, 26, 12)
    rng = np.random.default_rng(0)
    files = {}
    for name, c in (("t", (15, 13, 6)), ("a", (14, 12, 6)), ("b", (16, 14, 5))):
        d = _blob(shape, c, (8, 7, 4))
        img = (np.exp(-d) + 0.05 * rng.random(shape)).astype(np.float32) * 300
        files[name] = _save(tmp_path / f"{name}.nii.gz", img)
        labels = (d < 1).astype(np.uint8) + (d < 0.3).astype(np.uint8)  # labels 1 and 2
        files[name + "_seg"] = _save(tmp_path / f"{name}_seg.nii.gz", labels)
    return files


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["predict", "--no-progress", *map(str, args)])
    return res.exit_code, res.output


def test_multilabel_segmentation_keeps_affine(case, model_dir, tmp_path) -> None:
    out = tmp_path / "pred.nii.gz"
    code, text = run(
        "--model",
        model_dir,
        "--target",
        case["t"],
        "-c",
        case["a"],
        case["a_seg"],
        "-c",
        case["b"],
        case["b_seg"],
        "--output",
        out,
    )
    assert code == 0, text
    assert "classes 2" in text and "contexts 2" in text
    img = nib.load(out)
    assert img.shape == (30, 26, 12)
    assert np.allclose(img.affine, AFFINE, atol=1e-5)
    assert set(np.unique(np.asarray(img.dataobj))) <= {0, 1, 2}


def test_image_task_raw_and_ensemble(case, model_dir, tmp_path) -> None:
    out, unc = tmp_path / "pred.nrrd", tmp_path / "std.nii.gz"
    code, text = run(
        "--model",
        model_dir,
        "--target",
        case["t"],
        "-c",
        case["a"],
        case["b"],
        "-c",
        case["b"],
        case["a"],
        "--output",
        out,
        "--task",
        "image",
        "--ensemble",
        "2",
        "--uncertainty",
        unc,
    )
    assert code == 0, text
    assert "image:" in text and "draws 2" in text and "calibrated [" in text
    assert out.is_file() and unc.is_file()
    plain = tmp_path / "plain.nii.gz"
    code, text = run(
        "--model", model_dir, "--target", case["t"], "-c", case["a"], case["b"],
        "-c", case["b"], case["a"], "--output", plain, "--task", "image", "--no-calibrate",
    )  # fmt: skip
    assert code == 0, text
    assert "calibrated" not in text and plain.is_file()


def test_context_on_other_grid_is_resampled_and_reported(case, model_dir, tmp_path) -> None:
    img = nib.load(case["a"]).get_fdata(dtype=np.float32)[::2, ::2]
    seg = np.asarray(nib.load(case["a_seg"]).dataobj)[::2, ::2]
    coarse = AFFINE.copy()
    coarse[:2, :2] *= 2
    a2, s2 = _save(tmp_path / "a2.nii.gz", img, coarse), _save(tmp_path / "s2.nii.gz", seg, coarse)
    out = tmp_path / "pred.nii.gz"
    code, text = run("--model", model_dir, "--target", case["t"], "-c", a2, s2, "--output", out)
    assert code == 0, text
    assert "resampled from (15,13,12)" in text
    code, text = run(
        "--model",
        model_dir,
        "--target",
        case["t"],
        "-c",
        a2,
        s2,
        "--output",
        tmp_path / "p2.nii.gz",
        "--no-resample",
    )
    assert code == 1 and "a2.nii.gz" in text and not (tmp_path / "p2.nii.gz").exists()


def _bad_inputs(case, tmp_path):  # noqa: ANN202
    shape = (30, 26, 12)
    nan = np.ones(shape, np.float32)
    nan[3, 3, 3] = np.nan
    two_d = _save(tmp_path / "flat.nii.gz", np.ones((30, 26), np.float32))
    four_d = _save(
        tmp_path / "multi.nii.gz",
        np.random.default_rng(0).random((30, 26, 12, 3)).astype(np.float32),
    )
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(case["t"].read_bytes()[:200])
    return {
        "2-D target": (["--target", two_d], "flat.nii.gz"),
        "4-D target": (["--target", four_d], "multi.nii.gz"),
        "NaN target": (["--target", _save(tmp_path / "nan.nii.gz", nan)], "nan.nii.gz"),
        "constant target": (
            ["--target", _save(tmp_path / "const.nii.gz", np.ones(shape, np.float32))],
            "const.nii.gz",
        ),
        "truncated": (["--target", truncated], "cut.nii.gz"),
        "missing": (["--target", tmp_path / "nope.nii.gz"], "nope.nii.gz"),
        "empty mask": (
            [
                "--target",
                case["t"],
                "-c",
                case["a"],
                _save(tmp_path / "empty.nii.gz", np.zeros(shape, np.uint8)),
            ],
            "empty.nii.gz",
        ),
    }


@pytest.mark.parametrize(
    "which",
    [
        "2-D target",
        "4-D target",
        "NaN target",
        "constant target",
        "truncated",
        "missing",
        "empty mask",
    ],
)
def test_bad_input_one_message_no_output(case, model_dir, tmp_path, which) -> None:
    args, name = _bad_inputs(case, tmp_path)[which]
    if "-c" not in args:
        args = [*args, "-c", case["a"], case["a_seg"]]
    out = tmp_path / "out.nii.gz"
    code, text = run("--model", model_dir, *args, "--output", out)
    assert code == 1, text
    assert text.startswith("error: ") and name in text
    assert "Traceback" not in text
    assert not out.exists()


def test_missing_output_folder_and_unpaired_context(case, model_dir, tmp_path) -> None:
    code, text = run(
        "--model",
        model_dir,
        "--target",
        case["t"],
        "-c",
        case["a"],
        case["a_seg"],
        "--output",
        tmp_path / "nowhere" / "p.nii.gz",
    )
    assert code == 1 and "does not exist" in text
    code, text = run(
        "--model",
        model_dir,
        "--target",
        case["t"],
        "--output",
        tmp_path / "p.nii.gz",
        "-c",
        case["a"],
    )
    assert code == 2 and "requires 2 arguments" in text  # an image without its output
    code, text = run(
        "--model",
        model_dir,
        "--target",
        case["t"],
        "-c",
        case["a"],
        "--raw",
        "--output",
        tmp_path / "p.nii.gz",
    )
    # a usage error before anything loads (it was found after the model was loaded, exit 1)
    assert code == 2 and "requires 2 files, got the option '--raw' among them" in text
    assert not (tmp_path / "p.nii.gz").exists()


def test_out_of_memory_names_the_knobs(case, model_dir, tmp_path, monkeypatch) -> None:
    import medverse.inference.driver as driver

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(driver, "predict_window", boom)
    out = tmp_path / "p.nii.gz"
    code, text = run(
        "--model", model_dir, "--target", case["t"], "-c", case["a"], case["a_seg"], "--output", out
    )
    assert code == 1 and "--context-batch" in text and "--sw-batch-size" in text
    assert not out.exists()


def test_unreadable_gzip_is_not_a_traceback(tmp_path, model_dir, case) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti at all" * 10))
    code, text = run(
        "--model",
        model_dir,
        "--target",
        bad,
        "-c",
        case["a"],
        case["a_seg"],
        "--output",
        tmp_path / "o.nii.gz",
    )
    assert code == 1 and "bad.nii.gz" in text


@pytest.mark.slow
def test_predict_align_deformable_through_the_entry_point(tmp_path) -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2] / "examples" / "synthetic"
    out = tmp_path / "pred.nii.gz"
    cmd = [
        "medverse", "predict", "--target", str(root / "target.nii.gz"),
        "--contexts-from", str(root / "contexts"), "--align", "deformable",
        "--cache-dir", str(tmp_path / "cache"), "--output", str(out),
    ]  # fmt: skip
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "stacked: local logistic model" in first.stderr
    assert "registration-guided" in first.stdout
    assert out.is_file() and any((tmp_path / "cache").rglob("*"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("; cached") >= 3  # every context's registration read back


@pytest.mark.parametrize("which", ["constant", "far away"])
def test_align_deformable_context_that_cannot_be_registered(
    case, model_dir, tmp_path, which
) -> None:
    shape = (30, 26, 12)
    if which == "constant":
        bad = _save(tmp_path / "bad.nii.gz", np.full(shape, 7.0, np.float32))
    else:  # the image lies 5 m from the target: no overlap to register on
        far = AFFINE.copy()
        far[:3, 3] += 5000.0
        bad = _save(tmp_path / "bad.nii.gz", nib.load(case["a"]).get_fdata(), far)
    out = tmp_path / "out.nii.gz"
    code, text = run(
        "--model", model_dir, "--target", case["t"], "-c", case["b"], case["b_seg"],
        "-c", bad, case["a_seg"], "--align", "deformable", "--no-cache", "--output", out,
    )  # fmt: skip
    assert code == 1, text
    assert text.startswith("error: ") and "bad.nii.gz" in text, text
    assert "Traceback" not in text
    assert not out.exists() and not list(tmp_path.glob("out*"))


def _entry_point(*args: object) -> subprocess.CompletedProcess[str]:
    """The installed ``medverse predict`` in a subprocess, one thread."""
    if shutil.which("medverse") is None:
        pytest.fail("the medverse console script is not on PATH: pip install -e .")
    return subprocess.run(
        ["medverse", "predict", "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


@pytest.mark.slow
def test_label_name_sidecar_beside_segmentations_not_images(case, model_dir, tmp_path) -> None:
    dataset = tmp_path / "Dataset001"
    for folder in ("imagesTr", "labelsTr"):
        (dataset / folder).mkdir(parents=True)
    for name in ("a", "b"):
        shutil.copy(case[name], dataset / "imagesTr" / f"{name}_0000.nii.gz")
        shutil.copy(case[name + "_seg"], dataset / "labelsTr" / f"{name}.nii.gz")
    meta = {"labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}  # 2 is unnamed
    (dataset / "dataset.json").write_text(json.dumps(meta))
    named = tmp_path / "seg.nii.gz"
    res = _entry_point(
        "--model", model_dir, "--target", case["t"], "--contexts-from", dataset, "--output", named
    )
    assert res.returncode == 0, res.stderr
    sidecar = tmp_path / "seg.labels.json"
    assert json.loads(sidecar.read_text()) == {"0": "background", "1": "liver", "2": "label 2"}
    assert str(sidecar) in res.stdout  # listed with the files written
    # contexts given as pairs: no names, "label N"; a second output in the folder keeps its own
    plain = tmp_path / "case_001.nrrd"
    res = _entry_point(
        "--model", model_dir, "--target", case["t"], "-c", case["a"], case["a_seg"],
        "--output", plain,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "case_001.labels.json").read_text()) == {
        "0": "background", "1": "label 1", "2": "label 2",
    }  # fmt: skip
    assert json.loads(sidecar.read_text())["1"] == "liver"
    # an image output gets none
    image = tmp_path / "image.nii.gz"
    res = _entry_point(
        "--model", model_dir, "--target", case["t"], "-c", case["a"], case["b"],
        "--task", "image", "--output", image,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert image.is_file() and not (tmp_path / "image.labels.json").exists()
    assert not list(tmp_path.glob(".tmp-*"))
