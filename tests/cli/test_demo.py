"""`medverse demo`: the bundled model on a packaged real-anatomy case (reduced settings here)."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medverse.checkpoint.model_registry import get_spec
from medverse.cli.main import app
from medverse.demo import DEMO_STRUCTURES

needs_weights = pytest.mark.skipif(
    get_spec("medverse-small").weights is None, reason="no packaged weights"
)


@pytest.mark.slow
@needs_weights
def test_demo_writes_outputs_figures_page_and_scores(tmp_path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(
        app, ["demo", "--output-dir", str(out), "--num-contexts", "2", "--spacing", "6"]
    )
    assert res.exit_code == 0, res.output
    assert "Dice" in res.output and "PSNR" in res.output and "total" in res.output
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["config"]["shape"] == [32, 37, 32]
    assert len(summary["subjects"]) == 3
    metrics = summary["metrics"]
    assert set(metrics) == {t.removesuffix("_aal") for t in DEMO_STRUCTURES.values()} | {
        "denoise_gaussian"
    }
    for task, values in metrics.items():
        for name, value in values.items():
            assert math.isfinite(value), (task, name)
            if name.startswith("dice"):
                assert 0.0 <= value <= 1.0
    # the baselines are computed, not copied: the noisy input scores below infinity
    assert 10.0 < metrics["denoise_gaussian"]["psnr_identity"] < 60.0
    seg = nib.load(out / "segmentation.nii.gz")
    target = nib.load(out / "inputs" / "target.nii.gz")
    assert seg.shape == target.shape == (32, 37, 32)
    np.testing.assert_allclose(seg.affine, target.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, *DEMO_STRUCTURES}
    page = (out / "index.html").read_text(encoding="utf-8")
    for name in ("segmentation.png", "white_matter.png", "thalamus.png", "denoising.png"):
        assert (out / name).stat().st_size > 1000 and name in page
    # the label names of the contexts' dataset.json travel to the sidecar of the output
    names = {"0": "background"} | {
        str(v): t.removesuffix("_aal") for v, t in DEMO_STRUCTURES.items()
    }
    assert json.loads((out / "segmentation.labels.json").read_text(encoding="utf-8")) == names
    assert (
        json.loads((out / "reference" / "labels.labels.json").read_text(encoding="utf-8")) == names
    )
    assert not (out / "denoised.labels.json").exists()
    assert not list(out.rglob(".tmp-*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-contexts", "0"], "error: --num-contexts must be in 1..16"),
        (["--spacing", "0"], "spacing must be in"),
        (["--device", "gpu"], "device must be one of"),
        (["--output-dir", "/nonexistent/dir/demo"], "does not exist"),
    ],
)
def test_demo_bad_settings_fail_with_one_line(tmp_path, args, message) -> None:
    full = ["demo", "--output-dir", str(tmp_path / "d"), *args]
    res = CliRunner().invoke(app, full)
    assert res.exit_code == 1
    assert message in res.output
    assert not (tmp_path / "d").exists()
