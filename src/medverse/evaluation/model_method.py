"""The Medverse network as an evaluation method (same signature as the baselines)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medverse.errors import InputError
from medverse.inference.driver import InferenceConfig
from medverse.inference.guided import (
    GuidedContext,
    GuidedResult,
    fit_local_stacking,
    guided_segmentation,
)
from medverse.inference.pipeline import ModelInputs, predict_arrays
from medverse.io.volume import Volume
from medverse.registration.cache import RegistrationCache
from medverse.registration.driver import register
from medverse.types import TASK_FAMILIES

__all__ = ["GUIDED_OUTPUTS", "MODEL_ALIGNMENTS", "ModelMethod"]

#: How the method brings contexts to the target: as given (the protocol's contexts already
#: share the target grid), registered affinely (images and outputs resampled linearly, masks
#: with nearest neighbour, as ``medverse predict --align affine``), or registered deformably
#: (``"deformable"``: registration-guided segmentation, as ``--align deformable``), or
#: ``"auto"``, as ``medverse predict``'s default: registration-guided segmentation when the
#: network has a prior gate, the contexts as given otherwise (and for image tasks).
MODEL_ALIGNMENTS = ("auto", "none", "affine", "deformable")
#: What a guided segmentation returns: the stacked blend (default), or one of its two parts.
#: What a guided call returns: the stacked output, its parts, and the same stacking refitted
#: without the network's features (``"stacked_fusion"``: what the network adds to the stacking).
GUIDED_OUTPUTS = ("stacked", "network", "fusion", "stacked_fusion")


def _affine(spacing: Any) -> np.ndarray:
    """The grid the protocol's arrays are on: ``spacing`` mm voxels (1 mm when not given)."""
    values = (1.0, 1.0, 1.0) if spacing is None else spacing
    return np.diag([*(float(s) for s in values), 1.0])


class ModelMethod:
    """``method(target_image, context_images, context_outputs, *, spacing, task_family)``.

    Contexts arrive on the target grid (the protocol's contract) and run through the array
    pipeline (:func:`~medverse.inference.pipeline.predict_arrays`), as in ``medverse predict``:
    images are min-max normalised; segmentation returns the raw map (the protocol thresholds it
    at 0.5); image tasks return the output rescaled to the range the contexts imply
    (:func:`~medverse.inference.calibration.output_range`), with ``calibrate`` (default, as in
    ``medverse predict``) after the in-context calibration of
    :mod:`medverse.inference.calibration`.

    ``net`` is a :class:`~medverse.model.network.MedverseNet`.

    With ``align="deformable"``, segmentation is registration-guided
    (:func:`~medverse.inference.guided.guided_segmentation`): contexts registered to the target
    with ``engine``, network + fusion, and (``calibrate``) the leave-one-out stacking;
    ``output`` picks the stacked output or one part (:data:`GUIDED_OUTPUTS`). :meth:`variant` gives the other parts from
    the same computation (one guided run per draw serves all three).

    ``windows`` counts the network's fine-level windows over all calls so far (the coarse-to-fine
    path; a guided call runs one full-resolution pass, not counted): ``"run"`` and ``"skipped"``
    (by ``config.refine == "adaptive"``), so a report can say what adaptive refinement saved.
    """

    task_families = TASK_FAMILIES

    def __init__(
        self,
        net: torch.nn.Module,
        config: InferenceConfig | None = None,
        *,
        calibrate: bool = True,
        align: str = "none",
        engine: str = "ants",
        cache: RegistrationCache | None = None,
        output: str = "stacked",
    ) -> None:
        if align not in MODEL_ALIGNMENTS:
            raise InputError(f"align must be one of {MODEL_ALIGNMENTS}, got {align!r}")
        if output not in GUIDED_OUTPUTS:
            raise InputError(f"output must be one of {GUIDED_OUTPUTS}, got {output!r}")
        self.net = net.eval()
        self.config = config or InferenceConfig(sw_batch_size=2)
        self.calibrate = calibrate
        self.align = align
        self.engine = engine
        self.cache = cache
        self.output = output
        self._memo: dict[str, Any] = {"key": None, "result": None}
        self.windows = {"run": 0, "skipped": 0}

    def variant(self, output: str) -> ModelMethod:
        """The same method returning another part of a guided call, sharing its computation."""
        other = ModelMethod(
            self.net,
            self.config,
            calibrate=self.calibrate,
            align=self.align,
            engine=self.engine,
            cache=self.cache,
            output=output,
        )
        other._memo = self._memo
        other.windows = self.windows
        return other

    def alignment(self, segmentation: bool) -> str:
        """The alignment a call runs: ``align``, with ``"auto"`` resolved for this network."""
        if self.align != "auto":
            return self.align
        return "deformable" if segmentation and self.net.config.prior_gate else "none"

    def _guided(
        self,
        target_image: np.ndarray,
        context_images: Sequence[np.ndarray],
        context_outputs: Sequence[np.ndarray],
        spacing: Any,
    ) -> GuidedResult:
        affine = _affine(spacing)
        digest = hashlib.blake2b(digest_size=16)
        for array in (target_image, *context_images, *context_outputs, affine):
            digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        key = f"{digest.hexdigest()}:{self.calibrate}"
        if self._memo["key"] != key:
            target = Volume(target_image, affine, name="target")
            contexts = [
                GuidedContext(
                    Volume(image, affine, name=f"context {i}"),
                    (np.asarray(output) > 0.5).astype(np.float32)[None],
                )
                for i, (image, output) in enumerate(zip(context_images, context_outputs))
            ]
            result = guided_segmentation(
                self.net,
                target,
                contexts,
                config=self.config,
                engine=self.engine,
                cache=self.cache,
                stack=self.calibrate,
            )
            self._memo.update(key=key, result=result)
        return self._memo["result"]

    def _registered(
        self,
        target_image: np.ndarray,
        context_images: Sequence[np.ndarray],
        context_outputs: Sequence[np.ndarray],
        spacing: Any,
        segmentation: bool,
        align: str,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Contexts registered onto the target with ``align`` (affine, or deformable for image
        tasks), outputs resampled with them (masks: nearest neighbour)."""
        affine = _affine(spacing)
        fixed = Volume(np.asarray(target_image, dtype=np.float32), affine, name="target")
        images, outputs = [], []
        for i, (image, output) in enumerate(zip(context_images, context_outputs)):
            moving = Volume(np.asarray(image, dtype=np.float32), affine, name=f"context {i}")
            reg = register(fixed, moving, kind=align, engine=self.engine, cache=self.cache)
            images.append(reg.warp(moving.array))
            if segmentation:
                mask = (np.asarray(output) > 0.5).astype(np.float32)
                outputs.append(reg.warp(mask, interpolation="nearest"))
            else:
                outputs.append(reg.warp(np.asarray(output, dtype=np.float32)))
        return images, outputs

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
        align = self.alignment(segmentation)
        if segmentation and align == "deformable":
            result = self._guided(target_image, context_images, context_outputs, spacing)
            if self.output == "stacked_fusion":
                if not result.held_out:  # no stacking (calibrate off, or one context)
                    return result.fusion[0]
                refit = fit_local_stacking(result.held_out, use_network=False)
                return refit.apply(result.network, result.fusion, result.image)[0]
            part = {"stacked": result.raw, "network": result.network, "fusion": result.fusion}
            return part[self.output][0]
        if align != "none":
            context_images, context_outputs = self._registered(
                target_image, context_images, context_outputs, spacing, segmentation, align
            )
        inputs = ModelInputs.from_arrays(
            target_image, zip(context_images, context_outputs), segmentation=segmentation
        )
        prediction = predict_arrays(self.net, inputs, self.config, calibrate=self.calibrate)
        for run in prediction.runs:  # the fine levels of the draw and of the calibration runs
            self.windows["run"] += sum(run.num_windows[1:])
            self.windows["skipped"] += sum(run.num_skipped[1:])
        return prediction.raw[0] if segmentation else prediction.array
