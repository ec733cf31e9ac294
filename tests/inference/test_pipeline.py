"""The array pipeline: normalisation, one run per draw, the label map or the mapped-back image.

Most tests run a stand-in driver whose "network" returns the mean of the context outputs, so
every output has an answer worked by hand; the last ones run a tiny real network and compare
with the driver called directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medverse.errors import InputError
from medverse.inference import pipeline
from medverse.inference.calibration import output_range, relative_bounds
from medverse.inference.driver import InferenceConfig, InferenceResult, run_inference
from medverse.inference.guided import labels_from_raw
from medverse.inference.pipeline import (
    ModelInputs,
    ensemble_draws,
    predict_arrays,
    run_model,
)
from medverse.inference.pyramid import plan_levels
from medverse.intensity import normalize_intensity
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

SHAPE = (10, 8, 6)


@pytest.fixture
def mean_driver(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace the driver by the mean of the context outputs; returns the calls it saw."""
    calls: list[dict] = []

    def run(net, target, context_in, context_out, config=None, *, on_level=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(
            {
                "target": target.clone(),
                "context_in": context_in.clone(),
                "segmentation": kwargs.get("segmentation", False),
            }
        )
        if on_level is not None:
            on_level(1, 1)
        plan = plan_levels(tuple(target.shape[-3:]), 16)
        return InferenceResult(
            output=context_out.float().mean(1), plan=plan, num_windows=[1, 4], num_skipped=[0, 2]
        )

    monkeypatch.setattr(pipeline, "run_inference", run)
    return calls


def _stand_in_net() -> torch.nn.Module:
    return torch.nn.Conv3d(1, 1, 1)  # has a parameter, so a device


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(50 + 300 * rng.random(SHAPE)).astype(np.float32) for _ in range(count)]


# -- ModelInputs ---------------------------------------------------------------------------------


def test_from_arrays_normalises_images_and_image_outputs() -> None:
    target, *images = _images(3)
    outputs = [0.5 * image + 10 for image in images]
    inputs = ModelInputs.from_arrays(target, list(zip(images, outputs)), segmentation=False)
    np.testing.assert_array_equal(inputs.target, normalize_intensity(target))
    assert inputs.target.min() == 0.0 and inputs.target.max() == 1.0
    for i in range(2):
        np.testing.assert_array_equal(inputs.images[i, 0], normalize_intensity(images[i]))
        np.testing.assert_array_equal(inputs.outputs[i, 0], normalize_intensity(outputs[i]))
        assert inputs.bounds[i] == relative_bounds(images[i], outputs[i])
    assert inputs.images.shape == inputs.outputs.shape == (2, 1, *SHAPE)
    assert inputs.intensities is target and inputs.labels == ()
    clipped = ModelInputs.from_arrays(
        target, list(zip(images, outputs)), segmentation=False, clip_percentiles=(5, 95)
    )
    np.testing.assert_array_equal(
        clipped.images[1, 0], normalize_intensity(images[1], clip_percentiles=(5, 95))
    )


def test_segmentation_outputs_are_one_channel_per_label_or_one_mask() -> None:
    target, image = _images(2)
    labels = np.zeros(SHAPE, np.int16)
    labels[:3] = 2
    labels[5:] = 5
    inputs = ModelInputs.from_arrays(target, [(image, labels)], segmentation=True, labels=(5, 2))
    assert inputs.labels == (5, 2) and inputs.bounds == ()
    np.testing.assert_array_equal(inputs.outputs[0, 0], labels == 5)
    np.testing.assert_array_equal(inputs.outputs[0, 1], labels == 2)
    soft = np.linspace(0, 1, int(np.prod(SHAPE))).reshape(SHAPE)
    mask = ModelInputs.from_arrays(target, [(image, soft)], segmentation=True)
    assert mask.labels == (1,) and mask.outputs.shape == (1, 1, *SHAPE)
    np.testing.assert_array_equal(mask.outputs[0, 0], soft > 0.5)
    # masks are kept as uint8 0/1 (a quarter of float32's memory per context)
    assert inputs.outputs.dtype == mask.outputs.dtype == np.uint8


def test_from_arrays_takes_a_generator_of_its_declared_length() -> None:
    target, *images = _images(3)
    pairs = ((image, image > 200) for image in images)
    inputs = ModelInputs.from_arrays(target, pairs, segmentation=True, num_contexts=2)
    assert inputs.num_contexts == 2
    with pytest.raises(InputError, match="1 context pairs given, num_contexts=2"):
        one = iter([(images[0], images[0])])
        ModelInputs.from_arrays(target, one, segmentation=True, num_contexts=2)
    with pytest.raises(InputError, match="more than num_contexts=1"):
        two = zip(images, images)
        ModelInputs.from_arrays(target, two, segmentation=True, num_contexts=1)
    with pytest.raises(InputError, match="no context pairs"):
        ModelInputs.from_arrays(target, [], segmentation=True)


def test_from_arrays_names_a_context_off_the_target_grid() -> None:
    target, image = _images(2)
    small = image[:-1]
    with pytest.raises(InputError, match=r"'b.nii': shape \(9, 8, 6\) differs"):
        ModelInputs.from_arrays(
            target, [(image, small)], segmentation=True, context_names=[("a.nii", "b.nii")]
        )


def test_from_normalised_keeps_the_arrays() -> None:
    rng = np.random.default_rng(1)
    target = rng.random((1, *SHAPE), dtype=np.float32) * 1.3 - 0.1  # not min-max: kept as is
    images = rng.random((2, 1, *SHAPE), dtype=np.float32)
    masks = (rng.random((2, 1, *SHAPE)) > 0.5).astype(np.float32)
    inputs = ModelInputs.from_normalised(target, images, masks, segmentation=True)
    assert inputs.target.shape == SHAPE and np.shares_memory(inputs.target, target)
    assert inputs.images is images and inputs.outputs is masks
    assert inputs.labels == (1,) and inputs.intensities is None
    with pytest.raises(InputError, match=r"\(L, 1, X, Y, Z\)"):
        ModelInputs.from_normalised(target, images[0], masks, segmentation=True)


# -- draws ---------------------------------------------------------------------------------------


def test_ensemble_draws_cycle_flips_or_draw_seeded_subsets() -> None:
    flips = [flip for _, flip in ensemble_draws(3, 9)]
    assert flips == [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2), ()]
    assert all(idx.tolist() == [0, 1, 2] for idx, _ in ensemble_draws(3, 4, contexts_per_draw=3))
    subsets = ensemble_draws(5, 6, contexts_per_draw=2, seed=7)
    for idx, flip in subsets:
        assert flip == () and len(idx) == 2 and list(idx) == sorted(set(idx))
    again = ensemble_draws(5, 6, contexts_per_draw=2, seed=7)
    assert [s.tolist() for s, _ in subsets] == [s.tolist() for s, _ in again]
    assert len({tuple(s) for s, _ in subsets}) > 1


# -- predict_arrays with the stand-in driver -----------------------------------------------------


def test_segmentation_is_the_argmax_label_map_over_threshold(mean_driver) -> None:
    target, image_a, image_b = _images(3)
    first, second = np.zeros(SHAPE, np.int16), np.zeros(SHAPE, np.int16)
    first[:4], second[:4] = 3, 3  # both say 3: mean 1
    first[6:], second[6:] = 7, 7  # both say 7: mean 1
    first[4:6] = 7  # one of two says 7: mean 0.5, not above 0.5 -> background
    inputs = ModelInputs.from_arrays(
        target, [(image_a, first), (image_b, second)], segmentation=True, labels=(3, 7)
    )
    prediction = predict_arrays(_stand_in_net(), inputs)
    expected = np.zeros(SHAPE, np.int32)
    expected[:4], expected[6:] = 3, 7
    np.testing.assert_array_equal(prediction.array, expected)
    assert prediction.array.dtype == np.int32 and prediction.labels == (3, 7)
    np.testing.assert_array_equal(prediction.raw[1, 4:6], 0.5)
    assert prediction.std is None and prediction.calibration is None
    assert [call["segmentation"] for call in mean_driver] == [True]
    (run,) = prediction.runs
    assert run.num_windows == [1, 4] and run.num_skipped == [0, 2] and not run.calibration


def test_draws_are_averaged_with_their_spread(mean_driver) -> None:
    target, image_a, image_b = _images(3)
    full, empty = np.ones(SHAPE, np.float32), np.zeros(SHAPE, np.float32)
    inputs = ModelInputs.from_arrays(target, [(image_a, full), (image_b, empty)], segmentation=True)
    draws = [(np.array([0]), ()), (np.array([1]), ()), (np.array([0]), (0, 2))]
    prediction = predict_arrays(_stand_in_net(), inputs, draws=draws)
    np.testing.assert_allclose(prediction.raw, 2 / 3, rtol=1e-6)  # (1 + 0 + 1) / 3
    np.testing.assert_allclose(prediction.std, np.sqrt(2) / 3, rtol=1e-6)
    np.testing.assert_array_equal(prediction.array, 1)
    assert [call["context_in"].shape[1] for call in mean_driver] == [1, 1, 1]
    # the third draw saw the flipped target
    flipped = torch.from_numpy(inputs.target).flip([0, 2])
    torch.testing.assert_close(mean_driver[2]["target"][0, 0], flipped, rtol=0, atol=0)
    assert len(prediction.draws) == 3


def test_image_output_goes_to_the_range_the_contexts_imply(mean_driver) -> None:
    target, image_a, image_b = _images(3, seed=2)
    outputs = [0.5 * image_a + 20, 0.8 * image_b]
    inputs = ModelInputs.from_arrays(
        target, list(zip([image_a, image_b], outputs)), segmentation=False
    )
    levels: list[tuple[int, int]] = []
    prediction = predict_arrays(
        _stand_in_net(),
        inputs,
        calibrate=False,
        on_level=lambda level, count: levels.append((level, count)),
    )
    raw = inputs.outputs[:, 0].mean(axis=0)  # the stand-in's normalised output
    low, high = output_range(target, [image_a, image_b], outputs)
    np.testing.assert_allclose(prediction.array, low + raw * (high - low), rtol=1e-5, atol=1e-3)
    assert prediction.array.dtype == np.float32 and prediction.calibration is None
    assert levels == [(1, 1)] and [call["segmentation"] for call in mean_driver] == [False]


def test_calibration_runs_leave_one_out_and_are_recorded(mean_driver) -> None:
    target, *images = _images(4, seed=3)
    outputs = [image * 0.5 for image in images]
    inputs = ModelInputs.from_arrays(target, list(zip(images, outputs)), segmentation=False)
    prediction = predict_arrays(_stand_in_net(), inputs, calibrate=True)
    assert prediction.calibration is not None and prediction.calibration.contexts == 3
    assert [run.calibration for run in prediction.runs] == [False, True, True, True]
    assert len(prediction.draws) == 1
    # each leave-one-out run predicts context i from the two others
    assert [call["context_in"].shape[1] for call in mean_driver] == [3, 2, 2, 2]
    np.testing.assert_array_equal(mean_driver[1]["target"][0, 0].numpy(), inputs.images[0, 0])
    one = ModelInputs.from_arrays(target, [(images[0], outputs[0])], segmentation=False)
    assert predict_arrays(_stand_in_net(), one, calibrate=True).calibration is None


def test_normalised_image_inputs_give_the_output_clamped_to_unit_range(mean_driver) -> None:
    rng = np.random.default_rng(4)
    images = rng.random((2, 1, *SHAPE), dtype=np.float32)
    outputs = rng.random((2, 1, *SHAPE), dtype=np.float32) * 1.6 - 0.3  # leaves [0, 1]
    inputs = ModelInputs.from_normalised(images[0], images, outputs, segmentation=False)
    prediction = predict_arrays(_stand_in_net(), inputs, calibrate=True)
    mean = outputs[:, 0].mean(axis=0)
    np.testing.assert_allclose(prediction.raw[0], mean, rtol=1e-6)
    np.testing.assert_array_equal(prediction.array, np.clip(prediction.raw[0], 0.0, 1.0))
    assert prediction.array.min() == 0.0 and prediction.array.max() == 1.0
    assert prediction.calibration is None and len(prediction.runs) == 1


# -- a real network ------------------------------------------------------------------------------


def _tiny_case() -> tuple[MedverseNet, np.ndarray, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 4), window=16)).eval()
    rng = np.random.default_rng(5)
    shape = (18, 16, 16)  # two levels: 1 + 2 windows
    target = rng.random(shape, dtype=np.float32)
    images = rng.random((2, 1, *shape), dtype=np.float32)
    masks = (rng.random((2, 2, *shape)) > 0.6).astype(np.float32)
    return net, target, images, masks


def test_run_model_is_the_driver_on_arrays_and_undoes_its_flip() -> None:
    net, target, images, masks = _tiny_case()
    config = InferenceConfig(sw_batch_size=2)
    raw, info = run_model(net, target, images, masks, config, segmentation=True)
    direct = run_inference(
        net,
        torch.from_numpy(target)[None, None],
        torch.from_numpy(images)[None],
        torch.from_numpy(masks)[None],
        config,
        segmentation=True,
    )
    np.testing.assert_array_equal(raw, direct.output[0].numpy())
    assert raw.shape == (2, *target.shape) and raw.dtype == np.float32
    assert info.num_windows == direct.num_windows and info.plan == direct.plan
    flipped, _ = run_model(net, target, images, masks, config, flip=(0, 2))
    by_hand = run_inference(
        net,
        torch.from_numpy(target).flip([0, 2])[None, None],
        torch.from_numpy(images).flip([-3, -1])[None],
        torch.from_numpy(masks).flip([-3, -1])[None],
        config,
    )
    np.testing.assert_array_equal(flipped, by_hand.output[0].flip([-3, -1]).numpy())
    assert not np.array_equal(flipped, raw)  # the network is not flip-invariant: a real check


def test_predict_arrays_with_a_network_is_the_driver_then_labels_from_raw() -> None:
    net, target, images, masks = _tiny_case()
    inputs = ModelInputs(target, images, masks, segmentation=True, labels=(4, 9))
    prediction = predict_arrays(net, inputs)
    direct = run_inference(
        net,
        torch.from_numpy(target)[None, None],
        torch.from_numpy(images)[None],
        torch.from_numpy(masks)[None],
        segmentation=True,
    )
    np.testing.assert_array_equal(prediction.raw, direct.output[0].numpy())
    np.testing.assert_array_equal(prediction.array, labels_from_raw(prediction.raw, (4, 9)))
