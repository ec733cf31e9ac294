"""The preprocessing configuration: checked on construction, part of the cache key."""

from __future__ import annotations

import json

import pytest

from medverse.data.preprocess import PreprocessConfig
from medverse.errors import InputError


def test_preprocess_config_is_checked() -> None:
    with pytest.raises(InputError, match="orientation"):
        PreprocessConfig(orientation="RAX")
    with pytest.raises(InputError, match="spacing"):
        PreprocessConfig(spacing=(1.0, -1.0, 1.0))
    with pytest.raises(InputError, match="clip_percentiles"):
        PreprocessConfig(clip_percentiles=(99, 1))
    config = PreprocessConfig(orientation="lps", spacing=1.5)
    assert config.orientation == "LPS" and config.spacing == (1.5, 1.5, 1.5)
    assert json.loads(json.dumps(config.to_dict()))["spacing"] == [1.5, 1.5, 1.5]
