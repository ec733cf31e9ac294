"""The records of the held-out protocol (``evaluation/records.py``)."""

from __future__ import annotations

import math

import pytest

from medverse.errors import InputError
from medverse.evaluation import records
from medverse.evaluation.records import CaseResult, Results, TaskInfo


def test_task_info_refuses_an_unknown_family() -> None:
    with pytest.raises(InputError, match="family must be one of"):
        TaskInfo("ball", "detection")


def test_case_result_rows_hold_the_metrics_of_their_family_and_no_timing() -> None:
    record = CaseResult("ball", "segmentation", "s1", "mean", 0, 7, ("s2", "s3"), "ok")
    record.metrics = {"dice": 0.5}
    record.seconds = 1.25
    row = record.as_row()
    assert row["contexts"] == "s2;s3"
    assert row["dice"] == 0.5
    assert math.isnan(row["hd95"])
    assert "psnr" not in row
    assert "seconds" not in row


def test_results_failed_lists_the_failed_records() -> None:
    ok = CaseResult("ball", "segmentation", "s1", "mean", 0, 7, (), "ok")
    failed = CaseResult("ball", "segmentation", "s2", "mean", 0, 8, (), "failed", "no reference")
    results = Results({}, {}, None, {}, [ok, failed])
    assert results.failed() == [failed]


def test_the_records_stay_importable_from_the_protocol_for_one_release() -> None:
    # evaluation/protocol.py was split into records.py (the types) and protocol.py (evaluate);
    # the types stay importable from medverse.evaluation.protocol for one release
    import medverse.evaluation as evaluation
    from medverse.evaluation import protocol

    for name in records.__all__:
        assert name in protocol.__all__, name
        assert getattr(protocol, name) is getattr(records, name), name
        if name in evaluation.__all__:
            assert getattr(evaluation, name) is getattr(records, name), name
    for name in ("evaluate", "draw_seed"):
        assert getattr(evaluation, name) is getattr(protocol, name), name


def test_case_is_the_old_name_of_evaluation_case() -> None:
    # two concepts, two names: data.cases.Case (a preprocessed training subject) and
    # EvaluationCase (one subject's input and reference for one task); Case kept for one release
    import medverse.evaluation as evaluation
    from medverse.data.cases import Case as TrainingCase

    assert records.Case is records.EvaluationCase is evaluation.EvaluationCase
    assert evaluation.Case is records.EvaluationCase
    assert TrainingCase is not records.EvaluationCase
