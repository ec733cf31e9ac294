"""The factory: :func:`load_model` builds a network from a registered name or a weight path.

Names (``arch`` or ``arch.tag``) resolve to packaged files or to a user path, never to a
download. The table of names (:class:`~medverse.checkpoint.model_registry.ModelSpec`,
:func:`~medverse.checkpoint.model_registry.list_models`, ...) is
:mod:`medverse.checkpoint.model_registry`.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

import torch

from medverse.checkpoint.io import LoadedWeights, load_network, read_weights, sha256_file
from medverse.checkpoint.model_registry import get_spec
from medverse.errors import CheckpointError
from medverse.model.config import ModelConfig
from medverse.model.network import MedverseNet

__all__ = ["load_model", "RELEASED_REPOSITORY", "released_weights_help"]

log = logging.getLogger(__name__)

# Where the authors publish Medverse (code and checkpoint links in its README), as the paper
# (arXiv 2509.09232) states. Nothing here downloads it: the user fetches the file.
RELEASED_REPOSITORY = "https://github.com/jiesihu/Medverse"
RELEASED_NUMEL = 71_054_793  # stored numbers of the released state dict (172 tensors)


def released_weights_help(folder: str = "medverse_base/") -> list[str]:
    """How to get from the authors' checkpoint to predictions: where, what file, two commands."""
    return [
        f"where:    the authors' repository {RELEASED_REPOSITORY} (its README links the "
        "released checkpoint; no download from medverse)",
        f"file:     a PyTorch Lightning .ckpt whose state_dict holds 172 'net.*' tensors, "
        f"{RELEASED_NUMEL:,} numbers: about {RELEASED_NUMEL * 4 / 1e6:.0f} MB as float32 "
        "(more if it also stores optimizer state); .pt/.pth/.safetensors state dicts work too",
        f"convert:  medverse convert FILE.ckpt {folder}   (prints the SHA-256 of FILE.ckpt)",
        f"predict:  medverse predict --model {folder} --target TARGET.nii.gz "
        "--context IMAGE.nii.gz OUTPUT.nii.gz --output PRED.nii.gz",
    ]


def _packaged(file_name: str) -> Path:
    return Path(str(resources.files("medverse") / "weights" / file_name))


def load_model(
    name_or_path: str | os.PathLike[str] = "medverse-small",
    *,
    device: str | torch.device = "cpu",
    pretrained: bool = True,
    window: int | None = None,
) -> MedverseNet:
    """Build a network from a registered name or a weight file/folder.

    Args:
        name_or_path: a name from :func:`~medverse.checkpoint.model_registry.list_models`, a
            folder or ``.safetensors`` written by ``medverse convert``/training, the released
            ``.ckpt``, or a bare state dict.
        device: where to put the network.
        pretrained: False builds the architecture with random weights (registered names only).
        window: override the window edge.

    Returns:
        The network in eval mode, with ``.source`` and ``.weights_sha256`` set.

    Raises:
        CheckpointError: unknown name, name without packaged weights, unreadable file, or a
            state dict that does not fit the architecture.

    Example:
        >>> net = load_model("medverse-base", pretrained=False)
        >>> sum(p.numel() for p in net.parameters())
        71054793
    """
    path = Path(name_or_path)
    if path.exists():
        weights = read_weights(path, window=window)
        sha = sha256_file(path) if path.is_file() else weights.meta.get("sha256", "")
    else:
        spec = get_spec(str(name_or_path))
        config = spec.config
        if window:
            config = ModelConfig.from_dict({**config.to_dict(), "window": window})
        if not pretrained:
            net = MedverseNet(config).eval()
            net.source, net.weights_sha256 = f"{spec.name} (random init)", ""
            net.trained_on = None
            return net.to(device)
        if spec.weights is None:
            raise CheckpointError(
                f"{spec.name!r} ships no weights: get the authors' checkpoint (see "
                f"{RELEASED_REPOSITORY}), convert it once with `medverse convert FILE.ckpt "
                "medverse_base/`, then pass the folder as the model (`--model medverse_base/`); "
                "`medverse info medverse-base` shows the steps"
            )
        file = _packaged(spec.weights)
        weights = read_weights(file, window=config.window)
        weights = LoadedWeights(weights.state_dict, config, f"packaged {spec.name}", weights.meta)
        sha = sha256_file(file)
    net = load_network(weights)
    net.source, net.weights_sha256 = weights.source, sha
    # what the weights were trained on (voxel sizes, field of view), if their metadata says:
    # medverse.inference.guards warns about targets far from it
    net.trained_on = weights.meta.get("trained_on")
    log.info("loaded %s (%s)", weights.source, weights.config)
    return net.to(device)
