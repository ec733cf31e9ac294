"""The real-anatomy kit: deterministic, AAL tasks carry their note, folder round trip, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.evaluation.baselines import context_mean, identity
from medverse.evaluation.kit import (
    AAL3_LABELS,
    AAL_NOTE,
    KIT_SEED_NAMESPACE,
    KIT_TASKS,
    KitConfig,
    build_kit,
    kit_affine,
    load_kit,
    write_kit,
)
from medverse.evaluation.protocol import evaluate
from medverse.evaluation.report import write_report

SEGMENTATION = [name for name, info in KIT_TASKS.items() if info.family == "segmentation"]


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


def test_aal_tasks_carry_the_note():
    aal = {name for name in KIT_TASKS if name.endswith("_aal")}
    assert aal == {f"{name}_aal" for name in ("hippocampus", "thalamus", "putamen", "caudate")}
    for name, info in KIT_TASKS.items():
        assert (info.note == AAL_NOTE) == (name in aal), name
    assert "approximately" in AAL_NOTE
    # AAL3 leaves the whole-thalamus ids 81/82 empty: the nuclei are used instead.
    assert 81 not in AAL3_LABELS["thalamus"] and 121 in AAL3_LABELS["thalamus"]


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


def test_config_is_checked():
    with pytest.raises(InputError, match="unknown kit tasks"):
        KitConfig(tasks=("hippocampus",))
    with pytest.raises(InputError, match="num_subjects"):
        KitConfig(num_subjects=1)


def test_enhancement_and_transformation_references(tiny_kit):
    subject = tiny_kit.subjects["kit_000"]
    denoise = tiny_kit.load_case("kit_000", "denoise_gaussian")
    np.testing.assert_array_equal(denoise.output, subject.clean)
    residual = denoise.image - denoise.output
    assert residual.std() == pytest.approx(subject.params["denoise_sigma"], rel=0.1)
    strip = tiny_kit.load_case("kit_000", "skull_strip")
    np.testing.assert_array_equal(strip.output, subject.image * subject.masks["brain_mask"])
    assert (strip.image != strip.output).any()  # the painted scalp is removed


def test_folder_round_trip(tiny_kit, tmp_path):
    root = write_kit(tiny_kit, tmp_path / "kit")
    manifest = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert manifest["not_for_training"] is True
    assert manifest["tasks"]["putamen_aal"]["note"] == AAL_NOTE
    assert "NOT FOR TRAINING" in (root / "README.md").read_text(encoding="utf-8")
    folder = load_kit(root)
    assert folder.subject_ids == tiny_kit.subject_ids and folder.tasks == tiny_kit.tasks
    for task in ("putamen_aal", "bias_field"):
        expected, loaded = tiny_kit.load_case("kit_002", task), folder.load_case("kit_002", task)
        np.testing.assert_allclose(loaded.image, expected.image, atol=1e-6)
        np.testing.assert_allclose(loaded.output, expected.output, atol=1e-6)
        np.testing.assert_allclose(loaded.affine, expected.affine, atol=1e-5)
        assert loaded.spacing == pytest.approx(expected.spacing)


def test_end_to_end_on_the_kit(tiny_kit, tmp_path):
    results = evaluate(
        tiny_kit,
        {"context_mean": context_mean, "identity": identity},
        num_contexts=2,
        num_draws=1,
        tasks=["brain_mask", "putamen_aal", "denoise_gaussian"],
        progress=False,
    )
    assert not results.failed()
    assert results.config["dataset"]["not_for_training"] is True
    index = write_report(results, tmp_path / "report")
    summary = (index.parent / "summary.md").read_text(encoding="utf-8")
    rows = [line for line in summary.splitlines() if line.startswith("| putamen_aal |")]
    assert rows and all(AAL_NOTE in row for row in rows)
    assert AAL_NOTE in index.read_text(encoding="utf-8")
