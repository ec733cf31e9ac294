"""The released state-dict manifest maps onto medverse-base, key for key and shape for shape."""

from __future__ import annotations

import json

import pytest
import torch

from medverse.checkpoint.convert import convert_official_state_dict, infer_config
from medverse.checkpoint.io import LoadedWeights, load_network
from medverse.checkpoint.model_registry import get_spec
from medverse.errors import CheckpointError
from medverse.model.network import MedverseNet
from tests.conftest import MANIFEST


def test_manifest_maps_onto_medverse_base() -> None:
    manifest = json.loads(MANIFEST.read_text())
    released = {e["key"]: torch.zeros(e["shape"]) for e in manifest["keys"]}
    assert len(released) == 172
    ours = convert_official_state_dict(released)
    net = MedverseNet(get_spec("medverse-base").config)
    expected = net.state_dict()
    assert set(ours) == set(expected)
    assert all(ours[k].shape == expected[k].shape for k in ours)
    total = sum(v.numel() for v in expected.values())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert total == manifest["total_numel_state_dict"] == 71_054_793
    assert trainable == manifest["total_trainable_parameters"] == 71_050_569
    assert infer_config(ours) == get_spec("medverse-base").config
    load_network(LoadedWeights(ours, infer_config(ours), "manifest"))  # strict load succeeds


def test_infer_config_other_widths(tiny_config) -> None:
    state = MedverseNet(tiny_config).state_dict()
    cfg = infer_config(state, window=16)
    assert cfg == tiny_config


def test_unmapped_key_is_reported(tiny_config) -> None:
    state = dict(MedverseNet(tiny_config).state_dict())
    state["context_unet.extra_block.weight"] = torch.zeros(1)
    del state["target_code"]
    with pytest.raises(CheckpointError, match=r"do not map.*extra_block.*missing.*target_code"):
        load_network(LoadedWeights(state, tiny_config, "test"))


def test_not_a_medverse_state_dict() -> None:
    with pytest.raises(CheckpointError, match="not a Medverse state dict"):
        infer_config({"fc.weight": torch.zeros(2, 2)})
