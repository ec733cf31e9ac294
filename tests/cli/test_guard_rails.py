"""Guard rails of `medverse predict`: training-range warnings, swapped pairs, NIfTI header codes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medverse.checkpoint.factory import load_model
from medverse.checkpoint.io import save_model
from medverse.cli.main import app, cli_wording
from medverse.inference.guards import target_warnings
from medverse.io.volume import Volume
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

TRAINED_ON = {"voxel_size_mm": [3.5, 4.5], "field_of_view_mm": [192, 224, 192]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(channels=(2, 4, 4), window=16)
    out = tmp_path_factory.mktemp("model") / "tiny"
    save_model(
        out, MedverseNet(cfg).state_dict(), cfg, source="test", extra={"trained_on": TRAINED_ON}
    )
    return out


def _case(folder: Path, spacing: float, *, sform: int = 2, qform: int = 0) -> dict[str, Path]:
    """Target + 2 contexts: smooth blobs, mask = inner part; header codes as given."""
    shape = (24, 20, 16)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = (-10.0, 4.0, 2.0)
    grid = np.indices(shape).astype(np.float32)
    rng = np.random.default_rng(0)
    files = {}
    for name, shift in (("t", 0.0), ("a", 1.0), ("b", -1.0)):
        d = sum(((g - c - shift) / r) ** 2 for g, c, r in zip(grid, (12, 10, 8), (7, 6, 5)))
        img = (np.exp(-d) * 200 + 5 * rng.random(shape)).astype(np.float32)
        for suffix, array in (("", img), ("_seg", (d < 0.6).astype(np.uint8))):
            image = nib.Nifti1Image(array, affine)
            image.set_sform(affine, code=sform)
            image.set_qform(affine, code=qform)
            files[name + suffix] = folder / f"{name}{suffix}.nii.gz"
            nib.save(image, files[name + suffix])
    return files


def _predict(model_dir: Path, *args: object) -> tuple[int, str]:
    res = CliRunner().invoke(
        app, ["predict", "--no-progress", "--model", str(model_dir), *map(str, args)]
    )
    return res.exit_code, res.output


def test_model_metadata_carries_training_range(model_dir) -> None:
    assert load_model(model_dir).trained_on == TRAINED_ON
    bundled = load_model("medverse-small").trained_on
    assert bundled["voxel_size_mm"] == [3.5, 4.5]
    assert bundled["guided_voxel_size_mm"] == [1.8, 4.5]
    assert bundled["field_of_view_mm"] == [192, 224, 192]


def test_target_far_from_training_voxel_size_warns(model_dir, tmp_path) -> None:
    files = _case(tmp_path, 1.5)
    out = tmp_path / "p.nii.gz"
    code, text = _predict(model_dir, "-t", files["t"], "-c", files["a"], files["a_seg"], "-o", out)
    assert code == 0, text
    assert "warning: target" in text and "1.5x1.5x1.5 mm voxels" in text
    assert "trained on 3.5-4.5 mm voxels" in text
    assert out.is_file()  # a warning, not an error


def test_target_within_training_range_is_quiet() -> None:
    inside = Volume(np.zeros((50, 60, 50)), np.diag([4.0, 4.0, 4.0, 1.0]), name="ok")
    assert target_warnings(inside, TRAINED_ON) == []
    assert target_warnings(inside, None) == []
    small_fov = Volume(np.zeros((20, 20, 20)), np.diag([4.0, 4.0, 4.0, 1.0]), name="crop")
    (line,) = target_warnings(small_fov, TRAINED_ON)
    assert "covers 80x80x80 mm" in line and "192x224x192" in line


def test_guided_call_is_checked_against_the_guided_range() -> None:
    trained = {**TRAINED_ON, "guided_voxel_size_mm": [1.8, 4.5]}
    fine = Volume(np.zeros((96, 112, 96)), np.diag([2.0, 2.0, 2.0, 1.0]), name="fine")
    (line,) = target_warnings(fine, trained)  # unguided: 2 mm is outside 3.5-4.5 mm / 1.5
    assert "trained on 3.5-4.5 mm voxels" in line and "registration-guided" not in line
    assert target_warnings(fine, trained, guided=True) == []
    assert target_warnings(fine, TRAINED_ON, guided=True) == target_warnings(fine, TRAINED_ON)
    finer = Volume(np.zeros((192, 224, 192)), np.diag([1.0, 1.0, 1.0, 1.0]), name="finer")
    (line,) = target_warnings(finer, trained, guided=True)
    assert "trained on 1.8-4.5 mm voxels for this registration-guided call" in line


@pytest.mark.parametrize("align", ["auto", "physical"])
def test_swapped_pair_is_caught_with_a_cli_hint(model_dir, tmp_path, align) -> None:
    files = _case(tmp_path, 4.0)
    code, text = _predict(
        model_dir, "-t", files["t"], "-c", files["a_seg"], files["a"], "-o",
        tmp_path / "p.nii.gz", "--align", align,
    )  # fmt: skip
    assert code == 1, text
    assert "looks swapped" in text and "--context IMAGE OUTPUT" in text
    assert "mode=" not in text and "Traceback" not in text
    assert not (tmp_path / "p.nii.gz").exists()


def test_output_keeps_input_sform_qform_codes(model_dir, tmp_path) -> None:
    files = _case(tmp_path, 4.0, sform=2, qform=0)
    out, raw = tmp_path / "p.nii.gz", tmp_path / "raw.nii.gz"
    code, text = _predict(model_dir, "-t", files["t"], "-c", files["a"], files["a_seg"], "-o", out)
    assert code == 0, text
    code, text = _predict(
        model_dir, "-t", files["t"], "-c", files["a"], files["a_seg"], "-o", raw, "--raw"
    )
    assert code == 0, text
    target = nib.load(files["t"])
    for path in (out, raw):
        header = nib.load(path).header
        assert (int(header["sform_code"]), int(header["qform_code"])) == (2, 0)
        np.testing.assert_allclose(nib.load(path).affine, target.affine, atol=1e-5)


def test_cli_wording_names_flags() -> None:
    assert cli_wording("use mode='fov' (match) or mode='affine'") == (
        "use --align fov (match) or --align affine"
    )
    assert cli_wording("sw_batch_size must be >= 1") == "--sw-batch-size must be >= 1"
    assert cli_wording("contexts_per_draw must be in 1..3") == "--contexts-per-draw must be in 1..3"
    assert cli_wording("clip_percentiles must satisfy 0 <= low < high <= 100") == (
        "--clip-percentiles must satisfy 0 <= low < high <= 100"
    )
    assert (
        cli_wording("num_contexts must be in 1..16, got 0")
        == "--num-contexts must be in 1..16, got 0"
    )
    assert cli_wording("only 2 usable, num_contexts=4") == "only 2 usable, --num-contexts 4"
    field = "training config 'c.yaml': num_contexts must be an integer >= 1, got 0"
    assert cli_wording(field) == field  # a field of the file, not a flag
