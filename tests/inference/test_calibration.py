"""In-context calibration of image outputs: what the fit recovers, and the Predictor path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medverse.inference.calibration import (
    fit_calibration,
    mean_bounds,
    output_range,
    relative_bounds,
)
from medverse.inference.predictor import Predictor
from medverse.intensity import normalize_intensity
from medverse.io.context import Context
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet


def _pairs(rng: np.random.Generator, num: int, task) -> tuple[np.ndarray, np.ndarray, list]:  # noqa: ANN001
    raw_in = [rng.random((10, 9, 8)).astype(np.float32) * 50 + 10 for _ in range(num)]
    raw_out = [task(x) for x in raw_in]
    images = np.stack([normalize_intensity(x) for x in raw_in])[:, None]
    outputs = np.stack([normalize_intensity(y) for y in raw_out])[:, None]
    return images, outputs, [relative_bounds(x, y) for x, y in zip(raw_in, raw_out)]


def test_recovers_an_affine_task_from_a_useless_network() -> None:
    images, outputs, bounds = _pairs(np.random.default_rng(0), 3, lambda x: 0.6 * x + 4.0)
    noise = np.random.default_rng(1)

    def useless(target, ci, co):  # noqa: ANN001, ANN202
        return noise.random(target.shape).astype(np.float32)

    cal = fit_calibration(useless, images, outputs, bounds, ridge=1e-6)
    a, b, c = cal.weights
    # in input units y_u = (0.6 x + 4 - min x) / span x = 0.6 x_u + (4 - 0.4 min x) / span x
    assert abs(a) < 0.02 and b == pytest.approx(0.6, abs=0.01)
    assert cal.rmse_after < 0.05 * cal.rmse_before and cal.contexts == 3


def test_keeps_a_perfect_network_and_limits_the_runs() -> None:
    images, outputs, bounds = _pairs(np.random.default_rng(2), 6, lambda x: np.sqrt(x))
    calls = []

    def oracle(target, ci, co):  # noqa: ANN001, ANN202
        calls.append(1)
        i = int(np.argmin([np.abs(img - target).sum() for img in images]))
        return outputs[i]

    cal = fit_calibration(oracle, images, outputs, bounds, max_contexts=4)
    assert len(calls) == 4 and cal.contexts == 4
    assert cal.weights[0] > 0.9 and cal.rmse_after <= cal.rmse_before + 1e-9
    with pytest.raises(ValueError, match="at least 2 contexts"):
        fit_calibration(oracle, images[:1], outputs[:1], bounds[:1])
    assert mean_bounds([(0.0, 1.0), (0.2, 0.6)]) == pytest.approx((0.1, 0.8))


def _files(tmp_path: Path, task) -> tuple[Path, list[tuple[Path, Path]]]:  # noqa: ANN001
    rng = np.random.default_rng(3)
    grid = np.indices((20, 18, 16)).astype(np.float32)
    paths = []
    for k in range(4):
        centre = np.array([10, 9, 8]) + rng.integers(-2, 3, 3)
        image = 200 * np.exp(-(((grid - centre[:, None, None, None]) / 6) ** 2).sum(0))
        image = (image + 20 * rng.random(image.shape)).astype(np.float32)
        for name, array in ((f"i{k}", image), (f"o{k}", task(image))):
            nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / f"{name}.nii.gz")
        paths.append((tmp_path / f"i{k}.nii.gz", tmp_path / f"o{k}.nii.gz"))
    return paths[0][0], paths[1:]


def test_predictor_on_a_copy_task_returns_the_target(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 4, 4), window=16))
    target, pairs = _files(tmp_path, lambda x: x.copy())
    before = {p: p.read_bytes() for pair in pairs for p in pair}
    predictor = Predictor(net)
    context = Context.from_files(pairs, task="image")
    truth = nib.load(target).get_fdata()
    calibrated = predictor.predict(target, context, align="physical")
    plain = predictor.predict(target, context, align="physical", calibrate=False)
    span = truth.max() - truth.min()
    assert np.abs(calibrated.array - truth).max() < 0.02 * span  # random net, contexts say "copy"
    assert np.abs(plain.array - truth).mean() > 0.05 * span  # the random net alone does not copy
    assert calibrated.summary["calibration"]["contexts"] == 3
    assert calibrated.summary["calibration"]["weights"][1] == pytest.approx(1.0, abs=0.02)
    assert plain.summary["calibration"] is None
    assert all(p.read_bytes() == data for p, data in before.items())


def test_model_method_calibrates_image_tasks_only() -> None:
    from medverse.evaluation.model_method import ModelMethod

    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 4, 4), window=16))
    rng = np.random.default_rng(4)
    images = [(rng.random((14, 12, 10)) * 80 + 5).astype(np.float32) for _ in range(4)]
    target, contexts = images[0], images[1:]
    span = float(target.max() - target.min())
    copy = ModelMethod(net)(
        target, contexts, contexts, spacing=(1, 1, 1), task_family="enhancement"
    )
    plain = ModelMethod(net, calibrate=False)(
        target, contexts, contexts, spacing=(1, 1, 1), task_family="enhancement"
    )
    assert copy.shape == target.shape and copy.dtype == np.float32
    assert np.abs(copy - target).max() < 0.02 * span
    assert np.abs(plain - target).mean() > 0.05 * span
    masks = [(c > 45).astype(np.float32) for c in contexts]
    seg = ModelMethod(net)(target, contexts, masks, spacing=(1, 1, 1), task_family="segmentation")
    seg_plain = ModelMethod(net, calibrate=False)(
        target, contexts, masks, spacing=(1, 1, 1), task_family="segmentation"
    )
    assert np.array_equal(seg, seg_plain)  # segmentation is never calibrated


def test_output_range_carries_the_contexts_relative_range_over() -> None:
    rng = np.random.default_rng(0)
    clean = [rng.uniform(0.0, 1.0, (8, 8, 8)) for _ in range(3)]
    noisy = [c + rng.normal(0.0, 0.1, c.shape) for c in clean]
    target_clean = rng.uniform(0.0, 1.0, (8, 8, 8)) * 500.0
    target = target_clean + rng.normal(0.0, 50.0, target_clean.shape)
    low, high = output_range(target, noisy, clean)
    # denoising: the output range is narrower than the noisy target's, close to the clean one's
    assert target.min() < low and high < target.max()
    assert abs(low - target_clean.min()) < 40 and abs(high - target_clean.max()) < 40
    # identical ranges (skull stripping, bias correction of normalised images) keep the range
    assert output_range(target, clean, clean) == pytest.approx((target.min(), target.max()))
    # outputs twice as bright as their inputs: twice the target's range
    low, high = output_range(np.array([0.0, 3.0]), clean, [2 * c for c in clean])
    assert (low, high) == pytest.approx((0.0, 6.0), abs=0.05)
