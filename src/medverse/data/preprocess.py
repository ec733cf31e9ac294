"""How raw volumes become training volumes: :class:`PreprocessConfig`.

Preprocessing uses TorchIO: reorientation (``ToOrientation``), resampling (``Resample``), a crop
to the non-zero bounding box (as nnU-Net), and per-channel percentile clipping with rescaling to
``[0, 1]`` (``RescaleIntensity``). :class:`~medverse.data.nnunet_raw.NnUNetDataset` applies it to
each case and keys its cache on :meth:`PreprocessConfig.to_dict`; label maps are stored in the
smallest integer type that holds them (``_as_label_dtype``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np

from medverse.errors import InputError

__all__ = ["PreprocessConfig"]


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw volumes become training volumes. Part of the cache key.

    Attributes:
        orientation: target orientation code (TorchIO ``ToOrientation``), ``"RAS"`` by default
            so every dataset shares axis directions; ``None`` keeps the file's voxel order.
        spacing: target voxel size in mm (one number or three; TorchIO ``Resample``, labels
            nearest); ``None`` keeps the native spacing (the method works at full resolution).
        crop_foreground: crop to the bounding box of non-zero voxels of any channel or label
            (nnU-Net's ``crop_to_nonzero``), plus ``foreground_margin`` voxels.
        foreground_margin: margin of that crop, in voxels.
        clip_percentiles: per channel, clip to these percentiles and rescale to ``[0, 1]``
            (TorchIO ``RescaleIntensity``); ``None`` keeps raw intensities. 0.5/99.5 removes
            outliers (hot voxels, metal) that would squash min-max normalisation of episodes.
    """

    orientation: str | None = "RAS"
    spacing: float | tuple[float, float, float] | None = None
    crop_foreground: bool = True
    foreground_margin: int = 0
    clip_percentiles: tuple[float, float] | None = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.orientation is not None:
            code = str(self.orientation).upper()
            if len(code) != 3 or sorted(
                set(code.replace("L", "R").replace("P", "A").replace("I", "S"))
            ) != ["A", "R", "S"]:
                raise InputError(
                    f"orientation must be a 3-letter code such as 'RAS' or 'LPS', got {self.orientation!r}"
                )
            object.__setattr__(self, "orientation", code)
        if self.spacing is not None:
            values = (self.spacing,) * 3 if np.isscalar(self.spacing) else tuple(self.spacing)
            if len(values) != 3 or not all(
                math.isfinite(float(v)) and float(v) > 0 for v in values
            ):
                raise InputError(
                    f"spacing must be a positive number or three, got {self.spacing!r}"
                )
            object.__setattr__(self, "spacing", tuple(float(v) for v in values))
        if self.foreground_margin < 0:
            raise InputError(f"foreground_margin must be >= 0, got {self.foreground_margin}")
        if self.clip_percentiles is not None:
            low, high = (float(v) for v in self.clip_percentiles)
            if not 0 <= low < high <= 100:
                raise InputError(
                    f"clip_percentiles must satisfy 0 <= low < high <= 100, got {self.clip_percentiles!r}"
                )
            object.__setattr__(self, "clip_percentiles", (low, high))

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _as_label_dtype(array: np.ndarray) -> np.ndarray:
    rounded = np.round(array)
    if rounded.size and (
        rounded.min() < np.iinfo(np.int16).min or rounded.max() > np.iinfo(np.int16).max
    ):
        return rounded.astype(np.int32)
    return rounded.astype(np.int16)
