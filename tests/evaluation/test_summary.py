"""``evaluation/summary.py``: per (task, method) counts and statistics."""

from __future__ import annotations

import numpy as np

from medverse.evaluation.baselines import context_mean
from medverse.evaluation.protocol import evaluate
from medverse.evaluation.summary import summarize


def test_summarize_counts_and_statistics(ball_dataset):
    results = evaluate(
        ball_dataset,
        {"mean": context_mean},
        num_contexts=1,
        num_draws=2,
        tasks=["ball"],
        progress=False,
    )
    (row,) = summarize(results)
    dice_values = [r.metrics["dice"] for r in results.records]
    assert row["cases"] == 8 and row["failed"] == 0 and row["dice_n"] == 8
    assert np.isclose(row["dice_mean"], np.mean(dice_values))
    assert np.isclose(row["dice_sd"], np.std(dice_values, ddof=1))
