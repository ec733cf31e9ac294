"""``evaluation/kit_build.py``: the kit is small, complete, deterministic and seeded; its image
tasks have the right references."""

from __future__ import annotations

import numpy as np
import pytest

from medverse.evaluation.kit_build import build_kit
from medverse.evaluation.kit_config import KIT_SEED_NAMESPACE, KIT_TASKS, KitConfig, kit_affine


def test_kit_is_small_and_complete(tiny_kit):
    assert tiny_kit.subject_ids == ("kit_000", "kit_001", "kit_002")
    assert set(tiny_kit.tasks) == set(KIT_TASKS)
    np.testing.assert_allclose(tiny_kit.affine, kit_affine(tiny_kit.config))
    for task, info in tiny_kit.tasks.items():
        case = tiny_kit.load_case("kit_001", task)
        assert case.image.shape == case.output.shape == (28, 34, 28), task
        assert case.spacing == (6.0, 6.0, 6.0)
        assert np.isfinite(case.image).all() and np.isfinite(case.output).all()
        if info.family == "segmentation":
            assert set(np.unique(case.output)) == {0, 1}, task  # every structure is present
    subject = tiny_kit.subjects["kit_001"]
    brain = subject.masks["brain_mask"].astype(bool)
    # Tissue masks lie (almost) inside the brain mask.
    for task in ("grey_matter", "white_matter", "thalamus_aal"):
        inside = (subject.masks[task].astype(bool) & brain).sum() / subject.masks[task].sum()
        assert inside > 0.9, task
    assert subject.params["seed_entropy"][0] == KIT_SEED_NAMESPACE


def test_build_is_deterministic_and_seeded():
    config = KitConfig(
        num_subjects=2,
        spacing=8.0,
        shape=(20, 24, 20),
        tasks=("hippocampus_aal", "denoise_gaussian"),
    )
    first, second = build_kit(config), build_kit(config)
    other = build_kit(
        KitConfig(num_subjects=2, spacing=8.0, shape=(20, 24, 20), seed=1, tasks=config.tasks)
    )
    for subject_id in first.subject_ids:
        a, b = first.subjects[subject_id], second.subjects[subject_id]
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.masks["hippocampus_aal"], b.masks["hippocampus_aal"])
        np.testing.assert_array_equal(a.inputs["denoise_gaussian"], b.inputs["denoise_gaussian"])
        assert a.params == b.params
        assert not np.array_equal(a.image, other.subjects[subject_id].image)
    assert set(first.tasks) == {"hippocampus_aal", "denoise_gaussian"}
    with pytest.raises(KeyError, match="no task 'grey_matter'"):
        first.load_case("kit_000", "grey_matter")


def test_enhancement_and_transformation_references(tiny_kit):
    subject = tiny_kit.subjects["kit_000"]
    denoise = tiny_kit.load_case("kit_000", "denoise_gaussian")
    np.testing.assert_array_equal(denoise.output, subject.clean)
    residual = denoise.image - denoise.output
    assert residual.std() == pytest.approx(subject.params["denoise_sigma"], rel=0.1)
    strip = tiny_kit.load_case("kit_000", "skull_strip")
    np.testing.assert_array_equal(strip.output, subject.image * subject.masks["brain_mask"])
    assert (strip.image != strip.output).any()  # the painted scalp is removed
