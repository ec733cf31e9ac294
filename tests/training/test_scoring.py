"""Scoring during training (``training/scoring.py``): the context-mean baseline and
``validate`` through the array pipeline and ``evaluation/metrics.py``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medverse.data.episodes import Episode
from medverse.training.model_setup import build_model
from medverse.training.scoring import context_mean_dice, validate
from medverse.training.sources import build_datasets
from medverse.training.steps import validation_episodes

from .conftest import fake_episode


def test_context_mean_baseline_by_hand() -> None:
    episode = fake_episode(shape=(4, 4, 4), num_contexts=3)
    target = np.zeros((1, 4, 4, 4), np.float32)
    target[0, :2] = 1  # 32 voxels
    contexts = np.zeros((3, 1, 4, 4, 4), np.float32)
    contexts[:2, 0, :2] = 1  # two of three agree with the target: mean 2/3 > 0.5
    contexts[2, 0, 2:] = 1
    contexts[:2, 0, 2, :2] = 1  # 8 extra voxels with mean 2/3: false positives
    episode = Episode(
        episode.target, target, episode.context_in, contexts, "segmentation", "segmentation", 0
    )
    assert context_mean_dice([episode]) == pytest.approx(2 * 32 / (32 + 40))
    assert math.isnan(context_mean_dice([fake_episode(family="enhancement")]))


def test_validate_scores_each_family(make_config) -> None:
    config = make_config(num_val_episodes=4, val_num_contexts=2)
    _, val_sets = build_datasets(config.data)
    episodes = validation_episodes(val_sets, config)
    families = {e.family for e in episodes}
    net = build_model(config)
    metrics = validate(net, episodes)
    assert net.training  # restored
    if "segmentation" in families:
        assert 0.0 <= metrics["dice"] <= 1.0
    if families - {"segmentation"}:
        assert math.isfinite(metrics["psnr"]) and -1.0 <= metrics["ssim"] <= 1.0


def test_validate_scores_with_the_evaluation_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in driver returns the mean of the context outputs (offset so some voxels leave
    # [0, 1] and get clamped); validate must give exactly what evaluation.metrics gives on it.
    from medverse.evaluation import metrics
    from medverse.inference import pipeline
    from medverse.inference.driver import InferenceResult
    from medverse.inference.pyramid import plan_levels

    def mean_of_contexts(net, target, context_in, context_out, settings, **kwargs):
        plan = plan_levels(tuple(target.shape[-3:]), 16)
        return InferenceResult(output=context_out.float().mean(1) * 1.2 - 0.1, plan=plan)

    monkeypatch.setattr(pipeline, "run_inference", mean_of_contexts)
    segmentation = fake_episode(shape=(12, 12, 12), num_contexts=3, seed=1)
    enhancement = fake_episode(shape=(12, 12, 12), family="enhancement", seed=2)
    scores = validate(torch.nn.Conv3d(1, 1, 1), [segmentation, enhancement])

    def stand_in(episode: Episode) -> np.ndarray:
        return np.asarray(episode.context_out, np.float32).mean(0)[0] * 1.2 - 0.1

    reference = segmentation.target_reference[0]
    expected_dice = metrics.dice(stand_in(segmentation), reference)
    image = np.clip(stand_in(enhancement), 0, 1)
    expected_psnr = metrics.psnr(image, enhancement.target_reference[0], 1.0)
    expected_ssim = metrics.ssim(image, enhancement.target_reference[0], 1.0, use_monai=True)
    assert 0.1 < expected_dice < 0.99 and 0.01 < abs(expected_ssim) < 0.99  # neither trivial
    assert scores["dice"] == pytest.approx(expected_dice, rel=1e-6)
    assert scores["dice_segmentation"] == scores["dice"]
    assert scores["psnr"] == pytest.approx(expected_psnr, rel=1e-6)
    assert scores["ssim"] == pytest.approx(expected_ssim, rel=1e-6)


def test_validate_without_episodes_gives_nan_scores() -> None:
    net = torch.nn.Conv3d(1, 1, 1).eval()
    scores = validate(net, [])
    assert sorted(scores) == ["dice", "psnr", "ssim"]
    assert all(math.isnan(v) for v in scores.values())
    assert not net.training  # its mode is kept, eval included
