"""Tests for medverse.model.config: ModelConfig validation, the window rule and the JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest

from medverse.errors import InputError
from medverse.model.config import TOKEN_LAYOUTS, ModelConfig


def test_defaults_are_the_released_architecture() -> None:
    config = ModelConfig()
    assert config.channels == (32, 64, 128, 256, 512)
    assert (config.convs_per_stage, config.bam_patches, config.bam_width) == (2, 4, 66)
    assert (config.window, config.token_layout) == (128, "strided")
    assert not config.input_skip and not config.prior_gate and config.guided_refiner == 0


@pytest.mark.parametrize(
    ("channels", "bam_patches", "multiple"),
    [((4, 8), 4, 8), ((4, 8, 16), 4, 16), ((8, 16, 32, 64, 128), 4, 64), ((4, 8, 16), 2, 8)],
)
def test_window_multiple_is_two_to_the_stages_minus_one_times_the_patches(
    channels: tuple[int, ...], bam_patches: int, multiple: int
) -> None:
    config = ModelConfig(channels=channels, bam_patches=bam_patches, window=multiple)
    assert config.num_stages == len(channels)
    assert config.window_multiple == multiple
    assert ModelConfig(channels=channels, bam_patches=bam_patches, window=3 * multiple)
    with pytest.raises(InputError, match=f"window {multiple + 2} must be a multiple of {multiple}"):
        ModelConfig(channels=channels, bam_patches=bam_patches, window=multiple + 2)


def test_channels_of_any_sequence_become_a_tuple_of_ints() -> None:
    config = ModelConfig(channels=[4, 8.0, 16], window=16)  # type: ignore[list-item]
    assert config.channels == (4, 8, 16) and all(type(c) is int for c in config.channels)
    assert hash(config) == hash(ModelConfig(channels=(4, 8, 16), window=16))  # frozen, hashable
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.window = 32  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"channels": (4,)}, "at least 2 positive widths"),
        ({"channels": (4, 0)}, "at least 2 positive widths"),
        ({"convs_per_stage": 0}, "convs_per_stage must be >= 1"),
        ({"bam_patches": 0}, "bam_patches must be >= 1"),
        ({"bam_width": 64}, "bam_width must be a positive multiple of 6"),
        ({"bam_width": 0}, "bam_width must be a positive multiple of 6"),
        ({"token_layout": "zigzag"}, "token_layout must be one of"),
        ({"input_skip": 1}, "input_skip must be true or false"),
        ({"prior_gate": "yes"}, "prior_gate must be true or false"),
        ({"guided_refiner": -1}, "guided_refiner must be a width >= 0"),
        ({"guided_refiner": True, "prior_gate": True}, "guided_refiner must be a width >= 0"),
        ({"guided_refiner": 8}, "guided_refiner needs prior_gate"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(changes: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ModelConfig(**{"channels": (4, 8, 16), "window": 16, **changes})


def test_every_token_layout_and_the_optional_heads_are_accepted() -> None:
    for layout in TOKEN_LAYOUTS:
        assert ModelConfig(channels=(4, 8), window=8, token_layout=layout).token_layout == layout
    grown = ModelConfig(channels=(4, 8), window=8, prior_gate=True, guided_refiner=8)
    assert grown.guided_refiner == 8


def test_json_round_trip_keeps_every_field() -> None:
    config = ModelConfig(
        channels=(4, 8, 16),
        convs_per_stage=1,
        bam_patches=2,
        bam_width=12,
        window=24,
        token_layout="contiguous",
        input_skip=True,
        prior_gate=True,
        guided_refiner=4,
    )
    data = config.to_dict()
    assert set(data) == {field.name for field in dataclasses.fields(ModelConfig)}
    assert data["channels"] == [4, 8, 16]  # a list: what json writes and reads
    assert ModelConfig.from_json(config.to_json()) == config
    assert ModelConfig.from_dict(json.loads(json.dumps(data))) == config


def test_a_file_lacking_fields_takes_the_defaults_and_unknown_fields_are_named() -> None:
    old = ModelConfig.from_dict({"channels": [4, 8], "window": 8})  # written before input_skip
    assert old == ModelConfig(channels=(4, 8), window=8)
    assert not old.input_skip and not old.prior_gate and old.guided_refiner == 0
    with pytest.raises(InputError, match=r"unknown ModelConfig fields \['bam_hidden_size'\]"):
        ModelConfig.from_dict({"channels": [4, 8], "window": 8, "bam_hidden_size": 66})
