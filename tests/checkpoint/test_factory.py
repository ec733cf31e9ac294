"""Tests for medverse.checkpoint.factory: load_model (names and paths) and the released-weights help.

The packaged weights may be retrained at any time: the tests compare with the packaged files as
they are (their SHA-256, their JSON), never with a pinned digest.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from medverse.checkpoint import factory, model_registry
from medverse.checkpoint.factory import RELEASED_REPOSITORY, load_model, released_weights_help
from medverse.checkpoint.io import load_network, read_weights, save_model
from medverse.checkpoint.model_registry import get_spec
from medverse.errors import CheckpointError
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

SMALL = "medverse-small"


@pytest.fixture(scope="module")
def packaged() -> MedverseNet:
    return load_model(SMALL)


def _same_weights(a: MedverseNet, b: MedverseNet) -> bool:
    other = b.state_dict()
    return all(torch.equal(value, other[key]) for key, value in a.state_dict().items())


def test_a_packaged_name_loads_its_file_with_digest_and_metadata(packaged: MedverseNet) -> None:
    spec = get_spec(SMALL)
    file = factory._packaged(spec.weights)
    assert file.is_file() and file.name == spec.weights
    assert not packaged.training
    assert packaged.config == spec.config
    assert packaged.source == f"packaged {SMALL}"
    assert packaged.weights_sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    meta = json.loads(file.with_suffix(".json").read_text())
    assert packaged.trained_on == meta.get("trained_on")
    assert _same_weights(packaged, load_network(read_weights(file)))


def test_window_override_changes_the_window_only(packaged: MedverseNet) -> None:
    net = load_model(SMALL, window=128)
    assert net.config == ModelConfig.from_dict({**packaged.config.to_dict(), "window": 128})
    assert _same_weights(net, packaged)  # the window is not a weight


def test_random_init_builds_the_architecture_without_weights(packaged: MedverseNet) -> None:
    net = load_model(SMALL, pretrained=False, window=128)
    assert not net.training
    assert net.config.window == 128 and net.config.channels == packaged.config.channels
    assert (net.source, net.weights_sha256, net.trained_on) == (f"{SMALL} (random init)", "", None)
    assert net.state_dict().keys() == packaged.state_dict().keys()
    assert not _same_weights(net, packaged)


def test_a_name_without_weights_says_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the 71 M-parameter network must not be built to report this")

    monkeypatch.setattr(factory, "load_network", no_network)
    with pytest.raises(CheckpointError) as error:
        load_model("medverse-base")
    message = str(error.value)
    assert "'medverse-base' ships no weights" in message
    assert RELEASED_REPOSITORY in message
    assert "medverse convert FILE.ckpt medverse_base/" in message
    assert "--model medverse_base/" in message


def test_neither_a_name_nor_a_path_is_refused_listing_the_names(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="unknown model 'nope'.*medverse-small"):
        load_model("nope")
    missing = tmp_path / "model.safetensors"
    with pytest.raises(CheckpointError, match="not an existing path"):
        load_model(missing)


def test_a_path_loads_with_the_digest_of_what_was_read(tmp_path, tiny_config) -> None:
    torch.manual_seed(0)
    net = MedverseNet(tiny_config)
    folder = save_model(tmp_path / "ours", net.state_dict(), tiny_config, source="test")
    file = save_model(tmp_path / "one.safetensors", net.state_dict(), tiny_config, source="t")
    from_folder = load_model(folder)
    from_file = load_model(str(file))  # a string path is a path too
    weights = folder / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert from_folder.weights_sha256 == digest
    assert json.loads((folder / "config.json").read_text())["sha256"] == digest
    assert from_file.weights_sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    torch.save(net.state_dict(), tmp_path / "bare.pt")  # no metadata, no recorded digest
    bare = load_model(tmp_path / "bare.pt", window=tiny_config.window)
    assert bare.weights_sha256 == hashlib.sha256((tmp_path / "bare.pt").read_bytes()).hexdigest()
    for loaded in (from_folder, from_file, bare):
        assert loaded.config == tiny_config and not loaded.training
        assert _same_weights(loaded, net)
        assert loaded.trained_on is None  # no trained_on in this metadata


def test_released_weights_help_names_the_folder_in_both_commands() -> None:
    lines = released_weights_help("my_base/")
    text = "\n".join(lines)
    assert len(lines) == 4
    assert RELEASED_REPOSITORY in lines[0]
    assert "71,054,793 numbers" in lines[1] and "284 MB" in lines[1]
    assert "medverse convert FILE.ckpt my_base/" in lines[2]
    assert "medverse predict --model my_base/" in lines[3]
    assert "medverse_base/" not in text


def test_the_old_module_path_still_imports_for_one_release() -> None:
    # checkpoint/registry.py held the factory; it moved to factory.py and the table of names
    # (specs.py) to model_registry.py. The old path re-exports both.
    import medverse
    from medverse.checkpoint import registry

    for name in factory.__all__:
        assert getattr(registry, name) is getattr(factory, name), name
    for name in model_registry.__all__:
        assert getattr(registry, name) is getattr(model_registry, name), name
    assert sorted(registry.__all__) == sorted([*factory.__all__, *model_registry.__all__])
    assert medverse.load_model is load_model
    assert medverse.list_models is model_registry.list_models
