"""Report files: deterministic CSV/JSON, summary with notes and failures, a static index.html."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medverse.evaluation import figures, report, summary
from medverse.evaluation.baselines import context_mean, identity
from medverse.evaluation.protocol import evaluate
from medverse.evaluation.report import write_report

DETERMINISTIC = ("cases.csv", "cases.json", "summary.csv", "summary.md")


def run(dataset, out: Path) -> Path:
    def crashing(*args, **kwargs):
        raise RuntimeError("boom")

    crashing.task_families = ("segmentation",)
    results = evaluate(
        dataset,
        {"mean": context_mean, "identity": identity, "crash": crashing},
        num_contexts=2,
        num_draws=2,
        seed=3,
        progress=False,
        model_hash="test-hash",
    )
    return write_report(results, out)


@pytest.mark.slow  # an end-to-end evaluate run, ~10 s on 2 cores
def test_two_runs_with_the_same_seeds_give_identical_files(make_ball_dataset, tmp_path):
    dataset = make_ball_dataset(num_subjects=4, broken={"s2": "missing"})
    first = run(dataset, tmp_path / "a")
    second = run(dataset, tmp_path / "b")
    for name in DETERMINISTIC:
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name
    # No temporary files are left behind.
    assert not [p for p in first.parent.rglob(".tmp-*")]


def test_report_contents(make_ball_dataset, tmp_path):
    index = run(make_ball_dataset(num_subjects=4, broken={"s2": "missing"}), tmp_path / "r")
    root = index.parent
    document = json.loads((root / "cases.json").read_text(encoding="utf-8"))
    assert document["model_hash"] == "test-hash"
    assert document["config"]["seed"] == 3
    assert all(
        case["draw_seed"] is None or isinstance(case["draw_seed"], int)
        for case in document["cases"]
    )
    assert "timestamp" not in (root / "cases.json").read_text(encoding="utf-8").lower()
    header = (root / "cases.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("task,family,target,method,draw,draw_seed,contexts,status,reason,dice")

    summary = (root / "summary.md").read_text(encoding="utf-8")
    # The note sits in the same table row as the noted task's numbers.
    noted_rows = [line for line in summary.splitlines() if line.startswith("| ball_noted | mean")]
    assert noted_rows and "APPROXIMATE LABELS NOTE" in noted_rows[0]
    # Failures are counted by name.
    assert "reference output is missing" in summary and "RuntimeError: boom" in summary

    page = index.read_text(encoding="utf-8")
    assert "APPROXIMATE LABELS NOTE" in page and "test-hash" in page
    links = re.findall(r"(?:href|src)='([^']+)'", page)
    assert links and all(not link.startswith(("/", "http")) for link in links)
    for link in links:
        assert (root / link).exists(), link
    assert (root / "figures" / "box_dice.png").exists() and (
        root / "figures" / "box_psnr.png"
    ).exists()
    triplanar = sorted(p.name for p in (root / "figures").glob("ball_*.png"))
    assert triplanar, "segmentation example figures are missing"


def test_the_names_of_the_split_report_stay_importable_from_their_old_home() -> None:
    # report.py was split into summary.py and figures.py; its public names stay importable from
    # medverse.evaluation.report for one release
    assert report.summarize is summary.summarize
    for name in figures.__all__:
        assert getattr(report, name) is getattr(figures, name), name
    assert sorted(report.__all__) == sorted([*summary.__all__, *figures.__all__, "write_report"])
