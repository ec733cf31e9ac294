"""The Medverse network as an evaluation method (same signature as the baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medverse.inference.calibration import image_output
from medverse.inference.driver import InferenceConfig, run_inference
from medverse.io.context import normalize_intensity, relative_bounds
from medverse.model.network import MedverseNet

__all__ = ["ModelMethod"]


class ModelMethod:
    """``method(target_image, context_images, context_outputs, *, spacing, task_family)``.

    Contexts arrive on the target grid (the protocol's contract). Images are min-max normalised;
    segmentation returns the raw map (the protocol thresholds it at 0.5); image tasks return the
    output rescaled to the range the contexts imply (:func:`~medverse.io.context.output_range`),
    with ``calibrate`` (default, as in ``medverse predict``) after the in-context calibration of
    :mod:`medverse.inference.calibration`.
    """

    task_families = ("segmentation", "transformation", "enhancement")

    def __init__(
        self, net: MedverseNet, config: InferenceConfig | None = None, *, calibrate: bool = True
    ) -> None:
        self.net = net.eval()
        self.config = config or InferenceConfig(sw_batch_size=2)
        self.calibrate = calibrate

    def _predict(self, target: np.ndarray, images: np.ndarray, outputs: np.ndarray) -> np.ndarray:
        """Normalised ``(1, X, Y, Z)`` target and ``(L, 1, ...)`` pairs -> ``(1, X, Y, Z)``."""
        t, ci, co = (
            torch.from_numpy(np.ascontiguousarray(a))[None] for a in (target, images, outputs)
        )
        return run_inference(self.net, t, ci, co, self.config).output[0].numpy()

    def __call__(
        self,
        target_image: np.ndarray,
        context_images: Sequence[np.ndarray],
        context_outputs: Sequence[np.ndarray],
        *,
        spacing: Any = None,
        task_family: str = "segmentation",
    ) -> np.ndarray:
        segmentation = task_family == "segmentation"
        tgt = normalize_intensity(target_image)[None]
        images = np.stack([normalize_intensity(c) for c in context_images])[:, None]
        outs = [
            (o > 0.5).astype(np.float32) if segmentation else normalize_intensity(o)
            for o in context_outputs
        ]
        outputs = np.stack(outs)[:, None]
        raw = self._predict(tgt, images, outputs)[0]
        if segmentation:
            return raw
        bounds = [relative_bounds(i, o) for i, o in zip(context_images, context_outputs)]
        array, _ = image_output(
            self._predict,
            raw,
            target_image,
            tgt[0],
            images,
            outputs,
            bounds,
            calibrate=self.calibrate,
        )
        return array
