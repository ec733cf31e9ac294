"""The network as an evaluation method: the array pipeline's output, and adaptive refinement
reaches it and is counted."""

from __future__ import annotations

import numpy as np
import torch

from medverse.evaluation.model_method import ModelMethod
from medverse.inference.driver import InferenceConfig
from medverse.inference.pipeline import ModelInputs, predict_arrays
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet


class _Background(MedverseNet):
    """Predicts 0.01 everywhere: a certain background at every level."""

    def __init__(self) -> None:
        super().__init__(ModelConfig(channels=(2, 2), window=16))

    def encode_target(self, target):  # noqa: ANN001, ANN201
        return target

    def encode_contexts(self, state, *args, **kwargs):  # noqa: ANN001, ANN201
        return []

    def decode(self, state, semantic, autoregressive=None, prior=None):  # noqa: ANN001, ANN201
        return torch.full_like(state, 0.01)


def _case() -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)  # window 16: 1 + 8 + 27 windows
    images = [rng.random(shape, dtype=np.float32) for _ in range(2)]
    masks = [(rng.random(shape) > 0.5).astype(np.float32) for _ in range(2)]
    return rng.random(shape, dtype=np.float32), images, masks


def test_adaptive_refinement_skips_certain_windows_of_segmentation_only() -> None:
    target, images, masks = _case()
    method = ModelMethod(_Background(), InferenceConfig(refine="adaptive"), calibrate=False)
    raw = method(target, images, masks, task_family="segmentation")
    assert method.windows == {"run": 0, "skipped": 35}
    np.testing.assert_allclose(raw, 0.01, atol=1e-6)
    method(target, images, images, task_family="transformation")  # image task: every window
    assert method.windows == {"run": 35, "skipped": 35}
    default = ModelMethod(_Background(), calibrate=False)
    default(target, images, masks, task_family="segmentation")
    assert default.windows == {"run": 35, "skipped": 0}


def test_image_tasks_return_the_calibrated_pipeline_output_and_count_every_run() -> None:
    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 4), window=16)).eval()
    rng = np.random.default_rng(1)
    shape = (18, 16, 16)  # two levels: 1 + 2 windows per run
    target, *images = (100 * rng.random(shape, dtype=np.float32) for _ in range(3))
    outputs = [0.5 * image + 7 for image in images]
    method = ModelMethod(net, calibrate=True)
    array = method(target, images, outputs, task_family="enhancement")
    inputs = ModelInputs.from_arrays(target, list(zip(images, outputs)), segmentation=False)
    expected = predict_arrays(net, inputs, method.config, calibrate=True)
    assert expected.calibration is not None  # two contexts: calibrated
    np.testing.assert_array_equal(array, expected.array)
    # the draw and the two leave-one-out runs, fine level only
    assert method.windows == {"run": 3 * 2, "skipped": 0}
    masks = [(image > 50).astype(np.float32) for image in images]
    raw = method(target, images, masks, task_family="segmentation")
    inputs = ModelInputs.from_arrays(target, list(zip(images, masks)), segmentation=True)
    np.testing.assert_array_equal(raw, predict_arrays(net, inputs, method.config).raw[0])
