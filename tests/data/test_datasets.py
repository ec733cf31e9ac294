"""In-memory datasets and mixes; the names that moved out of ``data/datasets.py`` stay there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medverse.data as data
from medverse.data import cases, datasets, nnunet_raw, preprocess
from medverse.data.cases import Case
from medverse.data.datasets import DatasetMix, InMemoryDataset
from medverse.data.nnunet_raw import NnUNetDataset
from medverse.errors import InputError

# what tests/data/conftest.py writes (synthetic_spec)
NUM_SUBJECTS = 5


# ---------------------------------------------------------------------------------------------
# mixes and in-memory datasets
# ---------------------------------------------------------------------------------------------


def small_case(name: str, shape=(6, 6, 6)) -> Case:
    rng = np.random.default_rng(0)
    labels = (rng.random(shape) > 0.5).astype(np.int16)
    return Case(
        name,
        rng.random((1, *shape)).astype(np.float32),
        labels,
        ("T1",),
        {0: "bg", 1: "x"},
        (1.0,) * 3,
    )


def test_dataset_mix_weights(synthetic_root: Path) -> None:
    a = NnUNetDataset(synthetic_root, weight=3.0)
    b = InMemoryDataset([small_case("c0"), small_case("c1")], name="memory")
    mix = DatasetMix([a, b])
    assert mix.probabilities == pytest.approx((0.75, 0.25))
    assert mix.num_cases == NUM_SUBJECTS + 2 and len(mix) == 2 and mix[1] is b
    rng = np.random.default_rng(0)
    draws = [mix.choose(rng) for _ in range(2000)]
    assert np.mean(np.asarray(draws) == 0) == pytest.approx(0.75, abs=0.04)
    assert {mix.choose(rng, among=[1]) for _ in range(20)} == {1}
    assert DatasetMix([a, b], weights=[1, 1]).probabilities == pytest.approx((0.5, 0.5))
    with pytest.raises(InputError, match="unique"):
        DatasetMix([a, NnUNetDataset(synthetic_root)])
    with pytest.raises(InputError, match="positive"):
        DatasetMix([a, b], weights=[1, 0])
    with pytest.raises(InputError, match="weight"):
        NnUNetDataset(synthetic_root, weight=-1)


def test_in_memory_dataset_checks() -> None:
    dataset = InMemoryDataset([small_case("a"), small_case("b")], labels=[1])
    assert dataset.label_ids == (1,) and dataset.labeled_indices == (0, 1)
    assert dataset.load_case(1).name == "b"
    with pytest.raises(InputError, match="no case"):
        InMemoryDataset([])
    with pytest.raises(InputError, match="unknown label"):
        InMemoryDataset([small_case("a")], labels=[7])


def test_the_names_that_moved_stay_importable_from_their_old_home() -> None:
    # data/datasets.py was split into cases.py, preprocess.py and nnunet_raw.py; every name it
    # exported stays importable from medverse.data.datasets for one release
    homes = {name: cases for name in cases.__all__}
    homes.update({name: preprocess for name in preprocess.__all__})
    homes.update({name: nnunet_raw for name in nnunet_raw.__all__})
    homes.update({name: datasets for name in ("DatasetMix", "InMemoryDataset")})
    assert sorted(homes) == sorted(datasets.__all__)
    for name, module in homes.items():
        assert getattr(datasets, name) is getattr(module, name), name
        assert getattr(data, name) is getattr(module, name), name
    # the private helpers and the constant other modules could take from datasets.py
    assert datasets._read_image is nnunet_raw._read_image
    assert datasets._read_shape is nnunet_raw._read_shape
    assert datasets.CACHE_VERSION == nnunet_raw.CACHE_VERSION
    assert datasets._as_label_dtype is preprocess._as_label_dtype
