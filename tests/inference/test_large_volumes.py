"""Whole clinical-size volumes end to end with the default (per-axis, never squash) rule.

A 512x512x100 CT-like and a 300x260x60 MR-like volume go through files -> Predictor -> files and
come back with the input's exact shape and affine. The network is a tiny random one (the test is
about the pipeline, not the weights); window 128 keeps the window count at 35 and 12.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medverse.inference.driver import InferenceConfig
from medverse.inference.predictor import Predictor
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("shape", "spacing", "levels"),
    [
        ((512, 512, 100), (0.7, 0.7, 2.5), [(128, 128, 100), (256, 256, 100), (512, 512, 100)]),
        ((300, 260, 60), (0.9, 0.9, 3.0), [(75, 65, 60), (150, 130, 60), (300, 260, 60)]),
    ],
)
def test_clinical_shapes_keep_full_resolution(tmp_path, shape, spacing, levels) -> None:
    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 2, 2, 2, 2), window=128)).eval()
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = (120.0, 95.0, -40.0)
    rng = np.random.default_rng(0)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    body = sum(((g - n / 2) / (n / 3)) ** 2 for g, n in zip(grid, shape)) < 1
    image = (body * 1000 + rng.normal(0, 20, shape)).astype(np.float32)
    for name, arr in (("t", image), ("c", image[::-1].copy()), ("m", body[::-1].astype(np.uint8))):
        nib.save(nib.Nifti1Image(arr, affine), tmp_path / f"{name}.nii.gz")
    predictor = Predictor(net, InferenceConfig(sw_batch_size=2, context_batch=1))
    result = predictor.predict(
        tmp_path / "t.nii.gz", [(tmp_path / "c.nii.gz", tmp_path / "m.nii.gz")], align="physical"
    )
    assert result.summary["plan"] == levels
    out = result.save(tmp_path / "pred.nii.gz")[0]
    img = nib.load(out)
    assert img.shape == shape
    assert np.allclose(img.affine, affine, atol=1e-4)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
