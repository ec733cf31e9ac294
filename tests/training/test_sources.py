"""Where training subjects come from (``training/sources.py``): synthetic, MNI and nnU-Net
sources made into training and held-out datasets."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from medverse.data.episodes import EpisodeSampler
from medverse.data.synthesis import write_synthetic_dataset
from medverse.errors import InputError
from medverse.training.config import DataSource
from medverse.training.sources import build_datasets

SYNTHETIC = dict(
    kind="synthetic", shape=(12, 12, 12), num_subjects=2, num_classes=2, num_modalities=2, seed=4
)


def test_a_synthetic_source_gives_one_dataset_per_template_and_holds_out_cases() -> None:
    source = DataSource(num_val_cases=2, num_templates=2, weight=3.0, **SYNTHETIC)
    train, val = build_datasets([source])
    assert [d.name for d in train] == ["synthetic4_0", "synthetic4_1"]
    assert [d.name for d in val] == ["synthetic4_0_val", "synthetic4_1_val"]
    assert [len(d) for d in train + val] == [2, 2, 2, 2]
    assert [d.weight for d in train + val] == [1.5, 1.5, 1.5, 1.5]  # the source's weight split
    case = train[0].load_case(0)
    assert case.shape == (12, 12, 12) and case.images.dtype == np.float32
    assert case.channel_names == ("synth0", "synth1")
    assert case.label_names == {0: "background", 1: "body", 2: "structure_2"}
    held_out = val[0].load_case(0)
    assert (case.name, held_out.name) == ("synth_0000", "synth_0002")
    # the same subjects every time; the two templates are different anatomies
    again, _ = build_datasets([source])
    np.testing.assert_array_equal(again[0].load_case(0).images, case.images)
    assert not np.array_equal(train[1].load_case(0).labels, case.labels)
    _, none = build_datasets([DataSource(num_val_cases=0, **SYNTHETIC)])
    assert none == []


def test_nnunet_source_holds_out_the_last_cases(tmp_path: Path) -> None:
    root = write_synthetic_dataset(
        tmp_path / "Dataset008_Split", num_subjects=5, shape=(12, 12, 12)
    )
    train_sets, val_sets = build_datasets(
        [DataSource(kind="nnunet", path=str(root), num_val_cases=2)]
    )
    assert [len(d) for d in train_sets] == [3] and [len(d) for d in val_sets] == [2]
    assert set(train_sets[0].case_names).isdisjoint(val_sets[0].case_names)
    with pytest.raises(InputError, match="fewer than 2 for training"):
        build_datasets([DataSource(kind="nnunet", path=str(root), num_val_cases=4)])


def test_mni_source_builds_two_datasets_that_episodes_sample() -> None:
    source = DataSource(
        kind="mni", num_subjects=3, num_val_cases=2, shape=(24, 28, 24), voxel_mm=(8.0, 8.0)
    )
    train, val = build_datasets([source])
    assert [d.name for d in train] == ["mni0_tissue", "mni0_regions"]
    assert [d.name for d in val] == ["mni0_tissue_val", "mni0_regions_val"]
    assert [len(d) for d in train + val] == [3, 3, 2, 2]
    assert train[0].brain_mask_from_labels and not train[1].brain_mask_from_labels
    sampler = EpisodeSampler(train, num_contexts=2, window=16, seed=0)
    tasks = {sampler.sample(i).task for i in range(40)}
    assert "segmentation" in tasks and "transformation:skull_strip" in tasks
    assert {"transformation:0->1", "transformation:1->0"} & tasks


def test_a_thresholded_tissue_source_gives_no_brain_masks() -> None:
    common = dict(kind="mni", num_subjects=2, num_val_cases=0, shape=(24, 28, 24))
    source = DataSource(voxel_mm=(8.0, 8.0), tissue_threshold=0.5, **common)
    train, _ = build_datasets([source])
    tissue = next(d for d in train if d.name.endswith("_tissue"))
    plain, _ = build_datasets([DataSource(voxel_mm=(8.0, 8.0), **common)])
    plain_tissue = next(d for d in plain if d.name.endswith("_tissue"))
    assert plain_tissue.brain_mask_from_labels and not tissue.brain_mask_from_labels
    with pytest.raises(ValueError, match="tissue_threshold"):
        DataSource(voxel_mm=(8.0, 8.0), tissue_threshold=-0.1, **common)


def test_one_held_out_nnunet_case_is_no_validation_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_synthetic_dataset(tmp_path / "Dataset009_One", num_subjects=4, shape=(12, 12, 12))
    with caplog.at_level(logging.WARNING, logger="medverse.training.sources"):
        train, val = build_datasets([DataSource(kind="nnunet", path=str(root), num_val_cases=1)])
    assert [len(d) for d in train] == [3] and val == []
    assert "num_val_cases=1 cannot form an episode" in caplog.text
