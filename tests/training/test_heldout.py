"""Held-out synthetic scoring (python -m medverse.training.heldout) on a tiny random network."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.evaluation.metrics import dice, psnr
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet
from medverse.training.config import DataSource, TrainConfig
from medverse.training.heldout import heldout_scores, main
from medverse.training.sources import build_datasets
from medverse.training.steps import validation_episodes


def _episodes(count: int = 6):
    source = DataSource(num_subjects=2, num_val_cases=3, shape=(16, 16, 16), seed=9000)
    _, held_out = build_datasets([source])
    config = TrainConfig(data=(source,), num_val_episodes=count, val_num_contexts=2, seed=9000)
    return validation_episodes(held_out, config)


def test_scores_per_family_with_independent_baselines() -> None:
    episodes = _episodes()
    net = MedverseNet(ModelConfig(channels=(4, 8), window=16))
    scores = heldout_scores(net, episodes)
    assert set(scores) <= {"segmentation", "transformation", "enhancement"}
    assert sum(row["n"] for row in scores.values()) <= len(episodes)
    for family, row in scores.items():
        assert math.isfinite(row["model"]) and math.isfinite(row["baseline"])
        of_family = [e for e in episodes if e.family == family]
        if family == "segmentation":
            expected = [
                dice(e.context_out[:, 0].mean(axis=0), e.target_reference[0]) for e in of_family
            ]
        else:
            expected = [psnr(e.target[0], e.target_reference[0], 1.0) for e in of_family]
        expected = [v for v in expected if not math.isnan(v)]
        assert (
            row["baseline"] == np.float32(np.mean(expected))
            or abs(row["baseline"] - np.mean(expected)) < 1e-6
        )


def test_command_prints_a_table(capsys, tmp_path) -> None:
    net = MedverseNet(ModelConfig(channels=(4, 8), window=16))
    from medverse.checkpoint.io import save_model

    path = save_model(tmp_path / "tiny", net.state_dict(), net.config, source="tiny")
    main(["--model", str(path), "--episodes", "3", "--contexts", "2", "--shape", "16", "16", "16"])
    out = capsys.readouterr().out
    assert "| family | episodes | metric | model | baseline |" in out
    assert "3 episodes" in out


def test_mni_source_builds_template_subjects(capsys, tmp_path) -> None:
    net = MedverseNet(ModelConfig(channels=(4, 8), window=16))
    from medverse.checkpoint.io import save_model

    path = save_model(tmp_path / "tiny", net.state_dict(), net.config, source="tiny")
    main(
        ["--model", str(path), "--source", "mni", "--episodes", "2", "--contexts", "2"]
        + ["--shape", "12", "14", "12", "--voxel-mm", "12", "12"]
        + ["--enhancements", "gaussian_noise", "--threads", "1"]
    )
    out = capsys.readouterr().out
    assert "mni seed 9000, shape [12, 14, 12]" in out
    assert "2 episodes" in out


def test_families_and_config_ranges_select_the_episodes(capsys, tmp_path) -> None:
    net = MedverseNet(ModelConfig(channels=(4, 8), window=16))
    from medverse.checkpoint.io import save_model

    path = save_model(tmp_path / "tiny", net.state_dict(), net.config, source="tiny")
    config = tmp_path / "train.yaml"
    config.write_text("enhancements:\n  gaussian_noise: {std: 0.05}\n  bias_field: null\n")
    args = ["--model", str(path), "--episodes", "2", "--contexts", "2", "--shape", "16", "16", "16"]
    main(args + ["--families", "enhancement", "--config", str(config)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "episodes" not in line]
    assert len(rows) == 1 and rows[0].startswith("| enhancement | 2 |")
    with pytest.raises(InputError, match="enhancements has no \\['inpainting'\\]"):
        main(args + ["--config", str(config), "--enhancements", "inpainting"])
