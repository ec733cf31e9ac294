"""Tests for medverse.checkpoint.model_registry: the table of named models."""

from __future__ import annotations

import pytest

from medverse.checkpoint import model_registry
from medverse.errors import CheckpointError
from medverse.model.config import ModelConfig


def test_arch_alone_means_its_default_tag() -> None:
    spec = model_registry.get_spec("medverse-small")
    assert spec.name == "medverse-small"
    # the bundled weights carry a trained prior gate (registration-guided segmentation)
    assert spec.config == ModelConfig(channels=(8, 16, 32, 64, 128), window=64, prior_gate=True)
    assert not model_registry.get_spec(
        "medverse-base"
    ).config.prior_gate  # the released architecture
    assert model_registry.get_spec("medverse-base").weights is None
    assert model_registry.list_models() == sorted(model_registry.list_models())


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(
        CheckpointError, match="unknown model 'nope'.*medverse-base, medverse-small"
    ):
        model_registry.get_spec("nope")


def test_the_old_module_path_still_imports_for_one_release() -> None:
    # the table moved from checkpoint/specs.py to model_registry.py; specs.py re-exports it
    from medverse.checkpoint import specs

    assert sorted(specs.__all__) == sorted(model_registry.__all__)
    for name in model_registry.__all__:
        assert getattr(specs, name) is getattr(model_registry, name), name
