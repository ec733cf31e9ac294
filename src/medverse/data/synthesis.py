"""Synthetic data from nothing: label maps, multi-modal images, nnU-Net folders, degradations.

This module was split along its two roles (METHOD.md §4); it re-exports their names for one
release. Import them from their modules:

* :mod:`medverse.data.phantoms`: synthetic anatomies (:func:`make_label_map`,
  :func:`render_modality`, :func:`make_subject`, :func:`write_synthetic_dataset`, ...), a test
  fixture for the whole pipeline and the synthetic data source of training;
* :mod:`medverse.data.degradations`: the enhancement tasks of training, deterministic operations
  (:class:`GaussianNoise`, ..., ``ENHANCEMENT_OPS``) and the ``Random*`` objects that draw them
  (:func:`enhancement_ops`);
* :mod:`medverse.data.noise`: :func:`perlin_noise`, which both use.
"""

from __future__ import annotations

from medverse.data.degradations import (
    ENHANCEMENT_OPS,
    RANDOM_ENHANCEMENTS,
    BiasField,
    GaussianNoise,
    Inpainting,
    LowResolution,
    RandomBiasField,
    RandomGaussianNoise,
    RandomInpainting,
    RandomLowResolution,
    RandomSaltAndPepper,
    RandomSuperResolution,
    SaltAndPepper,
    SuperResolution,
    default_enhancements,
    enhancement_ops,
)
from medverse.data.degradations import (
    _down_up as _down_up,
)
from medverse.data.degradations import (
    _RandomOp as _RandomOp,
)
from medverse.data.degradations import (
    _range as _range,
)
from medverse.data.noise import perlin_noise
from medverse.data.phantoms import (
    Anatomy,
    StructureSpec,
    SyntheticSubject,
    draw_anatomy,
    draw_intensity_table,
    make_label_map,
    make_subject,
    render_modality,
    write_synthetic_dataset,
)
from medverse.intensity import minmax_scale

# the private min-max that other modules took from here: data/phantoms.py's ``_minmax``,
# now medverse.intensity.minmax_scale
_minmax = minmax_scale

__all__ = [
    "ENHANCEMENT_OPS",
    "RANDOM_ENHANCEMENTS",
    "Anatomy",
    "BiasField",
    "GaussianNoise",
    "Inpainting",
    "LowResolution",
    "RandomBiasField",
    "RandomGaussianNoise",
    "RandomInpainting",
    "RandomLowResolution",
    "RandomSaltAndPepper",
    "RandomSuperResolution",
    "SaltAndPepper",
    "StructureSpec",
    "SuperResolution",
    "SyntheticSubject",
    "default_enhancements",
    "draw_anatomy",
    "draw_intensity_table",
    "enhancement_ops",
    "make_label_map",
    "make_subject",
    "perlin_noise",
    "render_modality",
    "write_synthetic_dataset",
]
