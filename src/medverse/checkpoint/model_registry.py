"""The registry: the table of named models, ``arch`` or ``arch.tag`` -> architecture and weights.

Pure data, no file access: :mod:`medverse.checkpoint.io` looks names up here (a training
checkpoint may name its architecture), and the factory
:func:`medverse.checkpoint.factory.load_model` resolves a name to its packaged weights. Both
import this module; it imports neither.

Example:
    >>> get_spec("medverse-small").config.window
    64
"""

from __future__ import annotations

from dataclasses import dataclass

from medverse.errors import CheckpointError
from medverse.model.config import ModelConfig

__all__ = ["ModelSpec", "get_spec", "list_models", "register_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: ``arch`` or ``arch.tag`` (e.g. ``medverse-small.synthetic``).
        config: architecture.
        weights: file name inside the package's ``weights/`` folder, or None (no weights ship;
            the released ``medverse-base`` weights must be converted by the user).
        description: one line for ``medverse info``/``list_models``.
    """

    name: str
    config: ModelConfig
    weights: str | None
    description: str


_REGISTRY: dict[str, ModelSpec] = {}
_DEFAULT_TAG: dict[str, str] = {}


def register_model(spec: ModelSpec, *, default: bool = False) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    arch = spec.name.split(".")[0]
    if default or arch not in _DEFAULT_TAG:
        _DEFAULT_TAG[arch] = spec.name
    return spec


def list_models() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """Look a name up; ``arch`` alone means its default tag."""
    name = _DEFAULT_TAG.get(name, name)
    if name not in _REGISTRY:
        raise CheckpointError(
            f"unknown model {name!r}: not a registered name ({', '.join(list_models())}) "
            "and not an existing path"
        )
    return _REGISTRY[name]


register_model(
    ModelSpec(
        "medverse-base",
        ModelConfig(),
        None,
        "released architecture (71.05 M parameters, 128^3 windows); weights: convert the authors' checkpoint",
    )
)
register_model(
    ModelSpec(
        "medverse-small",
        ModelConfig(channels=(8, 16, 32, 64, 128), window=64, prior_gate=True),
        "medverse-small.safetensors",
        "CPU-sized Medverse (channels 8..128, 64^3 windows, prior gate); 2360 CPU steps on "
        "synthetic and MNI-template episodes for 3.5-4.5 mm whole-head volumes, then 200 of its "
        "prior gate alone for registration-guided segmentation at 1.8-4.5 mm "
        "(see weights/MODEL_CARD.md)",
    )
)
