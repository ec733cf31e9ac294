"""Adaptive refinement in the coarse-to-fine driver (``InferenceConfig.refine``).

Known-answer networks: ``_Scripted`` returns a fixed function of the target window, one for the
level-1 pass (no AR pair) and one for the finer passes, and counts the windows it decodes.
"""

from __future__ import annotations

import pytest
import torch

from medverse.errors import InputError
from medverse.inference.driver import (
    CERTAIN_HIGH,
    CERTAIN_LOW,
    InferenceConfig,
    needs_refinement,
    run_inference,
)
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

SHAPE = (40, 40, 40)  # window 16: levels 10^3 (1 window), 20^3 (8 windows), 40^3 (27 windows)
ALL_WINDOWS = [1, 8, 27]


class _Scripted(MedverseNet):
    """Level-1 pass: ``coarse(target)``; passes with an AR pair: ``fine(target)``."""

    def __init__(self, coarse, fine) -> None:  # noqa: ANN001
        super().__init__(ModelConfig(channels=(2, 2), window=16))
        self.coarse, self.fine, self.decoded = coarse, fine, 0

    def encode_target(self, target):  # noqa: ANN001, ANN201
        return target

    def encode_contexts(self, state, *args, autoregressive=False, **kwargs):  # noqa: ANN001, ANN201
        return "ar" if autoregressive else []

    def decode(self, state, semantic, autoregressive=None, prior=None):  # noqa: ANN001, ANN201
        self.decoded += state.shape[0]
        return (self.fine if autoregressive else self.coarse)(state)


def _contexts(num_classes: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(1, 2, 1, *SHAPE, generator=generator)
    masks = (torch.rand(1, 2, num_classes, *SHAPE, generator=generator) > 0.5).float()
    return images, masks


def _sphere(center: tuple[int, int, int], radius: float) -> torch.Tensor:
    """``(1, 1, *SHAPE)`` binary ball."""
    grid = torch.stack(torch.meshgrid(*(torch.arange(n) for n in SHAPE), indexing="ij"))
    offset = grid - torch.tensor(center).view(3, 1, 1, 1)
    return ((offset.float() ** 2).sum(0) <= radius**2).float()[None, None]


def test_certain_background_runs_no_fine_window_and_keeps_the_coarse_output() -> None:
    # level 1 predicts 0.01 everywhere (certain background); a finer pass would give 0.02
    net = _Scripted(lambda t: torch.full_like(t, 0.01), lambda t: torch.full_like(t, 0.02))
    target = torch.rand(1, 1, *SHAPE)
    images, masks = _contexts()
    adaptive = InferenceConfig(refine="adaptive", sw_batch_size=2)
    res = run_inference(net, target, images, masks, adaptive, segmentation=True)
    assert res.num_windows == [1, 0, 0]
    assert res.num_skipped == [0, 8, 27]
    assert net.decoded == 1  # the network saw the level-1 window only
    # the up-sampled coarse output (Gaussian blending of identical copies: rounding only)
    torch.testing.assert_close(res.output, torch.full_like(target, 0.01), rtol=0, atol=1e-6)
    full = run_inference(net, target, images, masks, InferenceConfig(sw_batch_size=2))
    assert full.num_windows == ALL_WINDOWS and full.num_skipped == [0, 0, 0]
    torch.testing.assert_close(full.output, torch.full_like(target, 0.02), rtol=0, atol=1e-6)


def test_image_tasks_and_the_default_run_every_window() -> None:
    net = _Scripted(lambda t: torch.full_like(t, 0.01), lambda t: torch.full_like(t, 0.02))
    target = torch.rand(1, 1, *SHAPE)
    images, masks = _contexts()
    res = run_inference(net, target, images, masks, InferenceConfig(refine="adaptive"))
    assert res.num_windows == ALL_WINDOWS and res.num_skipped == [0, 0, 0]
    assert InferenceConfig().refine == "all"


def test_a_boundary_runs_its_windows_only_and_keeps_the_answer() -> None:
    # identity network on a small ball in one corner: the coarse prediction is certain (0) far
    # from the ball, so those windows are skipped; the output is still the input
    net = _Scripted(lambda t: t, lambda t: t)
    target = _sphere((8, 8, 8), 4.5)
    images, masks = _contexts()
    res = run_inference(
        net, target, images, masks, InferenceConfig(refine="adaptive"), segmentation=True
    )
    assert res.num_windows[0] == 1
    assert [r + s for r, s in zip(res.num_windows, res.num_skipped)] == ALL_WINDOWS
    assert 0 < res.num_windows[2] < 27 and res.num_skipped[2] > 0
    assert sum(res.num_windows) == net.decoded
    full = run_inference(net, target, images, masks, InferenceConfig())
    torch.testing.assert_close(res.output, full.output, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.output, target, rtol=0, atol=1e-5)


def test_every_window_uncertain_gives_refine_all_exactly() -> None:
    torch.manual_seed(0)
    net = MedverseNet(ModelConfig(channels=(2, 4, 4), window=16)).eval()
    target = torch.rand(1, 1, 34, 20, 12)  # levels 9x10x12, 17x20x12, 34x20x12
    images = torch.rand(1, 2, 1, 34, 20, 12)
    masks = (torch.rand(1, 2, 2, 34, 20, 12) > 0.5).float()  # two classes
    full = run_inference(net, target, images, masks, InferenceConfig(sw_batch_size=2))
    res = run_inference(
        net,
        target,
        images,
        masks,
        InferenceConfig(sw_batch_size=2, refine="adaptive"),
        segmentation=True,
    )
    assert res.num_windows == full.num_windows == [1, 2, 6] and sum(res.num_skipped) == 0
    torch.testing.assert_close(res.output, full.output, rtol=0, atol=1e-6)


def test_the_registration_guided_pass_is_never_skipped() -> None:
    net = _Scripted(lambda t: torch.zeros_like(t), lambda t: torch.zeros_like(t))
    target = torch.rand(1, 1, *SHAPE)
    images, masks = _contexts()
    prior = torch.zeros(1, 1, *SHAPE)  # certain background everywhere
    cfg = InferenceConfig(refine="adaptive")
    res = run_inference(net, target, images, masks, cfg, prior=prior, segmentation=True)
    assert res.num_windows == [27] and res.num_skipped == [0]


def test_needs_refinement_thresholds_and_classes() -> None:
    crops = torch.zeros(6, 1, 2, 4, 4, 4)
    crops[1, :, 1, 0, 0, 0] = CERTAIN_LOW  # on the threshold: still certain
    crops[2, :, 1, 0, 0, 0] = CERTAIN_LOW + 1e-3  # uncertain voxel in the second class
    crops[3, :, 0] = 1.0  # first class certain foreground everywhere, no edge
    crops[4, :, 0, :2] = 1.0  # a sharp label edge without an uncertain voxel
    crops[5, :, :] = CERTAIN_HIGH - 1e-3
    assert needs_refinement(crops).tolist() == [False, False, True, False, True, True]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"refine": "some"}, "refine must be one of ('all', 'adaptive'), got 'some'"),
        (
            {"refine": "adaptive", "compat": "released"},
            "refine='adaptive' cannot go with compat='released'",
        ),
    ],
)
def test_bad_refine_settings_are_refused(kwargs, message) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InferenceConfig(**kwargs)
