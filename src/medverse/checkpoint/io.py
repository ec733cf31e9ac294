"""Reading and writing weights.

Our format is a folder (or a single ``.safetensors`` file) holding ``model.safetensors`` and a
``config.json`` beside it; the config is also stored in the safetensors metadata, so a lone file
is self-describing. Nothing is ever unpickled except through ``torch.load(weights_only=True)``
with a restricted set of stand-in classes (the released Lightning checkpoint pickles an
``argparse.Namespace``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medverse.checkpoint.convert import convert_official_state_dict, infer_config
from medverse.checkpoint.model_registry import get_spec
from medverse.errors import CheckpointError
from medverse.files import atomic_path, atomic_write_text
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

__all__ = ["LoadedWeights", "read_weights", "load_network", "save_model", "sha256_file"]

log = logging.getLogger(__name__)

FORMAT = "medverse"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_FORBIDDEN_MODULES = (
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "builtins",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "code",
    "pty",
    "webbrowser",
    "ctypes",
    "pickle",
)


@dataclass
class LoadedWeights:
    """A state dict in our naming with what is known about it."""

    state_dict: dict[str, torch.Tensor]
    config: ModelConfig
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _StandIn:
    """Inert replacement for a pickled class we do not need (Lightning callbacks, configs...)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _torch_load_restricted(path: Path) -> Any:
    """``torch.load(weights_only=True)``; unknown harmless classes become :class:`_StandIn`."""
    allowed: list[Any] = [argparse.Namespace]
    for _ in range(32):
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            match = re.search(r"GLOBAL ([\w\.]+)", str(err))
            if not match:
                # torch's text is several lines of advice (weights_only=False: unsafe); keep
                # only what the unpickler found, e.g. "Unsupported operand 31"
                found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
                detail = found.group(1).strip() if found else str(err).split("\n")[0]
                raise CheckpointError(
                    f"'{path}': not a readable PyTorch checkpoint ({detail[:200]}); expected a "
                    ".ckpt/.pt/.pth saved by torch.save, a .safetensors file or a folder "
                    "written by medverse convert"
                ) from None
            name = match.group(1)
            if name.split(".")[0] in _FORBIDDEN_MODULES:
                raise CheckpointError(
                    f"'{path}': refusing to load: the pickle references {name!r}, which could run "
                    "code. Re-save the weights as a plain state dict or safetensors."
                ) from None
            stand_in = type(name.rsplit(".", 1)[-1], (_StandIn,), {})
            allowed.append((stand_in, name))
            log.debug("checkpoint %s: %s replaced by an inert stand-in", path, name)
    raise CheckpointError(f"'{path}': too many unknown pickled classes")


def _hparams_channels(hparams: Any) -> list[int] | None:
    if isinstance(hparams, argparse.Namespace):
        hparams = vars(hparams)
    if isinstance(hparams, Mapping):
        inner = hparams.get("hparams", hparams)
        if isinstance(inner, argparse.Namespace):
            inner = vars(inner)
        if isinstance(inner, Mapping) and "nb_inner_channels" in inner:
            return [int(c) for c in inner["nb_inner_channels"]]
    return None


def _read_ours(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A folder of ours, or a ``.safetensors`` file (ours or a bare released state dict)."""
    if path.is_dir():
        weights, config_path = path / WEIGHTS_NAME, path / CONFIG_NAME
        if not weights.is_file():
            raise CheckpointError(f"'{path}': folder has no {WEIGHTS_NAME}")
    else:
        weights, config_path = path, path.with_suffix(".json")
    try:
        state = load_file(weights)
        with open(weights, "rb") as fh:  # metadata lives in the JSON header
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"'{weights}': not a readable safetensors file ({err})") from None
    meta: dict[str, Any] = {}
    text = (header.get("__metadata__") or {}).get("medverse_config")
    if config_path.is_file():
        meta = json.loads(config_path.read_text())
    elif text:
        meta = json.loads(text)
    return state, meta


def read_weights(path: str | os.PathLike[str], *, window: int | None = None) -> LoadedWeights:
    """Read weights from any supported file, converted to our naming.

    Accepts our folder / ``.safetensors`` (with config), the released Lightning ``.ckpt``, a
    ``medverse.training`` checkpoint (``step_*.pt``: its network, architecture from its config),
    and a bare state dict (``.pt``, ``.pth``, ``.safetensors``) with released or our keys.

    Args:
        path: file or folder.
        window: override the window edge (released checkpoints: 128).

    Raises:
        CheckpointError: missing/unreadable file, not a Medverse checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"'{path}': no such file or folder")
    meta: dict[str, Any] = {}
    if path.is_dir() or path.suffix == ".safetensors":
        raw, meta = _read_ours(path)
        source = meta.get("source", f"file {path.name}")
    else:
        if not zipfile.is_zipfile(path) and path.stat().st_size < 16:
            raise CheckpointError(f"'{path}': not a checkpoint (file too small)")
        try:
            obj = _torch_load_restricted(path)
        except CheckpointError:
            raise
        except Exception as err:  # torch raises many types for corrupt files
            detail = str(err).split("\n")[0][:200]
            raise CheckpointError(
                f"'{path}': not a readable PyTorch checkpoint ({detail})"
            ) from None
        if not isinstance(obj, Mapping):
            raise CheckpointError(
                f"'{path}': expected a state dict or checkpoint dict, got {type(obj).__name__}"
            )
        raw = obj.get("state_dict", obj)
        training_model = _training_checkpoint_model(obj)
        if training_model is not None:  # a checkpoint written by medverse.training
            raw, meta["model"] = obj["model"], training_model
        if not isinstance(raw, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in raw.values()
        ):
            raise CheckpointError(
                f"'{path}': no tensor state dict inside (keys: {sorted(obj)[:5]})"
            )
        channels = _hparams_channels(obj.get("hyper_parameters"))
        if channels:
            meta["hparams_channels"] = channels
        source = (
            f"released checkpoint {path.name}"
            if "state_dict" in obj
            else f"training checkpoint {path.name} (step {obj.get('step')})"
            if training_model is not None
            else f"state dict {path.name}"
        )
    state = convert_official_state_dict(raw)
    model_meta = meta.get("model")
    if model_meta:
        config = ModelConfig.from_dict(model_meta)
        if window:
            config = ModelConfig.from_dict({**config.to_dict(), "window": window})
    else:
        config = infer_config(state, window=window or 128)
    hp = meta.get("hparams_channels")
    if hp and list(config.channels) != hp:
        raise CheckpointError(
            f"'{path}': hyper-parameters say channels {hp} but the weights have {list(config.channels)}"
        )
    return LoadedWeights(dict(state), config, str(source), meta)


def _training_checkpoint_model(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The architecture of a ``medverse.training`` checkpoint (``step_*.pt``), else None."""
    if not {"model", "optimizer", "config"} <= set(obj) or not isinstance(obj["config"], Mapping):
        return None
    model = obj["config"].get("model")
    if isinstance(model, str):
        return get_spec(model).config.to_dict()
    return dict(model) if isinstance(model, Mapping) else None


def load_network(weights: LoadedWeights) -> MedverseNet:
    """Build the network for ``weights.config`` and load strictly.

    Raises:
        CheckpointError: keys that do not map, missing keys, or shape mismatches (all listed).
    """
    net = MedverseNet(weights.config)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(weights.state_dict))
    unexpected = sorted(set(weights.state_dict) - set(expected))
    wrong = sorted(
        f"{k}: {tuple(weights.state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights.state_dict and weights.state_dict[k].shape != v.shape
    )
    if missing or unexpected or wrong:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} keys do not map (e.g. {unexpected[:3]})")
        if missing:
            parts.append(f"{len(missing)} keys missing (e.g. {missing[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shapes differ (e.g. {wrong[:2]})")
        raise CheckpointError(f"{weights.source}: wrong architecture: " + "; ".join(parts))
    net.load_state_dict({k: v.float() for k, v in weights.state_dict.items()}, strict=True)
    return net.eval()


def save_model(
    dest: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    config: ModelConfig,
    *,
    source: str,
    half: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write weights in our format, atomically.

    ``dest`` ending in ``.safetensors`` → that file plus ``<stem>.json``; anything else → a
    folder with ``model.safetensors`` and ``config.json``. The parent folder must exist.

    Args:
        dest: output path.
        state_dict: tensors in our naming.
        config: architecture.
        source: where the weights came from (shown by ``medverse info``).
        half: store float16 (half the size; loaded back as float32).
        extra: more metadata for the JSON (training run, sha of the source...).

    Returns:
        The path to pass to ``load_model``.
    """
    dest = Path(dest)
    parent = dest.parent
    if not parent.is_dir():
        raise CheckpointError(f"output folder '{parent}' does not exist")
    if dest.suffix == ".safetensors":
        weights_path, config_path = dest, dest.with_suffix(".json")
    else:
        dest.mkdir(exist_ok=True)
        weights_path, config_path = dest / WEIGHTS_NAME, dest / CONFIG_NAME
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state_dict.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config.to_dict(),
        "source": source,
        "dtype": str(dtype).replace("torch.", ""),
        **(dict(extra) if extra else {}),
    }
    with atomic_path(weights_path) as temporary:
        save_file(tensors, temporary, metadata={"medverse_config": json.dumps(meta)})
    meta["sha256"] = sha256_file(weights_path)
    atomic_write_text(config_path, json.dumps(meta, indent=2) + "\n")
    return dest
