"""The held-out protocol: seeded draws, same draws for every method, failures recorded."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.evaluation.baselines import context_mean, identity
from medverse.evaluation.protocol import draw_seed, evaluate
from medverse.evaluation.records import Results


def recording_method(log: list):
    def method(target_image, context_images, context_outputs, *, spacing, task_family):
        log.append((len(context_images), tuple(spacing), task_family))
        return context_mean(
            target_image, context_images, context_outputs, spacing=spacing, task_family=task_family
        )

    return method


def test_draws_are_seeded_recorded_and_shared_by_methods(ball_dataset):
    log: list = []
    results = evaluate(
        ball_dataset,
        {"mean": context_mean, "recorder": recording_method(log)},
        num_contexts=2,
        num_draws=3,
        seed=7,
        tasks=["ball"],
        progress=False,
        model_hash="sha256:abc",
    )
    assert isinstance(results, Results)
    assert len(results.records) == 4 * 3 * 2  # targets x draws x methods
    assert all(r.status == "ok" for r in results.records)
    assert log[0] == (2, (1.5, 1.0, 2.0), "segmentation")
    by_key: dict = {}
    for record in results.records:
        assert record.target not in record.contexts and len(set(record.contexts)) == 2
        assert record.draw_seed == draw_seed(7, "ball", record.target, record.draw)
        # The recorded seed replays the draw.
        pool = [s for s in ball_dataset.subject_ids if s != record.target]
        rng = np.random.default_rng(record.draw_seed)
        assert record.contexts == tuple(pool[i] for i in rng.choice(len(pool), 2, replace=False))
        by_key.setdefault((record.target, record.draw), set()).add(record.contexts)
    assert all(len(contexts) == 1 for contexts in by_key.values())  # same draw for every method
    assert results.model_hash == "sha256:abc"
    assert results.config["seed"] == 7 and results.config["num_contexts"] == 2
    assert results.versions["medverse"] and results.versions["monai"]
    assert results.config["dataset"] == {"name": "balls", "shape": [24, 26, 22]}


def test_draw_seed_is_a_pure_function():
    assert draw_seed(0, "ball", "s1", 3) == draw_seed(0, "ball", "s1", 3)
    seeds = {
        draw_seed(0, task, target, draw)
        for task in ("a", "b")
        for target in ("s0", "s1")
        for draw in range(4)
    }
    assert len(seeds) == 16
    assert draw_seed(1, "a", "s0", 0) != draw_seed(0, "a", "s0", 0)


def test_seed_does_not_depend_on_selected_tasks(ball_dataset):
    both = evaluate(
        ball_dataset,
        {"mean": context_mean},
        num_contexts=2,
        num_draws=2,
        tasks=["smooth", "ball"],
        progress=False,
    )
    one = evaluate(
        ball_dataset,
        {"mean": context_mean},
        num_contexts=2,
        num_draws=2,
        tasks=["ball"],
        progress=False,
    )
    rows = [r.as_row() for r in both.records if r.task == "ball"]
    assert rows == [r.as_row() for r in one.records]


def test_bad_cases_are_recorded_as_failed_and_the_run_goes_on(make_ball_dataset):
    dataset = make_ball_dataset(num_subjects=5, broken={"s1": "grid", "s3": "missing"})

    def crashing(*args, **kwargs):
        raise RuntimeError("boom")

    results = evaluate(
        dataset,
        {"mean": context_mean, "crash": crashing},
        num_contexts=2,
        num_draws=2,
        tasks=["ball", "no_such_task"],
        progress=False,
    )
    failed = results.failed()
    reasons = {(r.task, r.target, r.method): r.reason for r in failed}
    assert "differs from the image grid" in reasons[("ball", "s1", "mean")]
    assert "reference output is missing" in reasons[("ball", "s3", "mean")]
    assert "no task 'no_such_task'" in reasons[("no_such_task", "s0", "mean")]
    assert reasons[("ball", "s0", "crash")] == "RuntimeError: boom"
    ok = [r for r in results.records if r.status == "ok"]
    # Targets s0, s2, s4 succeed with the mean, and broken subjects are never used as contexts.
    assert {r.target for r in ok} == {"s0", "s2", "s4"}
    assert all(not {"s1", "s3"} & set(r.contexts) for r in ok)
    assert all(r.method == "mean" and math.isfinite(r.metrics["dice"]) for r in ok)


def test_too_few_subjects_is_a_named_failure(make_ball_dataset):
    results = evaluate(
        make_ball_dataset(num_subjects=3),
        {"mean": context_mean},
        num_contexts=4,
        num_draws=1,
        tasks=["ball"],
        progress=False,
    )
    assert all(
        r.status == "failed" and "only 2 usable other subjects" in r.reason for r in results.records
    )


def test_methods_only_run_on_their_families(ball_dataset):
    results = evaluate(
        ball_dataset,
        {"mean": context_mean, "identity": identity},
        num_contexts=1,
        num_draws=1,
        progress=False,
    )
    seen = {(r.task, r.method) for r in results.records}
    assert ("ball", "identity") not in seen and ("smooth", "identity") in seen
    smooth = [r for r in results.records if r.task == "smooth" and r.method == "identity"]
    assert all(r.status == "ok" and 20 < r.metrics["psnr"] < 35 for r in smooth)


def test_wrong_output_shape_and_tensor_outputs(ball_dataset):
    import torch

    def wrong(target_image, *args, **kwargs):
        return np.zeros((3, 3, 3))

    def as_tensor(target_image, context_images, context_outputs, **kwargs):
        return torch.from_numpy(context_outputs[0])[None, None]  # (1, 1, X, Y, Z) is squeezed

    results = evaluate(
        ball_dataset,
        {"wrong": wrong, "tensor": as_tensor},
        num_contexts=1,
        num_draws=1,
        tasks=["ball"],
        progress=False,
    )
    assert all(
        r.status == "failed" and "expected the target grid" in r.reason
        for r in results.records
        if r.method == "wrong"
    )
    assert all(r.status == "ok" for r in results.records if r.method == "tensor")


def test_examples_kept_for_figures(ball_dataset):
    results = evaluate(
        ball_dataset,
        {"mean": context_mean},
        num_contexts=1,
        num_draws=2,
        tasks=["ball"],
        progress=False,
        num_examples=2,
    )
    assert [(e.target, e.draw) for e in results.examples] == [("s0", 0), ("s1", 0)]


def test_bad_settings_raise(ball_dataset):
    with pytest.raises(InputError, match="methods is empty"):
        evaluate(ball_dataset, {}, progress=False)
    with pytest.raises(InputError, match="num_contexts and num_draws"):
        evaluate(ball_dataset, {"mean": context_mean}, num_contexts=0, progress=False)
    with pytest.raises(InputError, match="load_case"):
        evaluate(object(), {"mean": context_mean}, progress=False)


def test_progress_bar_runs(ball_dataset, capsys):
    evaluate(
        ball_dataset,
        {"mean": context_mean},
        num_contexts=1,
        num_draws=1,
        tasks=["ball"],
        progress=True,
    )
    assert "evaluate" in capsys.readouterr().err
