"""The Medverse network as an evaluation method (same signature as the baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medverse.inference.driver import InferenceConfig, run_inference
from medverse.io.context import normalize_intensity, output_range
from medverse.model.network import MedverseNet

__all__ = ["ModelMethod"]


class ModelMethod:
    """``method(target_image, context_images, context_outputs, *, spacing, task_family)``.

    Contexts arrive on the target grid (the protocol's contract). Images are min-max normalised;
    segmentation returns the raw map (the protocol thresholds it at 0.5); image tasks return the
    output rescaled to the range the contexts imply (:func:`~medverse.io.context.output_range`).
    """

    task_families = ("segmentation", "transformation", "enhancement")

    def __init__(self, net: MedverseNet, config: InferenceConfig | None = None) -> None:
        self.net = net.eval()
        self.config = config or InferenceConfig(sw_batch_size=2)

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
        tgt = torch.from_numpy(normalize_intensity(target_image))[None, None]
        cin = torch.from_numpy(np.stack([normalize_intensity(c) for c in context_images]))[
            None, :, None
        ]
        outs = [
            (o > 0.5).astype(np.float32) if segmentation else normalize_intensity(o)
            for o in context_outputs
        ]
        cout = torch.from_numpy(np.stack(outs))[None, :, None]
        raw = run_inference(self.net, tgt, cin, cout, self.config).output[0, 0].numpy()
        if segmentation:
            return raw
        lo, hi = output_range(target_image, context_images, context_outputs)
        return (raw * (hi - lo) + lo).astype(np.float32)
