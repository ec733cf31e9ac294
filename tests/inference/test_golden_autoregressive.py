"""autoregressive_200 golden case through the CLI: `medverse predict --raw --compat released`.

Inputs are written as NIfTI files (identity affine, decoded as the reference README says), the
reference weights go through `medverse convert`, and the raw output file is compared with the
released pipeline's output. Tolerance 1e-4 max |diff| (reference noise floor ~1e-6; the smallest
listed implementation mistake moves the output by 1e-3).
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medverse.cli.main import app
from tests.conftest import GOLDEN_WEIGHTS, golden_arrays, golden_max_diff

pytestmark = [pytest.mark.golden, pytest.mark.slow]
TOL = 1e-4


def test_cli_reproduces_released_pipeline(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["convert", str(GOLDEN_WEIGHTS), str(tmp_path / "weights")])
    assert res.exit_code == 0, res.output
    raw = golden_arrays("autoregressive_200_inputs")
    eye = np.eye(4)
    nib.save(
        nib.Nifti1Image(raw["target_in"][0, 0].astype(np.float32) / 255.0, eye),
        tmp_path / "t.nii.gz",
    )
    args = ["--model", str(tmp_path / "weights"), "--target", str(tmp_path / "t.nii.gz")]
    for i in range(raw["context_in"].shape[1]):
        nib.save(
            nib.Nifti1Image(raw["context_in"][0, i, 0].astype(np.float32) / 255.0, eye),
            tmp_path / f"i{i}.nii.gz",
        )
        nib.save(
            nib.Nifti1Image(raw["context_out"][0, i, 0].astype(np.uint8), eye),
            tmp_path / f"o{i}.nii.gz",
        )
        args += ["--context", str(tmp_path / f"i{i}.nii.gz"), str(tmp_path / f"o{i}.nii.gz")]
    out = tmp_path / "y.nii.gz"
    args += ["--output", str(out), "--raw", "--compat", "released", "--no-progress"]
    res = runner.invoke(app, ["predict", *args])
    assert res.exit_code == 0, res.output
    assert "windows 1+8" in res.output
    y = nib.load(out).get_fdata(dtype=np.float32)
    exp = golden_arrays("autoregressive_200_expected")
    assert y.shape == (200, 180, 160)
    assert golden_max_diff(y[None, None, ::2, ::2, ::2], exp, "y_s2") <= TOL
    assert golden_max_diff(y[100], exp, "y_slice_d_center") <= TOL
    assert golden_max_diff(y[:, 90], exp, "y_slice_h_center") <= TOL
    assert golden_max_diff(y[:, :, 80], exp, "y_slice_w_center") <= TOL
    assert abs(float(y.mean()) - 0.29583818663732553) <= 1e-5
    assert abs(float(y.std()) - 0.09170355373751625) <= 1e-5
