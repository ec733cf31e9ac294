"""`medverse evaluate` on a tiny kit: report files, identical numbers from two runs."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from medverse.cli.main import app


@pytest.mark.slow
def test_evaluate_baselines_twice_identical(tmp_path) -> None:
    runner = CliRunner()
    args = [
        "evaluate",
        "--subjects",
        "3",
        "--methods",
        "context_mean,identity",
        "-k",
        "1",
        "-n",
        "1",
        "--tasks",
        "brain_mask,denoise_gaussian",
        "--no-progress",
    ]
    first = runner.invoke(app, [*args, "--output-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*args, "--output-dir", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    for name in ("cases.csv", "summary.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "index.html").is_file()
    assert "brain_mask" in first.output and "context_mean" in first.output


def test_evaluate_rejects_unknown_method(tmp_path) -> None:
    res = CliRunner().invoke(
        app, ["evaluate", "--output-dir", str(tmp_path / "r"), "--methods", "magic"]
    )
    assert res.exit_code == 1 and "unknown methods" in res.output


def test_evaluate_spacing_builds_the_kit_over_the_same_field_of_view(tmp_path) -> None:
    import json

    args = ["evaluate", "--output-dir", str(tmp_path / "r"), "--subjects", "2", "--spacing", "8"]
    args += ["--methods", "context_mean", "-k", "1", "-n", "1", "--tasks", "brain_mask"]
    res = CliRunner().invoke(app, [*args, "--no-progress"])
    assert res.exit_code == 0, res.output
    dataset = json.loads((tmp_path / "r" / "cases.json").read_text())["config"]["dataset"]
    assert dataset["config"]["shape"] == [24, 28, 24]
    assert dataset["spacing_mm"] == [8.0, 8.0, 8.0]


def test_evaluate_rejects_a_bad_spacing(tmp_path) -> None:
    res = CliRunner().invoke(
        app, ["evaluate", "--output-dir", str(tmp_path / "r"), "--spacing", "0"]
    )
    assert res.exit_code == 1 and "spacing must be a positive number" in res.output


@pytest.mark.slow  # an end-to-end evaluate run, ~10 s on 2 cores
def test_evaluate_model_with_and_without_calibration(tmp_path) -> None:
    import csv

    import torch

    from medverse.checkpoint.io import save_model
    from medverse.model.config import ModelConfig
    from medverse.model.network import MedverseNet

    torch.manual_seed(0)
    config = ModelConfig(channels=(2, 4, 4), window=16)
    save_model(tmp_path / "tiny", MedverseNet(config).state_dict(), config, source="test")
    args = ["evaluate", "--subjects", "3", "--spacing", "8", "--methods", "medverse,identity"]
    args += ["--model", str(tmp_path / "tiny"), "-k", "2", "-n", "1"]
    args += ["--tasks", "denoise_gaussian", "--no-progress"]
    psnr = {}
    for flag in ("--calibrate", "--no-calibrate"):
        out = tmp_path / flag.strip("-")
        res = CliRunner().invoke(app, [*args, flag, "--output-dir", str(out)])
        assert res.exit_code == 0, res.output
        rows = list(csv.DictReader((out / "cases.csv").open()))
        psnr[flag] = {
            m: sum(float(r["psnr"]) for r in rows if r["method"] == m)
            for m in ("medverse", "identity")
        }
    assert psnr["--calibrate"]["identity"] == psnr["--no-calibrate"]["identity"]
    # a random network is useless; calibrated on the contexts it leans on the input instead
    assert psnr["--calibrate"]["medverse"] > psnr["--no-calibrate"]["medverse"] + 3


@pytest.mark.slow
def test_evaluate_align_deformable_reports_the_parts(tmp_path) -> None:
    """A zero-gate network returns the fusion prior, so network and fusion agree, and the local
    stacking with the network's features (a copy of the fusion's) scores as the one without."""
    import csv

    import torch

    from medverse.checkpoint.io import save_model
    from medverse.model.config import ModelConfig
    from medverse.model.network import MedverseNet

    torch.manual_seed(0)
    config = ModelConfig(channels=(2, 4, 4), window=16, prior_gate=True)
    save_model(tmp_path / "tiny", MedverseNet(config).state_dict(), config, source="test")
    methods = "medverse,medverse_network,medverse_fusion,medverse_stacked_fusion,multi_atlas"
    args = ["evaluate", "--subjects", "3", "--spacing", "8", "--methods", methods]
    args += ["--model", str(tmp_path / "tiny"), "-k", "2", "-n", "1", "--align", "deformable"]
    args += ["--tasks", "brain_mask", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--output-dir", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "r" / "cases.csv").open()))
    dice: dict[str, list[float]] = {}
    for row in rows:
        assert row["status"] == "ok", row
        dice.setdefault(row["method"], []).append(float(row["dice"]))
    assert sorted(dice) == sorted(methods.split(","))
    assert all(len(v) == 3 for v in dice.values())
    assert dice["medverse_network"] == dice["medverse_fusion"]
    np.testing.assert_allclose(dice["medverse"], dice["medverse_stacked_fusion"], atol=0.01)
    assert min(dice["medverse_fusion"]) > 0.5  # registered brain masks overlap the target
    assert min(dice["medverse"]) > 0.5
    assert any((tmp_path / "cache").rglob("*"))  # registrations shared through the disk cache
    # the default --align auto is the guided segmentation for a gated network
    auto_args = [a for a in args if a not in ("--align", "deformable")]
    res = CliRunner().invoke(app, [*auto_args, "--output-dir", str(tmp_path / "auto")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "auto" / "cases.csv").read_text() == (
        tmp_path / "r" / "cases.csv"
    ).read_text()


@pytest.mark.slow
def test_evaluate_guided_parts_need_align_deformable(tmp_path) -> None:
    import subprocess

    cmd = [
        "medverse",
        "evaluate",
        "--output-dir",
        str(tmp_path / "r"),
        "--methods",
        "medverse_fusion",
    ]
    res = subprocess.run([*cmd, "--align", "none"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--align deformable" in res.stderr
    assert "Traceback" not in res.stderr
    bad = subprocess.run([*cmd[:4], "--align", "rigid"], capture_output=True, text=True)
    assert bad.returncode == 2 and "rigid" in bad.stderr and "Traceback" not in bad.stderr


def test_evaluate_auto_guided_parts_need_a_gated_model(tmp_path) -> None:
    import subprocess

    import torch

    from medverse.checkpoint.io import save_model
    from medverse.model.config import ModelConfig
    from medverse.model.network import MedverseNet

    torch.manual_seed(0)
    config = ModelConfig(channels=(2, 4, 4), window=16)  # no prior gate: auto is unguided
    save_model(tmp_path / "tiny", MedverseNet(config).state_dict(), config, source="test")
    cmd = [
        "medverse",
        "evaluate",
        "--output-dir",
        str(tmp_path / "r"),
        "--model",
        str(tmp_path / "tiny"),
    ]
    res = subprocess.run(
        [*cmd, "--methods", "medverse,medverse_network"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "--align deformable" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r").exists()
