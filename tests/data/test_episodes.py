"""Episodes: replayable, right shapes, every task family, consistent members."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medverse.data.augment import RandomIntensityAugmentation, RandomSpatialAugmentation
from medverse.data.cases import Case
from medverse.data.datasets import DatasetMix, InMemoryDataset
from medverse.data.degradations import ENHANCEMENT_OPS, default_enhancements
from medverse.data.episodes import (
    Episode,
    EpisodeDataset,
    EpisodeSampler,
    collate_episodes,
    rotate,
)
from medverse.data.nnunet_raw import NnUNetDataset
from medverse.data.phantoms import make_subject
from medverse.errors import InputError
from medverse.intensity import minmax_scale
from medverse.types import TASK_FAMILIES

WINDOW = 16


@pytest.fixture(scope="module")
def dataset(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> NnUNetDataset:
    cache = tmp_path_factory.mktemp("episode-cache")
    dataset = NnUNetDataset(synthetic_root, cache_dir=cache, brain_mask_from_labels=True)
    dataset.prepare()
    return dataset


@pytest.fixture(scope="module")
def sampler(dataset: NnUNetDataset) -> EpisodeSampler:
    return EpisodeSampler(dataset, num_contexts=(1, 3), window=WINDOW, window_mode="mixed", seed=3)


@pytest.fixture(scope="module")
def episodes(sampler: EpisodeSampler) -> list[Episode]:
    return [sampler.sample(i) for i in range(60)]


def plain_sampler(dataset, **kwargs) -> EpisodeSampler:
    """Full grid, no augmentation: outputs can be recomputed from the cases."""
    return EpisodeSampler(dataset, window=None, augment=False, **kwargs)


def members(episode: Episode, dataset) -> list[Case]:
    return [dataset.load_case(i) for i in episode.params["case_indices"]]


def test_sample_is_replayable(sampler: EpisodeSampler) -> None:
    a, b = sampler.sample(17), sampler.sample(17)
    for name in ("target", "target_reference", "context_in", "context_out"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.task, a.seed, a.index, a.params) == (b.task, b.seed, 17, b.params)
    c = sampler.replay(a.seed)
    np.testing.assert_array_equal(a.context_out, c.context_out)
    assert c.index is None and c.params == a.params
    assert sampler.sample(18).seed != a.seed


def test_sample_from_generator_is_replayable_by_seed(sampler: EpisodeSampler) -> None:
    episode = sampler.sample(np.random.default_rng(0))
    np.testing.assert_array_equal(sampler.replay(episode.seed).target, episode.target)


def test_same_seed_same_episodes_in_a_new_sampler(dataset: NnUNetDataset, sampler) -> None:
    twin = EpisodeSampler(dataset, num_contexts=(1, 3), window=WINDOW, window_mode="mixed", seed=3)
    np.testing.assert_array_equal(twin.sample(5).context_in, sampler.sample(5).context_in)
    other = EpisodeSampler(dataset, num_contexts=(1, 3), window=WINDOW, window_mode="mixed", seed=4)
    assert other.sample(5).seed != sampler.sample(5).seed


def test_shapes_types_and_ranges(episodes: list[Episode]) -> None:
    for episode in episodes:
        num_contexts = episode.num_contexts
        assert 1 <= num_contexts <= 3 and num_contexts == episode.params["num_contexts"]
        assert episode.target.shape == episode.target_reference.shape == (1, WINDOW, WINDOW, WINDOW)
        assert episode.context_in.shape == episode.context_out.shape
        assert episode.context_in.shape == (num_contexts, 1, WINDOW, WINDOW, WINDOW)
        for volume in (
            episode.target,
            episode.target_reference,
            episode.context_in,
            episode.context_out,
        ):
            assert volume.dtype == np.float32
            assert volume.min() >= 0.0 and volume.max() <= 1.0
        assert episode.family in TASK_FAMILIES and episode.task.startswith(episode.family)
        assert len(set(episode.params["cases"])) == num_contexts + 1  # distinct subjects
        json.dumps(episode.params)


def test_every_task_is_produced(episodes: list[Episode]) -> None:
    tasks = collections.Counter(e.task for e in episodes)
    expected = {
        "segmentation",
        "transformation:0->1",
        "transformation:1->0",
        "transformation:skull_strip",
    }
    expected |= {f"enhancement:{name}" for name in default_enhancements()}
    assert set(tasks) == expected, tasks
    families = collections.Counter(e.family for e in episodes)
    assert families["segmentation"] > families["enhancement"] / 2  # default weights 0.5/0.25/0.25
    modes = {e.params["window_mode"] for e in episodes}
    assert modes == {"crop", "resize"}


def test_segmentation_masks_binary_and_subset_shared(dataset: NnUNetDataset) -> None:
    sampler = plain_sampler(dataset, task_weights={"segmentation": 1}, num_contexts=(2, 4), seed=1)
    sizes = set()
    for index in range(8):
        episode = sampler.sample(index)
        classes = episode.params["classes"]
        sizes.add(len(classes))
        assert 1 <= len(classes) <= 5 and classes == sorted(set(classes))
        outputs = [episode.target_reference, *episode.context_out]
        for output, case in zip(outputs, members(episode, dataset), strict=True):
            assert set(np.unique(output).tolist()) <= {0.0, 1.0}
            np.testing.assert_array_equal(output[0], np.isin(case.labels, classes))
        modality = episode.params["modality"]
        inputs = [episode.target, *episode.context_in]
        for image, case in zip(inputs, members(episode, dataset), strict=True):
            np.testing.assert_allclose(image[0], minmax_scale(case.images[modality]), atol=1e-6)
    assert len(sizes) > 1


def test_segmentation_masks_stay_binary_with_augmentation(episodes: list[Episode]) -> None:
    for episode in episodes:
        if episode.family == "segmentation":
            for output in (episode.target_reference, episode.context_out):
                assert set(np.unique(output).tolist()) <= {0.0, 1.0}


def test_transformation_pairs_modalities_of_one_subject(dataset: NnUNetDataset) -> None:
    sampler = plain_sampler(dataset, task_weights={"transformation": 1}, num_contexts=2, seed=0)
    seen = set()
    for index in range(12):
        episode = sampler.sample(index)
        seen.add(episode.task)
        pairs = zip(
            [episode.target, *episode.context_in],
            [episode.target_reference, *episode.context_out],
            members(episode, dataset),
            strict=True,
        )
        for image, output, case in pairs:
            source = case.images[episode.params["modality"]]
            np.testing.assert_allclose(image[0], minmax_scale(source), atol=1e-6)
            if episode.task == "transformation:skull_strip":
                assert np.all(output[0][case.labels == 0] == 0)
                np.testing.assert_allclose(
                    output[0], minmax_scale(minmax_scale(source) * (case.labels > 0)), atol=1e-6
                )
            else:
                destination = case.images[episode.params["output_modality"]]
                np.testing.assert_allclose(output[0], minmax_scale(destination), atol=1e-6)
    assert seen == {"transformation:0->1", "transformation:1->0", "transformation:skull_strip"}


@pytest.mark.parametrize("name", sorted(ENHANCEMENT_OPS))
def test_enhancement_pairs_are_degraded_and_clean(dataset: NnUNetDataset, name: str) -> None:
    sampler = plain_sampler(
        dataset, task_weights={"enhancement": 1}, enhancements=[name], num_contexts=2
    )
    episode = sampler.sample(0)
    assert episode.task == f"enhancement:{name}"
    degradations = episode.params["degradations"]
    inputs = [episode.target, *episode.context_in]
    outputs = [episode.target_reference, *episode.context_out]
    for k, case in enumerate(members(episode, dataset)):
        clean = minmax_scale(case.images[episode.params["modality"]])
        np.testing.assert_allclose(outputs[k][0], minmax_scale(clean), atol=1e-6)
        replayed = ENHANCEMENT_OPS[name](**degradations[k])(clean)
        np.testing.assert_allclose(inputs[k][0], minmax_scale(replayed), atol=1e-5)
        assert not np.allclose(inputs[k], outputs[k], atol=1e-3)
    # strength shared by the episode, realisation per member
    strength = {"gaussian_noise": "std", "salt_and_pepper": "amount", "inpainting": "fraction"}
    if name in strength:
        assert len({d[strength[name]] for d in degradations}) == 1
        assert len({d["seed"] for d in degradations}) == len(degradations)
    if name == "super_resolution":
        assert len({(d["axis"], d["factor"]) for d in degradations}) == 1


def test_shared_augmentation_keeps_masks_aligned_with_images() -> None:
    """Images that encode their own labels must still match the masks after augmentation."""
    cases = []
    for k in range(4):
        labels = make_subject((20, 20, 20), num_classes=2, num_modalities=1, seed=k).labels
        image = (labels / 2.0).astype(np.float32)[None]  # 0, 0.5, 1: the label, readable back
        names = {0: "background", 1: "body", 2: "structure"}
        cases.append(Case(f"s{k}", image, labels, ("coded",), names, (1.0,) * 3))
    sampler = EpisodeSampler(
        InMemoryDataset(cases, name="coded"),
        task_weights={"segmentation": 1},
        num_contexts=3,
        window=None,
        spatial=RandomSpatialAugmentation(rot90_prob=1.0, elastic_prob=1.0, anisotropy_prob=0.0),
        intensity=RandomIntensityAugmentation(gamma_prob=0.0, contrast_prob=0.0),
        seed=0,
    )
    for index in range(4):
        episode = sampler.sample(index)
        assert episode.params["spatial"]["elastic_seed"] is not None
        classes = episode.params["classes"]
        inputs = [episode.target, *episode.context_in]
        outputs = [episode.target_reference, *episode.context_out]
        for image, mask in zip(inputs, outputs, strict=True):
            decoded = np.isin(np.round(image[0] * 2), classes)
            overlap = 2 * (decoded & (mask[0] > 0.5)).sum() / (decoded.sum() + mask.sum())
            assert overlap > 0.9
        unmoved = np.isin(cases[episode.params["case_indices"][0]].labels, classes)
        assert not np.array_equal(unmoved, episode.target_reference[0] > 0.5)  # it did move


def test_crops_centre_on_foreground(dataset: NnUNetDataset) -> None:
    sampler = EpisodeSampler(
        dataset,
        task_weights={"segmentation": 1},
        window=8,
        window_mode="crop",
        foreground_crop_prob=1.0,
        augment=False,
        seed=0,
    )
    for index in range(6):
        assert sampler.sample(index).target_reference.max() == 1.0


def test_rotate_uses_each_member_once(sampler: EpisodeSampler) -> None:
    episode = sampler.sample(4)
    while episode.num_contexts < 2:
        episode = sampler.sample(episode.index + 1)
    targets = []
    for k in range(episode.num_contexts + 1):
        rotated = rotate(episode, k)
        assert rotated.context_in.shape == episode.context_in.shape
        assert rotated.params["cases"][0] == episode.params["cases"][k]
        assert sorted(rotated.params["cases"]) == sorted(episode.params["cases"])
        targets.append(rotated.target)
        members_in = np.concatenate([rotated.target[None], rotated.context_in])
        members_out = np.concatenate([rotated.target_reference[None], rotated.context_out])
        original_in = np.concatenate([episode.target[None], episode.context_in])
        original_out = np.concatenate([episode.target_reference[None], episode.context_out])
        order = [episode.params["cases"].index(c) for c in rotated.params["cases"]]
        assert rotated.params["case_indices"] == [episode.params["case_indices"][i] for i in order]
        np.testing.assert_array_equal(members_in, original_in[order])
        np.testing.assert_array_equal(members_out, original_out[order])
    np.testing.assert_array_equal(targets[1], episode.context_in[0])
    assert rotate(episode, 0) is episode
    with pytest.raises(InputError, match="k must be"):
        rotate(episode, episode.num_contexts + 1)


def test_contexts_capped_by_dataset_size(dataset: NnUNetDataset) -> None:
    sampler = EpisodeSampler(dataset, num_contexts=10, window=8, augment=False)
    assert sampler.sample(0).num_contexts == len(dataset) - 1


def test_members_on_other_grids_are_resized_to_the_target() -> None:
    cases = []
    for k, shape in enumerate([(12, 12, 12), (16, 10, 14), (9, 12, 11)]):
        subject = make_subject(shape, num_classes=3, num_modalities=1, seed=k)
        names = {0: "background", 1: "body", 2: "a", 3: "b"}
        cases.append(Case(f"c{k}", subject.images, subject.labels, ("MR",), names, (1.0,) * 3))
    dataset = InMemoryDataset(cases, name="mixed_shapes")
    sampler = EpisodeSampler(
        dataset, num_contexts=2, window=None, augment=False, task_weights={"segmentation": 1}
    )
    episode = sampler.sample(0)
    target_shape = cases[episode.params["case_indices"][0]].shape
    assert episode.context_in.shape[2:] == target_shape
    assert sum(episode.params["resized_to_target_grid"]) == 2
    assert set(np.unique(episode.context_out).tolist()) <= {0.0, 1.0}


def test_mix_of_datasets(dataset: NnUNetDataset) -> None:
    cases = []
    for k in range(3):
        subject = make_subject((12, 12, 12), num_classes=2, num_modalities=1, seed=k)
        cases.append(
            Case(
                f"m{k}",
                subject.images,
                subject.labels,
                ("CT",),
                {0: "bg", 1: "body", 2: "x"},
                (1.0,) * 3,
            )
        )
    memory = InMemoryDataset(cases, name="memory")
    mix = DatasetMix([dataset, memory], weights=[1, 1])
    sampler = EpisodeSampler(mix, num_contexts=2, window=8, augment=False, seed=0)
    names = collections.Counter(sampler.sample(i).params["dataset"] for i in range(30))
    assert set(names) == {dataset.name, "memory"}
    # single-channel dataset without brain mask: transformation is impossible there
    only = EpisodeSampler(memory, task_weights={"transformation": 1, "enhancement": 1}, window=8)
    assert {only.sample(i).family for i in range(10)} == {"enhancement"}
    with pytest.raises(InputError, match="no dataset supports"):
        EpisodeSampler(memory, task_weights={"transformation": 1})


def test_bad_options(dataset: NnUNetDataset) -> None:
    with pytest.raises(InputError, match="task_weights key must be one of"):
        EpisodeSampler(dataset, task_weights={"registration": 1})
    with pytest.raises(InputError, match="Did you mean 'segmentation'"):
        EpisodeSampler(dataset, task_weights={"segmentaton": 1})
    with pytest.raises(InputError, match="num_contexts"):
        EpisodeSampler(dataset, num_contexts=(3, 1))
    with pytest.raises(InputError, match="window_mode"):
        EpisodeSampler(dataset, window_mode="zoom")
    with pytest.raises(InputError, match="enhancement"):
        EpisodeSampler(dataset, enhancements=["denoise_everything"])
    one = InMemoryDataset([dataset.load_case(0)], name="one")
    with pytest.raises(InputError, match="episodes need >= 2"):
        EpisodeSampler(one)


def test_dataloader_and_collate(sampler: EpisodeSampler) -> None:
    episodes = EpisodeDataset(sampler, length=4)
    loader = torch.utils.data.DataLoader(episodes, batch_size=4, collate_fn=collate_episodes)
    (batch,) = list(loader)
    num_contexts = min(episodes[i].num_contexts for i in range(4))
    assert batch["target"].shape == (4, 1, WINDOW, WINDOW, WINDOW)
    assert batch["context_in"].shape == (4, num_contexts, 1, WINDOW, WINDOW, WINDOW)
    assert batch["context_out"].dtype == torch.float32
    assert len(batch["task"]) == len(batch["seed"]) == 4
    np.testing.assert_array_equal(batch["target"][2].numpy(), sampler.sample(2).target)
    episodes.set_epoch(1)
    assert episodes[0].index == 4
    with pytest.raises(InputError, match="window shape"):
        collate_episodes([sampler.sample(0), rotate_free_resize(sampler.sample(1))])


def rotate_free_resize(episode: Episode) -> Episode:
    """An episode with another window, to provoke the collate error."""
    import dataclasses

    return dataclasses.replace(episode, target=episode.target[:, :8])


def test_aligned_episodes_are_the_target_under_a_small_residual(dataset: NnUNetDataset) -> None:
    sampler = EpisodeSampler(
        dataset,
        num_contexts=3,
        window=None,
        task_weights={"segmentation": 1.0},
        aligned_prob=1.0,
        residual_voxels=(0.5, 1.5),
        seed=5,
    )
    episode = sampler.sample(0)
    assert episode.params["aligned"] and len(episode.params["residuals"]) == 3
    assert all(0.5 <= r["max_displacement"] <= 1.5 for r in episode.params["residuals"])
    target = episode.target_reference[0] > 0.5
    for mask in episode.context_out[:, 0]:
        assert mask.min() >= 0 and mask.max() <= 1
        assert ((mask > 0) & (mask < 1)).any()  # soft warped edges
        # registered: the context mask is the target's, moved by at most ~1.5 voxels
        warped = mask > 0.5
        dice = 2 * (warped & target).sum() / (warped.sum() + target.sum())
        assert dice > 0.7
    # the same episode replays; an unaligned sampler's contexts are other subjects
    again = sampler.replay(episode.seed)
    assert np.array_equal(again.context_out, episode.context_out)
    plain = EpisodeSampler(
        dataset, num_contexts=3, window=None, task_weights={"segmentation": 1.0}, seed=5
    )
    assert not plain.sample(0).params["aligned"]
    with pytest.raises(InputError, match="aligned_prob"):
        EpisodeSampler(dataset, aligned_prob=2.0)
