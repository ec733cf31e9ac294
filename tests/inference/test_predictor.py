"""Predictor: what ``align="auto"`` resolves to, its fallback when deformable registration fails,
and that it runs the array pipeline on the aligned arrays."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medverse.errors import RegistrationError
from medverse.inference.driver import InferenceConfig
from medverse.inference.pipeline import ModelInputs, ensemble_draws, predict_arrays
from medverse.inference.predictor import Predictor
from medverse.io.context import Context
from medverse.io.volume import read_volume
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet


def _files(tmp_path: Path) -> tuple[Path, list[tuple[Path, Path]]]:
    rng = np.random.default_rng(5)
    grid = np.indices((24, 22, 20)).astype(np.float32)
    paths = []
    for k in range(3):
        centre = np.array([12, 11, 10]) + rng.integers(-2, 3, 3)
        radii = np.array([7.0, 6.0, 5.0])[:, None, None, None]
        distance = (((grid - centre[:, None, None, None]) / radii) ** 2).sum(0)
        image = (200 * np.exp(-distance) + 20 * rng.random(distance.shape)).astype(np.float32)
        mask = (distance < 1).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / f"i{k}.nii.gz")
        nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / f"m{k}.nii.gz")
        paths.append((tmp_path / f"i{k}.nii.gz", tmp_path / f"m{k}.nii.gz"))
    return paths[0][0], paths[1:]


def _net(prior_gate: bool) -> MedverseNet:
    torch.manual_seed(0)
    return MedverseNet(ModelConfig(channels=(2, 4, 4), window=16, prior_gate=prior_gate))


@pytest.mark.parametrize(
    ("gate", "task", "compat", "resample", "expected"),
    [
        (True, "segmentation", "medverse", True, "deformable"),
        (False, "segmentation", "medverse", True, "affine"),
        (True, "image", "medverse", True, "affine"),
        (True, "segmentation", "released", True, "physical"),
        (True, "segmentation", "medverse", False, "physical"),
    ],
)
def test_auto_alignment_rule(tmp_path, gate, task, compat, resample, expected) -> None:
    _, pairs = _files(tmp_path)
    predictor = Predictor(_net(gate), InferenceConfig(compat=compat))
    context = Context.from_files(pairs, task=task)
    assert predictor.automatic_alignment(context, resample) == expected


@pytest.mark.slow  # two predictions, one with ANTs deformable registration, ~7 s or more on 2 cores
def test_auto_with_a_gated_model_is_registration_guided(tmp_path) -> None:
    target, pairs = _files(tmp_path)
    result = Predictor(_net(True)).predict(target, pairs)
    assert result.summary.get("guided") is True
    assert result.summary["stacking"] is not None  # two contexts: the blend was chosen on them
    plain = Predictor(_net(False)).predict(target, pairs)
    assert not plain.summary.get("guided")


def test_auto_falls_back_to_affine_when_registration_fails(tmp_path, monkeypatch) -> None:
    target, pairs = _files(tmp_path)
    predictor = Predictor(_net(True))

    def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RegistrationError("'i1.nii.gz': ants deformable registration failed (test)")

    monkeypatch.setattr(predictor, "_predict_guided", fail)
    result = predictor.predict(target, pairs)
    assert not result.summary.get("guided")
    assert "deformable registration failed" in result.summary["alignment"][0]
    assert "i1.nii.gz" in result.summary["alignment"][0]
    assert result.array.shape == (24, 22, 20)
    with pytest.raises(RegistrationError, match="i1.nii.gz"):  # asked for by name: no fallback
        predictor.predict(target, pairs, align="deformable")


@pytest.mark.slow  # an ensemble of predictions beside the pipeline's, ~7 s or more on 2 cores
def test_predict_is_the_array_pipeline_on_the_aligned_arrays(tmp_path) -> None:
    target, pairs = _files(tmp_path)
    net = _net(False)
    predictor = Predictor(net, InferenceConfig(sw_batch_size=2))
    result = predictor.predict(target, pairs, align="physical", ensemble=2)
    context = Context.from_files(pairs)  # already on the target grid: "physical" keeps them
    inputs = ModelInputs.from_arrays(
        read_volume(target).array,
        [(pair.image.array, pair.output.array) for pair in context],
        segmentation=True,
        labels=context.labels,
    )
    expected = predict_arrays(net, inputs, predictor.config, draws=ensemble_draws(2, 2))
    np.testing.assert_array_equal(result.raw, expected.raw)
    np.testing.assert_array_equal(result.std, expected.std)
    np.testing.assert_array_equal(result.array, expected.array)
    assert result.summary["windows"] == expected.draws[-1].num_windows == [1, 8]
    assert result.summary["draws"] == 2 and result.labels == (1,)


def _segmentation(tmp_path: Path):  # noqa: ANN202
    from medverse.inference.predictor import Prediction

    array = np.zeros((6, 5, 4), np.uint8)
    array[1:3, 1:3, 1:3] = 2
    return Prediction(array, np.eye(4), "segmentation", array[None].astype(np.float32),
                      labels=(2,), label_names={2: "liver"})  # fmt: skip


def test_a_segmentation_is_saved_with_its_sidecar_or_not_at_all(tmp_path, monkeypatch) -> None:
    prediction = _segmentation(tmp_path)
    out = tmp_path / "p.nii.gz"
    volume, sidecar = prediction.save(out)
    assert (volume, sidecar) == (out, tmp_path / "p.labels.json")
    assert np.array_equal(np.asarray(nib.load(out).dataobj), prediction.array)
    written = sidecar.read_bytes()

    # the sidecar cannot be written: no volume is left without it
    blocked = tmp_path / "q.labels.json"
    blocked.mkdir()
    with pytest.raises(IsADirectoryError, match="q.labels.json"):
        prediction.save(tmp_path / "q.nii.gz")
    assert not (tmp_path / "q.nii.gz").exists()

    # the volume cannot be written: the sidecar written for it is taken back (old one restored)
    import medverse.inference.predictor as module

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(28, "No space left on device", str(out))

    sidecar.write_text('{"old": true}')
    monkeypatch.setattr(module, "write_volume", broken)
    with pytest.raises(OSError, match="No space left"):
        prediction.save(out)
    assert sidecar.read_text() == '{"old": true}' and written != sidecar.read_bytes()
    with pytest.raises(OSError, match="No space left"):
        prediction.save(tmp_path / "new.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "p.labels.json",
        "p.nii.gz",
        "q.labels.json",
    ]
