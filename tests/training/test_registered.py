"""Registered training contexts (``guided_contexts: registered``): ContextRegistrar and the sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from medverse.data.cases import Case
from medverse.data.datasets import InMemoryDataset
from medverse.data.episodes import EpisodeSampler
from medverse.errors import InputError
from medverse.registration import RegistrationCache
from medverse.training.registered import ContextRegistrar
from medverse.training.sources import build_datasets
from medverse.training.steps import StepBuilder

from .conftest import TINY_MODEL


def _subject(name: str, shift: tuple[float, float, float], shape=(28, 30, 26)) -> Case:
    """A smooth head-like blob with an inner structure, moved by ``shift`` voxels."""
    grid = np.indices(shape, dtype=np.float32)
    centre = (
        np.asarray(shape, np.float32)[:, None, None, None] / 2
        + np.asarray(shift)[:, None, None, None]
    )
    radius = np.sqrt((((grid - centre) / np.asarray([9, 10, 8])[:, None, None, None]) ** 2).sum(0))
    inner = np.sqrt(
        (((grid - centre - np.asarray([2, 0, 0])[:, None, None, None]) / 4.0) ** 2).sum(0)
    )
    labels = np.where(inner < 1, 2, np.where(radius < 1, 1, 0)).astype(np.uint8)
    image = ndimage.gaussian_filter(np.choose(labels, [0.05, 0.5, 1.0]).astype(np.float32), 1.0)
    return Case(
        name,
        image[None],
        labels,
        ("T1w",),
        {0: "background", 1: "head", 2: "core"},
        (2.0, 2.0, 2.0),
        np.diag([2.0, 2.0, 2.0, 1.0]),
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())


def test_registrar_aligns_another_subject_and_registers_each_pair_once(tmp_path: Path) -> None:
    target, context = _subject("t", (0, 0, 0)), _subject("c", (3, -2, 1))
    before = _dice(target.labels == 2, context.labels == 2)
    registrar = ContextRegistrar(RegistrationCache(tmp_path / "cache"))
    mask = (context.labels == 2).astype(np.float32)
    warped = registrar(target, context, np.stack([context.images[0], mask]))
    assert warped.shape == (2, *target.shape)
    assert before < 0.5 and _dice(warped[1] > 0.5, target.labels == 2) > 0.85
    assert ((warped[1] > 0.01) & (warped[1] < 0.99)).any()  # masks warp linearly: soft edges
    first = registrar.registration(target, context)
    assert registrar.registration(target, context) is first  # kept in memory
    again = ContextRegistrar(RegistrationCache(tmp_path / "cache")).registration(target, context)
    assert again.cached and np.allclose(again.world, first.world)
    assert ContextRegistrar().prepare([target, context]) == 2


def _registered_sampler(registrar, **options) -> EpisodeSampler:
    cases = [_subject(f"s{i}", (i - 1.5, 0.5 * i, -i / 2)) for i in range(4)]
    dataset = InMemoryDataset(cases, name="blobs")
    defaults = dict(
        num_contexts=2,
        window=None,
        task_weights={"segmentation": 1.0},
        aligned_prob=1.0,
        registrar=registrar,
        seed=1,
    )
    return EpisodeSampler(dataset, **{**defaults, **options})


def test_sampler_takes_real_registered_contexts_from_the_registrar() -> None:
    calls = []

    def registrar(target: Case, context: Case, arrays: np.ndarray) -> np.ndarray:
        calls.append((target.name, context.name, arrays.shape))
        assert arrays.shape == (2, *context.shape) and target.name != context.name
        # stands in for a registration: a half-voxel shift, so warped masks are soft
        return ndimage.shift(arrays, (0, 0.5, 0, 0), order=1)

    episode = _registered_sampler(registrar).sample(0)
    assert episode.params["registered"] and episode.params["aligned"]
    assert [name for _, name, _ in calls] == episode.params["cases"][1:]
    assert all(t == episode.params["cases"][0] for t, _, _ in calls)
    soft = episode.context_out
    assert ((soft > 0.01) & (soft < 0.99)).any()  # soft warped edges kept
    assert set(np.unique(episode.target_reference)) <= {0.0, 1.0}
    # replayable, and without a registrar or at aligned_prob 0 nothing is registered
    calls.clear()
    assert np.array_equal(_registered_sampler(registrar).sample(0).context_out, soft)
    calls.clear()
    plain = _registered_sampler(registrar, aligned_prob=0.0).sample(0)
    assert not calls and not plain.params["aligned"]


def test_training_config_chooses_registered_contexts(make_config, tmp_path: Path) -> None:
    config = make_config(
        guided_prob=1.0,
        guided_contexts="registered",
        registration_cache=str(tmp_path / "cache"),
        model={**TINY_MODEL, "prior_gate": True, "guided_refiner": 4},
        num_contexts=[2, 2],
    )
    train_sets, _ = build_datasets(config.data)
    builder = StepBuilder(train_sets, config)
    assert isinstance(builder.registrar, ContextRegistrar)
    assert builder.registrar.cache.directory == tmp_path / "cache"
    batch = builder.build(0)
    assert batch["pass"] == "guided"
    assert torch.allclose(batch["ar_out"][:, 0], batch["context_out"].mean(dim=1), atol=1e-6)
    assert StepBuilder(train_sets, make_config(guided_prob=1.0)).registrar is None
    with pytest.raises(InputError, match="guided_contexts"):
        make_config(guided_contexts="real")
