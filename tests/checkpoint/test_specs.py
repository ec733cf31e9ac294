"""Tests for medverse.checkpoint.specs: the table of named models."""

from __future__ import annotations

import pytest

from medverse.checkpoint import specs
from medverse.errors import CheckpointError
from medverse.model.config import ModelConfig


def test_arch_alone_means_its_default_tag() -> None:
    spec = specs.get_spec("medverse-small")
    assert spec.name == "medverse-small"
    # the bundled weights carry a trained prior gate (registration-guided segmentation)
    assert spec.config == ModelConfig(channels=(8, 16, 32, 64, 128), window=64, prior_gate=True)
    assert not specs.get_spec("medverse-base").config.prior_gate  # the released architecture
    assert specs.get_spec("medverse-base").weights is None
    assert specs.list_models() == sorted(specs.list_models())


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(
        CheckpointError, match="unknown model 'nope'.*medverse-base, medverse-small"
    ):
        specs.get_spec("nope")
