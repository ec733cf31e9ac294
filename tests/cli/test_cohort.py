"""Cohort inference: `medverse predict --targets-from DIR|LIST.csv --output-dir OUT`.

One process (resume, failures, CSV lists) and two ranks under torchrun (gloo, CPU): the same
outputs as one process, each target written once, one summary row per target.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medverse.checkpoint.io import save_model
from medverse.cli.main import app
from medverse.inference.cohort import discover_targets
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

ROOT = Path(__file__).parents[2]
SHAPE = (22, 20, 14)
CASES = [f"case_{i:03d}" for i in range(6)]


def _volume(rng: np.random.Generator, shift: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(SHAPE).astype(np.float32)
    d = sum(((g - c - shift) / r) ** 2 for g, c, r in zip(grid, (11, 10, 7), (7, 6, 4)))
    image = (np.exp(-d) * 100 + 3 * rng.random(SHAPE)).astype(np.float32)
    return image, (d < 0.5).astype(np.uint8) + (d < 0.15).astype(np.uint8)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohort")
    torch.manual_seed(0)
    cfg = ModelConfig(channels=(2, 4, 4), window=16)
    save_model(root / "model", MedverseNet(cfg).state_dict(), cfg, source="test")
    rng = np.random.default_rng(0)
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    (root / "targets").mkdir()
    for i, case in enumerate(CASES):
        image, _ = _volume(rng, shift=0.5 * (i - 3))
        nib.save(nib.Nifti1Image(image, affine), root / "targets" / f"{case}_0000.nii.gz")
    for name, shift in (("a", 1.0), ("b", -1.0)):
        image, seg = _volume(rng, shift)
        nib.save(nib.Nifti1Image(image, affine), root / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(seg, affine), root / f"{name}_seg.nii.gz")
    return {"root": root, "model": root / "model", "targets": root / "targets"}


def _options(cohort: dict[str, Path]) -> list[str]:
    root = cohort["root"]
    return [
        "--model", str(cohort["model"]),
        "--context", str(root / "a.nii.gz"), str(root / "a_seg.nii.gz"),
        "--context", str(root / "b.nii.gz"), str(root / "b_seg.nii.gz"),
        "--align", "physical", "--no-progress",
    ]  # fmt: skip


def _run(cohort, source: Path, out: Path, *extra: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        app,
        [
            "predict",
            "--targets-from",
            str(source),
            "--output-dir",
            str(out),
            *_options(cohort),
            *extra,
        ],
    )
    return res.exit_code, res.output


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _env() -> dict[str, str]:
    """Subprocesses run this checkout's code, one thread each."""
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def test_folder_cohort_resumes_and_summarises(cohort, tmp_path) -> None:
    out = tmp_path / "out"
    code, text = _run(cohort, cohort["targets"], out)
    assert code == 0, text
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{c}.nii.gz" for c in CASES]
    # one label-name sidecar per segmentation, named after its output
    assert sorted(p.name for p in out.glob("*.labels.json")) == [f"{c}.labels.json" for c in CASES]
    rows = _summary(out)
    assert [r["case"] for r in rows] == CASES and {r["status"] for r in rows} == {"done"}
    assert {"voxels_1", "volume_ml_1", "voxels_2", "volume_ml_2"} <= set(rows[0])
    for row in rows:
        seg = np.asarray(nib.load(row["output"]).dataobj)
        assert int(row["voxels_1"]) == int((seg == 1).sum())
        assert float(row["volume_ml_1"]) == pytest.approx((seg == 1).sum() * 0.064, abs=1e-3)
    assert "summary:" in text and "6 done" in text
    # a rerun redoes nothing; numbers are kept from the run that wrote the outputs
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    (out / f"{CASES[1]}.nii.gz").unlink()
    (out / f"{CASES[4]}.nii.gz").unlink()
    code, text = _run(cohort, cohort["targets"], out)
    assert code == 0, text
    rows = _summary(out)
    status = {r["case"]: r["status"] for r in rows}
    assert status == {c: "done" if c in (CASES[1], CASES[4]) else "exists" for c in CASES}
    assert all(r["voxels_1"] != "" for r in rows)
    for name, stamp in stamps.items():
        if name not in (f"{CASES[1]}.nii.gz", f"{CASES[4]}.nii.gz"):
            assert (out / name).stat().st_mtime_ns == stamp
    code, text = _run(cohort, cohort["targets"], out, "--overwrite")
    assert code == 0 and {r["status"] for r in _summary(out)} == {"done"}


def test_a_failing_target_is_recorded_and_the_rest_go_on(cohort, tmp_path) -> None:
    targets = tmp_path / "targets"
    shutil.copytree(cohort["targets"], targets)
    (targets / "broken_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "out"
    code, text = _run(cohort, targets, out)
    assert code == 1, text
    assert "failed: " in text and "broken_0000.nii.gz" in text and "Traceback" not in text
    rows = {r["case"]: r for r in _summary(out)}
    assert rows["broken"]["status"] == "failed" and "broken_0000.nii.gz" in rows["broken"]["error"]
    assert all(rows[c]["status"] == "done" for c in CASES)
    assert not (out / "broken.nii.gz").exists()


def test_csv_list_with_outputs(cohort, tmp_path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(
        "target,output\n"
        f"{cohort['targets'] / 'case_000_0000.nii.gz'},first.nii.gz\n"
        f"{cohort['targets'] / 'case_002_0000.nii.gz'},\n"
    )
    items = discover_targets(listing, tmp_path / "out")
    assert [(i.case, i.output.name) for i in items] == [
        ("case_002", "case_002.nii.gz"),
        ("first", "first.nii.gz"),
    ]
    code, text = _run(cohort, listing, tmp_path / "out")
    assert code == 0, text
    assert (tmp_path / "out" / "first.nii.gz").is_file()
    assert len(_summary(tmp_path / "out")) == 2


def test_cohort_usage_errors(cohort, tmp_path) -> None:
    res = CliRunner().invoke(app, ["predict", "--targets-from", str(cohort["targets"])])
    assert res.exit_code == 2 and "--output-dir" in res.output
    res = CliRunner().invoke(
        app,
        ["predict", "--targets-from", str(cohort["targets"]), "-o", "x.nii.gz",
         "--output-dir", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 2 and "--targets-from replaces --target/--output" in res.output


def _torchrun() -> list[str]:
    found = shutil.which("torchrun")
    return [found] if found else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_ranks_match_one_process(cohort, tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--targets-from", str(cohort["targets"]), *_options(cohort)]
    single = subprocess.run(
        [sys.executable, "-m", "medverse.predict", *args, "--output-dir", str(one)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    ranks = subprocess.run(
        [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "medverse.predict",
         *args, "--output-dir", str(two)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ranks.returncode == 0, ranks.stdout[-3000:] + ranks.stderr[-3000:]
    assert "on 2 processes" in ranks.stderr
    rows = _summary(two)
    assert [r["case"] for r in rows] == CASES and {r["status"] for r in rows} == {"done"}
    logs = sorted((two / ".medverse").glob("summary-rank*.csv"))
    assert [p.name for p in logs] == ["summary-rank0.csv", "summary-rank1.csv"]
    for rank, path in enumerate(logs):  # each target written once, by its rank
        text = path.read_text()
        assert sum(case in text for case in CASES) == 3
        assert all(CASES[i] in text for i in range(rank, 6, 2))
    for case in CASES:
        a = np.asarray(nib.load(one / f"{case}.nii.gz").dataobj)
        b = np.asarray(nib.load(two / f"{case}.nii.gz").dataobj)
        assert np.array_equal(a, b), case
    for key in ("voxels_1", "voxels_2"):
        assert [r[key] for r in rows] == [r[key] for r in _summary(one)]


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_finished_targets(cohort, tmp_path) -> None:
    out = tmp_path / "out"
    options = [o for o in _options(cohort) if o not in ("--align", "physical")]  # ~1 s each
    command = [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "medverse.predict",
               "--targets-from", str(cohort["targets"]), "--output-dir", str(out), *options]  # fmt: skip
    first = subprocess.Popen(
        command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not list(out.glob("case_*.nii.gz")):
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)  # torchrun stops its workers (they have own sessions)
    first.wait(timeout=60)
    time.sleep(1.0)
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("case_*.nii.gz")}
    assert finished, "nothing was written before the kill"
    second = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert sorted(p.name for p in out.glob("case_*.nii.gz")) == [f"{c}.nii.gz" for c in CASES]
    for name, stamp in finished.items():
        assert (out / name).stat().st_mtime_ns == stamp  # not redone
    rows = {r["case"]: r["status"] for r in _summary(out)}
    assert all(rows[name.removesuffix(".nii.gz")] == "exists" for name in finished)
    assert list(rows.values()).count("done") == 6 - len(finished)
