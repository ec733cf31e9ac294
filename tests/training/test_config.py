"""TrainConfig: defaults, JSON/YAML round trips, and the messages bad configs get."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medverse.errors import InputError
from medverse.model.config import ModelConfig
from medverse.training.config import DataSource, TrainConfig

REPO = Path(__file__).parents[2]


def test_defaults_are_valid_and_follow_the_method() -> None:
    config = TrainConfig()
    assert config.grad_clip == 0.25  # METHOD.md §4 (predecessor)
    assert config.num_contexts == (1, 8)  # paper: 3, then random 1-8
    assert config.ar_source == "degraded"
    # the default model is the bundled medverse-small, prior gate included
    assert config.model_config == ModelConfig(
        channels=(8, 16, 32, 64, 128), window=64, prior_gate=True
    )
    assert config.data == (DataSource(),)
    assert sum(config.task_weights.values()) == pytest.approx(1.0)


def rich_config() -> TrainConfig:
    return TrainConfig(
        model={"channels": [4, 8, 16], "window": 16},
        data=[
            {"kind": "synthetic", "shape": [24, 24, 32], "num_templates": 2, "seed": 5},
            {"kind": "nnunet", "path": "/data/Dataset001", "weight": 2.5, "labels": ["liver", 2]},
        ],
        num_contexts=3,
        task_weights={"segmentation": 1.0},
        enhancements={"gaussian_noise": {"std": [0.01, 0.1]}, "bias_field": None},
        betas=[0.8, 0.99],
        ar_source="mixed",
        out_dir="runs/x",
    )


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    config = rich_config()
    assert config.num_contexts == (3, 3)
    assert config.task_weights == {"segmentation": 1.0, "transformation": 0.0, "enhancement": 0.0}
    text = config.to_json() if fmt == "json" else config.to_yaml()
    again = TrainConfig.from_json(text) if fmt == "json" else TrainConfig.from_yaml(text)
    assert again == config
    path = config.save(tmp_path / f"run.{fmt}")
    assert TrainConfig.from_file(path) == config
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()  # JSON-ready
    assert again.enhancements == {"gaussian_noise": {"std": [0.01, 0.1]}, "bias_field": {}}


def test_relative_paths_resolve_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "run.yaml"
    path.write_text("data:\n  - {kind: nnunet, path: ../Dataset002}\nout_dir: runs/y\n")
    config = TrainConfig.from_file(path)
    assert config.data[0].path == str((tmp_path / "Dataset002").resolve())
    assert config.out_dir == "runs/y"  # relative to the working directory, not the file


def test_packaged_small_config_loads() -> None:
    config = TrainConfig.from_file(REPO / "configs" / "train_small_synthetic.yaml")
    assert config.model == "medverse-small"
    assert config.data[0].kind == "synthetic"
    assert config.out_dir == "runs/small_synthetic"


def test_gpu_continuation_config_loads() -> None:
    config = TrainConfig.from_file(REPO / "configs" / "train_small_gpu.yaml")
    assert config.device == "cuda" and config.amp == "auto"
    assert config.enhancements is not None and len(config.enhancements) == 5
    assert config.enhancements["gaussian_noise"] == {"std": [0.01, 0.2]}
    assert config.init_weights is not None and Path(config.init_weights).is_file()


def test_real_anatomy_config_loads_and_starts_from_the_bundled_weights() -> None:
    config = TrainConfig.from_file(REPO / "configs" / "train_small_mni.yaml")
    assert [s.kind for s in config.data] == ["mni", "synthetic"]
    assert config.data[0].voxel_mm == (2.5, 4.0)
    assert config.init_weights is not None and Path(config.init_weights).is_file()


def test_level1_config_loads_with_its_loss() -> None:
    config = TrainConfig.from_file(REPO / "configs" / "train_small_level1.yaml")
    assert config.level1_prob == 1.0
    assert config.foreground_weight is None and config.dice_weight == 1.0
    assert config.init_weights is not None and Path(config.init_weights).is_file()


def test_enhance_config_loads_with_its_ranges() -> None:
    config = TrainConfig.from_file(REPO / "configs" / "train_small_enhance.yaml")
    assert config.enhancements == {
        "gaussian_noise": {"std": [0.01, 0.12]},
        "bias_field": {"coefficients": [0.03, 0.3]},
    }
    assert config.task_weights["enhancement"] == 0.5 and config.level1_prob == 1.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stepz": 10}, r"unknown keys 'stepz' \(did you mean 'steps'\?\)"),
        ({"ar_source": "slef"}, r"ar_source must be one of .*Did you mean 'self'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"num_contexts": [4, 2]}, r"num_contexts must be .*got \[4, 2\]"),
        ({"lr": -1}, r"lr must be in \(0.0, inf\], got -1"),
        ({"grad_clip": "big"}, "grad_clip must be a finite number"),
        ({"level1_prob": 1.5}, r"level1_prob must be in \[0.0, 1.0\]"),
        ({"dice_weight": -0.5}, r"dice_weight must be in \[0.0, inf\]"),
        ({"task_weights": {"segmentaton": 1}}, "unknown families"),
        ({"task_weights": {"segmentation": 0}}, "positive sum"),
        ({"model": "medverse-huge"}, "not a registered name"),
        ({"model": {"channels": [4, 8], "window": 17}}, "window 17 must be a multiple"),
        ({"data": []}, "at least one source"),
        ({"data": [{"kind": "nnunet"}]}, "kind 'nnunet' needs path"),
        ({"data": [{"kind": "synthetic", "path": "x"}]}, "takes no path"),
        ({"data": [{"kind": "mni", "path": "x"}]}, "kind 'mni' takes no path"),
        ({"data": [{"kind": "mni", "voxel_mm": [3, 2]}]}, r"voxel_mm must be \[low, high\]"),
        ({"data": [{"kind": "mni", "voxel_mm": [0, 2]}]}, r"voxel_mm must be"),
        ({"data": [{"kind": "dicom"}]}, r"kind must be one of"),
        ({"data": [{"shape": [4, 4, 4]}]}, "shape must be three integers >= 8"),
        ({"data": [{"num_subjects": 1}]}, "num_subjects must be an integer >= 2"),
        ({"data": [{"colour": 1}]}, r"data\[0\]: unknown keys 'colour'"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"enhancements": ["denoise"]}, "unknown enhancement task 'denoise'"),
        ({"enhancements": {"bias_field": {"order": 0}}}, "bias field order must be >= 1"),
        ({"enhancements": {"gaussian_noise": 0.1}}, "must be a mapping of parameter ranges"),
        ({"device": "tpu"}, "device must be one of"),
    ],
)
def test_bad_configs_say_what_and_how(fields: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        TrainConfig.from_dict(fields)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InputError, match=f"'{missing}' not found"):
        TrainConfig.from_file(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1, 2\n")
    with pytest.raises(InputError, match=f"'{broken}': not valid YAML") as info:
        TrainConfig.from_file(broken)
    assert "\n" not in str(info.value)  # PyYAML's caret drawing is not passed on
    broken.write_text("steps: [1, 2\nlr: :\n")
    with pytest.raises(InputError, match=r"YAML \(line 2, column 3: expected ',' or ']'"):
        TrainConfig.from_file(broken)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{steps: 1")
    with pytest.raises(InputError, match=f"'{bad_json}': not valid JSON \\(Expecting property"):
        TrainConfig.from_file(bad_json)
    with pytest.raises(InputError, match=f"'{tmp_path}' is a folder, expected a file"):
        TrainConfig.from_file(tmp_path)
    empty = tmp_path / "empty.yaml"
    for text in ("", "# only a comment\n"):
        empty.write_text(text)
        with pytest.raises(InputError, match=f"'{empty}' is empty"):
            TrainConfig.from_file(empty)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"steps": 0}))
    with pytest.raises(InputError, match=f"'{wrong}'.*steps must be an integer >= 1"):
        TrainConfig.from_file(wrong)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="must hold a mapping"):
        TrainConfig.from_file(listing)


def test_replace_validates_again() -> None:
    config = TrainConfig()
    assert config.replace(steps=7).steps == 7
    with pytest.raises(InputError, match="steps"):
        config.replace(steps=-1)
