"""Reading the released Lightning checkpoint safely, bare state dicts, our format, CLI errors."""

from __future__ import annotations

import argparse
import hashlib
import os

import pytest
import torch
from typer.testing import CliRunner

from medverse.checkpoint.convert import RENAMES  # noqa: F401 - imported to document the table exists
from medverse.checkpoint.factory import load_model
from medverse.checkpoint.io import load_network, read_weights, save_model
from medverse.cli.main import app
from medverse.errors import CheckpointError
from medverse.model.network import MedverseNet


def _released_keys(net: MedverseNet) -> dict[str, torch.Tensor]:
    """Our state dict renamed back to the released naming (inverse of the converter's table)."""
    out = {}
    for key, value in net.state_dict().items():
        k = key
        for branch in ("context_unet", "target_encoder", "target_decoder"):
            if not k.startswith(branch):
                continue
            role = "context" if branch == "context_unet" else "target"
            wrap = ".module" if role == "context" else ""
            k = k.replace(".res.", f".{role}_conv{wrap}.")
            k = k.replace("output_block.target_conv.", "output_block.block.0.")
            k = k.replace("output_block.head.", "output_block.block.1.")
            for mod in ("downsample_blocks", "upsample_blocks"):
                if f".{mod}." in k:
                    name = "linear_layer" if mod == "downsample_blocks" else "conv_layer"
                    head, tail = k.rsplit(".", 1)
                    k = f"{head}.{role}_{name}{wrap}.{tail}"
            if k.startswith(f"{branch}.embedding."):
                k = k.replace(f"{branch}.embedding.", f"{branch}.{role}_embedding{wrap}.")
            if ".final_conv." in k and role == "context":
                k = k.replace(".final_conv.", ".final_conv.module.")
        out["net." + k] = value
    return out


@pytest.fixture
def net(tiny_config) -> MedverseNet:
    return MedverseNet(tiny_config).eval()


def test_lightning_checkpoint_with_namespace(tmp_path, net) -> None:
    ckpt = {
        "state_dict": _released_keys(net),
        "hyper_parameters": argparse.Namespace(
            nb_inner_channels=[4, 8, 16], nb_conv_layers_per_stage=2
        ),
        "epoch": 3,
        "pytorch-lightning_version": "2.1.0",
    }
    path = tmp_path / "medverse.ckpt"
    torch.save(ckpt, path)
    weights = read_weights(path, window=16)
    assert weights.config.channels == (4, 8, 16)
    loaded = load_network(weights)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


class _Evil:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("echo pwned > /tmp/medverse_pwned",))


def test_malicious_pickle_is_refused(tmp_path, net) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": net.state_dict(), "callbacks": _Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_weights(path)
    assert not os.path.exists("/tmp/medverse_pwned")


def test_a_file_that_is_no_pickle_gets_one_short_line(tmp_path) -> None:
    """A volume passed as --model: torch's several lines of advice (weights_only=False, which
    could run code) are not passed on."""
    path = tmp_path / "t.ckpt"
    path.write_bytes(bytes(range(31, 256)) * 4)  # not a zip, not a pickle
    with pytest.raises(CheckpointError) as info:
        read_weights(path)
    message = str(info.value)
    assert message.startswith(f"'{path}': not a readable PyTorch checkpoint (")
    assert "\n" not in message and "weights_only" not in message
    assert "expected a .ckpt/.pt/.pth" in message


def test_bare_state_dict_and_our_format_round_trip(tmp_path, net, tiny_config) -> None:
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    assert read_weights(tmp_path / "bare.pt", window=16).config == tiny_config
    out = save_model(tmp_path / "ours", net.state_dict(), tiny_config, source="test")
    again = load_model(out)
    assert again.config == tiny_config
    assert all(torch.equal(again.state_dict()[k], v) for k, v in net.state_dict().items())
    single = save_model(
        tmp_path / "one.safetensors", net.state_dict(), tiny_config, source="t", half=True
    )
    assert load_model(single).config == tiny_config


def test_convert_cli_errors_are_one_line(tmp_path, net) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "o")])
    assert res.exit_code == 1 and "no such file" in res.output and "Traceback" not in res.output
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 4096)
    res = runner.invoke(app, ["convert", str(junk), str(tmp_path / "o")])
    assert res.exit_code == 1 and "junk.ckpt" in res.output
    state = dict(net.state_dict())
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    res = runner.invoke(app, ["convert", str(tmp_path / "extra.pt"), str(tmp_path / "o")])
    assert res.exit_code == 1 and "do not map" in res.output and "extra.weight" in res.output
    state = dict(net.state_dict())
    state["target_code"] = torch.zeros(7)
    torch.save(state, tmp_path / "shape.pt")
    res = runner.invoke(app, ["convert", str(tmp_path / "shape.pt"), str(tmp_path / "o")])
    assert res.exit_code == 1 and "shapes differ" in res.output
    torch.save(net.state_dict(), tmp_path / "good.pt")
    res = runner.invoke(app, ["convert", str(tmp_path / "good.pt"), str(tmp_path / "good")])
    assert res.exit_code == 0, res.output
    digest = hashlib.sha256((tmp_path / "good.pt").read_bytes()).hexdigest()
    assert f"sha256 {digest}" in res.output  # the SHA-256 of what was read, printed
    res = runner.invoke(app, ["info", str(tmp_path / "good")])
    assert res.exit_code == 0 and "parameters" in res.output


def test_released_weights_are_one_step_away() -> None:
    """`medverse info medverse-base` says where, what file and the two commands; the error of
    a model without weights names CLI usage, not Python arguments."""
    runner = CliRunner()
    res = runner.invoke(app, ["info", "medverse-base"])
    assert res.exit_code == 0, res.output
    assert "https://github.com/jiesihu/Medverse" in res.output
    assert ".ckpt" in res.output and "71,054,793 numbers" in res.output
    assert "medverse convert FILE.ckpt medverse_base/" in res.output
    assert "medverse predict --model medverse_base/" in res.output
    res = runner.invoke(
        app,
        ["predict", "--model", "medverse-base", "-t", "t.nii.gz", "-c", "a", "b", "-o", "o.nii.gz"],
    )
    assert res.exit_code == 1
    assert "--model medverse_base/" in res.output and "medverse convert" in res.output
    assert "pretrained" not in res.output and "Traceback" not in res.output


def test_training_checkpoint_loads_with_its_architecture(tmp_path) -> None:
    from medverse.model.config import ModelConfig
    from medverse.model.network import MedverseNet

    config = ModelConfig(channels=(4, 8), window=16)
    torch.manual_seed(0)
    net = MedverseNet(config)
    checkpoint = {
        "version": 1,
        "step": 7,
        "model": net.state_dict(),
        "optimizer": {"state": {}, "param_groups": []},
        "config": {"model": config.to_dict(), "steps": 10},
    }
    path = tmp_path / "step_0000007.pt"
    torch.save(checkpoint, path)
    loaded = load_model(path)
    assert loaded.config == config
    assert "training checkpoint step_0000007.pt (step 7)" in loaded.source
    for key, value in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
