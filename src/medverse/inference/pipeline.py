"""Running the network on arrays: normalise, coarse to fine, segmentation or image out.

The one path from arrays on the target grid to a model output, shared by
:class:`~medverse.inference.predictor.Predictor` (files in, after alignment),
:class:`~medverse.evaluation.model_method.ModelMethod` (the evaluation protocol's arrays),
training validation (:func:`medverse.training.loop.validate`) and the held-out check
(:func:`medverse.training.heldout.heldout_scores`). It has three steps:

1. :class:`ModelInputs`: the arrays as the network takes them. :meth:`ModelInputs.from_arrays`
   min-max normalises the target and every context image
   (:func:`~medverse.intensity.normalize_intensity`, optional percentile clipping), turns
   segmentation outputs into one channel per label (or one ``> 0.5`` mask), normalises image
   outputs and keeps what mapping an image output back needs (the target's intensities and each
   pair's :func:`~medverse.inference.calibration.relative_bounds`).
   :meth:`ModelInputs.from_normalised` takes arrays that are already in the network's units
   (training episodes) as they are.
2. :func:`run_model`: one coarse-to-fine run (:func:`~medverse.inference.driver.run_inference`)
   on NumPy arrays, optionally on flipped copies, on the network's device.
3. :func:`predict_arrays`: one run per ensemble draw (:func:`ensemble_draws`), averaged, then
   the output: a segmentation's label map (argmax over the label channels where the best exceeds
   0.5, :func:`~medverse.inference.guided.labels_from_raw`); an image task's output in the range
   the contexts imply for the target, after the in-context calibration when asked
   (:func:`~medverse.inference.calibration.image_output`), or, for inputs given normalised, the
   network's output clamped to [0, 1].

Scoring is not done here: callers score the returned arrays with
:mod:`medverse.evaluation.metrics`. Registration-guided segmentation
(:mod:`medverse.inference.guided`) and the alignment of contexts onto the target grid
(:mod:`medverse.io.alignment`) happen before, in the callers.

Example:
    >>> import torch
    >>> from medverse.model.config import ModelConfig
    >>> from medverse.model.network import MedverseNet
    >>> rng = np.random.default_rng(0)
    >>> target = rng.random((16, 16, 16), dtype=np.float32) * 100
    >>> pairs = [(rng.random((16, 16, 16)) * 100, rng.random((16, 16, 16)) > 0.5)]
    >>> inputs = ModelInputs.from_arrays(target, pairs, segmentation=True)
    >>> _ = torch.manual_seed(0)
    >>> net = MedverseNet(ModelConfig(channels=(2, 4), window=16)).eval()
    >>> prediction = predict_arrays(net, inputs)
    >>> prediction.array.shape, prediction.raw.shape, prediction.labels
    ((16, 16, 16), (1, 16, 16, 16), (1,))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medverse.errors import InputError
from medverse.inference.calibration import Calibration, image_output, relative_bounds
from medverse.inference.driver import InferenceConfig, run_inference
from medverse.inference.guided import labels_from_raw
from medverse.inference.pyramid import LevelPlan
from medverse.intensity import normalize_intensity
from medverse.model.network import MedverseNet

__all__ = [
    "ArrayPrediction",
    "Draw",
    "ModelInputs",
    "RunInfo",
    "ensemble_draws",
    "predict_arrays",
    "run_model",
]

Draw = tuple[np.ndarray, tuple[int, ...]]
"""One ensemble draw: ``(context indices, flipped spatial axes)``."""

#: The flips that draws over all contexts cycle through (the first is no flip).
_FLIPS = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))


@dataclass(frozen=True)
class ModelInputs:
    """A target and its context pairs on one grid, in the network's units.

    Attributes:
        target: ``(X, Y, Z)`` float32, normalised to [0, 1].
        images: ``(L, 1, X, Y, Z)`` normalised context images.
        outputs: ``(L, K, X, Y, Z)`` context outputs: one mask per label (segmentation; uint8
            0/1 from :meth:`from_arrays`, a quarter of float32's memory, which the driver turns
            into float32 a window's mini-batch of contexts at a time) or the normalised output
            image (``K = 1``, float32).
        segmentation: the outputs are masks.
        labels: label value of each output channel (segmentation); ``()`` for image tasks.
        intensities: ``(X, Y, Z)`` the target before normalisation, whose minimum and maximum
            set the scale an image output is mapped back to; None for inputs given normalised
            (:meth:`from_normalised`), whose image output stays in [0, 1].
        bounds: per context, :func:`~medverse.inference.calibration.relative_bounds` of its
            pair before normalisation (image tasks; empty otherwise).
    """

    target: np.ndarray
    images: np.ndarray
    outputs: np.ndarray
    segmentation: bool
    labels: tuple[int, ...] = ()
    intensities: np.ndarray | None = None
    bounds: tuple[tuple[float, float], ...] = ()

    @property
    def num_contexts(self) -> int:
        """``L``."""
        return int(self.images.shape[0])

    @classmethod
    def from_arrays(
        cls,
        target: Any,
        pairs: Iterable[tuple[Any, Any]],
        *,
        segmentation: bool,
        labels: Sequence[int] | None = None,
        clip_percentiles: tuple[float, float] | None = None,
        num_contexts: int | None = None,
        target_name: str = "target",
        context_names: Sequence[tuple[str, str]] | None = None,
    ) -> ModelInputs:
        """Normalise a target and its ``(image, output)`` context pairs (all on its grid).

        Images (and image outputs) are min-max normalised to [0, 1] after optional percentile
        clipping (:func:`~medverse.intensity.normalize_intensity`). A segmentation output
        becomes one channel per value of ``labels`` (``output == label``), or without
        ``labels`` one channel, ``output > 0.5`` (a binary or soft mask).

        Args:
            target: ``(X, Y, Z)`` intensities.
            pairs: ``(image, output)`` arrays of shape ``(X, Y, Z)``; any iterable (a generator
                that aligns each pair as it is asked for keeps one pair in memory at a time).
            segmentation: the outputs are masks or label maps.
            labels: label values to predict (segmentation); None: one ``> 0.5`` mask.
            clip_percentiles: clip each image to these percentiles before min-max (CT).
            num_contexts: the number of pairs, needed when ``pairs`` has no length.
            target_name: how messages name the target.
            context_names: per pair, how messages name its image and its output.

        Returns:
            :class:`ModelInputs` with the target's intensities and (image tasks) each pair's
            relative bounds.

        Raises:
            InputError: an array is empty or not finite, a shape differs from the target's, bad
                percentiles, or fewer or more pairs than ``num_contexts``.
        """
        intensities = np.asarray(target)
        shape = tuple(intensities.shape)
        if num_contexts is None:
            if not isinstance(pairs, Sequence):
                pairs = list(pairs)
            num_contexts = len(pairs)
        channels = (1 if labels is None else len(labels)) if segmentation else 1
        normalised = normalize_intensity(
            intensities, clip_percentiles=clip_percentiles, name=target_name
        )
        images = np.empty((num_contexts, 1, *shape), np.float32)
        outputs = np.empty(
            (num_contexts, channels, *shape), np.uint8 if segmentation else np.float32
        )
        bounds: list[tuple[float, float]] = []
        count = 0
        for i, (image, output) in enumerate(pairs):
            if i >= num_contexts:
                raise InputError(f"more than num_contexts={num_contexts} context pairs given")
            image_name, output_name = (
                context_names[i] if context_names else (f"context {i} image", f"context {i} output")
            )
            for array, name in ((image, image_name), (output, output_name)):
                if tuple(np.shape(array)) != shape:
                    raise InputError(
                        f"'{name}': shape {tuple(np.shape(array))} differs from the target's "
                        f"{shape}; bring the context onto the target grid first"
                    )
            images[i, 0] = normalize_intensity(
                image, clip_percentiles=clip_percentiles, name=image_name
            )
            if not segmentation:
                outputs[i, 0] = normalize_intensity(
                    output, clip_percentiles=clip_percentiles, name=output_name
                )
                bounds.append(relative_bounds(image, output))
            elif labels is None:
                outputs[i, 0] = np.asarray(output) > 0.5
            else:
                for k, label in enumerate(labels):
                    outputs[i, k] = output == label
            count += 1
        if count != num_contexts:
            raise InputError(f"{count} context pairs given, num_contexts={num_contexts}")
        if count == 0:
            raise InputError("no context pairs given: pass at least one (image, output) pair")
        return cls(
            target=normalised,
            images=images,
            outputs=outputs,
            segmentation=segmentation,
            labels=(tuple(labels) if labels is not None else (1,)) if segmentation else (),
            intensities=intensities,
            bounds=tuple(bounds),
        )

    @classmethod
    def from_normalised(
        cls, target: Any, images: Any, outputs: Any, *, segmentation: bool
    ) -> ModelInputs:
        """Arrays already in the network's units (training episodes), taken as they are.

        Nothing is normalised; an image task's output is the network's output clamped to [0, 1]
        (no range from the contexts, no calibration).

        Args:
            target: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` in [0, 1].
            images: ``(L, 1, X, Y, Z)``.
            outputs: ``(L, K, X, Y, Z)`` (masks are exactly ``{0, 1}``).
            segmentation: the outputs are masks (one label, value 1, per channel).
        """
        target = np.asarray(target, dtype=np.float32)
        images = np.asarray(images, dtype=np.float32)
        outputs = np.asarray(outputs, dtype=np.float32)
        target = target.reshape(target.shape[-3:])
        if images.ndim != 5 or outputs.ndim != 5 or images.shape[0] != outputs.shape[0]:
            raise InputError(
                f"context images {images.shape} and outputs {outputs.shape} must be "
                "(L, 1, X, Y, Z) and (L, K, X, Y, Z)"
            )
        labels = tuple(range(1, outputs.shape[1] + 1)) if segmentation else ()
        return cls(target, images, outputs, segmentation, labels)


@dataclass(frozen=True)
class RunInfo:
    """What one coarse-to-fine run did (its output is in the :class:`ArrayPrediction`).

    Attributes:
        plan: the level plan.
        num_windows: windows run per pass, coarse to fine.
        num_skipped: windows skipped per pass by adaptive refinement.
        seconds: the run's time.
        calibration: a leave-one-out run of the in-context calibration (not an ensemble draw).
    """

    plan: LevelPlan
    num_windows: list[int]
    num_skipped: list[int]
    seconds: float
    calibration: bool = False


@dataclass
class ArrayPrediction:
    """The output of :func:`predict_arrays`.

    Attributes:
        array: ``(X, Y, Z)``: a segmentation's label map (int32) or an image task's output
            (float32; in the target's intensities, or in [0, 1] for inputs given normalised).
        raw: ``(K, X, Y, Z)`` the network's output (mean over the draws), float32.
        std: ``(K, X, Y, Z)`` standard deviation over the draws (2+ draws), else None.
        labels: label value of each raw channel (segmentation).
        runs: every coarse-to-fine run, the draws first, then the calibration's.
        calibration: the in-context calibration applied (image tasks), or None.
    """

    array: np.ndarray
    raw: np.ndarray
    std: np.ndarray | None = None
    labels: tuple[int, ...] = ()
    runs: list[RunInfo] = field(default_factory=list)
    calibration: Calibration | None = None

    @property
    def draws(self) -> list[RunInfo]:
        """The runs of the ensemble draws (not the calibration's)."""
        return [run for run in self.runs if not run.calibration]


def ensemble_draws(
    num_contexts: int, ensemble: int, contexts_per_draw: int | None = None, seed: int = 0
) -> list[Draw]:
    """``(context indices, flipped axes)`` of each of ``ensemble`` draws.

    With ``contexts_per_draw`` below ``num_contexts``, each draw takes a sorted random subset
    (seeded by ``seed``) and no flip; otherwise every draw takes all contexts and the draws cycle
    through the flips of the three axes (the first is unflipped).

    Example:
        >>> [(idx.tolist(), flip) for idx, flip in ensemble_draws(3, 2)]
        [([0, 1, 2], ()), ([0, 1, 2], (0,))]
    """
    rng = np.random.default_rng(seed)
    draws: list[Draw] = []
    for d in range(ensemble):
        if contexts_per_draw is not None and contexts_per_draw < num_contexts:
            subset = np.sort(rng.choice(num_contexts, contexts_per_draw, replace=False))
            draws.append((subset, ()))
        else:
            draws.append((np.arange(num_contexts), _FLIPS[d % len(_FLIPS)]))
    return draws


def _device_of(net: torch.nn.Module) -> torch.device:
    parameter = next(net.parameters(), None)
    return torch.device("cpu") if parameter is None else parameter.device


def run_model(
    net: MedverseNet,
    target: np.ndarray,
    images: np.ndarray,
    outputs: np.ndarray,
    config: InferenceConfig | None = None,
    *,
    segmentation: bool = False,
    device: torch.device | str | None = None,
    flip: tuple[int, ...] = (),
    on_level: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, RunInfo]:
    """One coarse-to-fine run of ``net`` on normalised arrays.

    Args:
        net: the network (eval mode).
        target: ``(X, Y, Z)`` normalised target.
        images: ``(L, 1, X, Y, Z)`` normalised context images.
        outputs: ``(L, K, X, Y, Z)`` context outputs.
        config: driver settings (:class:`~medverse.inference.driver.InferenceConfig`).
        segmentation: the outputs are masks (adaptive refinement applies only then).
        device: where to run; None: the network's device.
        flip: spatial axes (0-2) to flip the inputs along; the output is flipped back.
        on_level: called with (level index, number of levels) before each level.

    Returns:
        ``(raw (K, X, Y, Z) float32 on the CPU, RunInfo)``.
    """
    dev = _device_of(net) if device is None else torch.device(device)
    tgt, cin, cout = (
        torch.from_numpy(np.ascontiguousarray(array))[None]
        for array in (target[None], images, outputs)
    )
    axes = [axis - 3 for axis in flip]
    if flip:
        tgt, cin, cout = (tensor.flip(axes) for tensor in (tgt, cin, cout))
    result = run_inference(
        net,
        tgt.to(dev),
        cin.to(dev),
        cout.to(dev),
        config,
        on_level=on_level,
        segmentation=segmentation,
    )
    out = result.output[0]
    if flip:
        out = out.flip(axes)
    info = RunInfo(result.plan, result.num_windows, result.num_skipped, result.seconds)
    return out.float().cpu().numpy(), info


def predict_arrays(
    net: MedverseNet,
    inputs: ModelInputs,
    config: InferenceConfig | None = None,
    *,
    draws: Sequence[Draw] | None = None,
    calibrate: bool = True,
    device: torch.device | str | None = None,
    on_level: Callable[[int, int], None] | None = None,
) -> ArrayPrediction:
    """Run ``net`` on ``inputs`` and return the segmentation or the image.

    Args:
        net: the network (eval mode).
        inputs: :class:`ModelInputs`.
        config: driver settings.
        draws: ensemble draws (:func:`ensemble_draws`); their raw outputs are averaged. None:
            one draw over all contexts, unflipped.
        calibrate: image tasks with 2+ contexts and the target's intensities: fit and apply
            the in-context calibration (:mod:`medverse.inference.calibration`; one extra run per
            calibrating context, over all contexts, unflipped).
        device: where to run; None: the network's device.
        on_level: called with (level index, number of levels) before each level of every run.

    Returns:
        :class:`ArrayPrediction`.

    Raises:
        ResourceError: out of memory, with the knobs to lower.
    """
    num = inputs.num_contexts
    runs: list[RunInfo] = []
    results = []
    for subset, flip in draws if draws is not None else [(np.arange(num), ())]:
        every = len(subset) == num and bool(np.all(np.asarray(subset) == np.arange(num)))
        raw, info = run_model(
            net,
            inputs.target,
            inputs.images if every else inputs.images[subset],
            inputs.outputs if every else inputs.outputs[subset],
            config,
            segmentation=inputs.segmentation,
            device=device,
            flip=flip,
            on_level=on_level,
        )
        results.append(raw)
        runs.append(info)
    if len(results) == 1:
        raw, std = results[0], None
    else:
        stack = np.stack(results)
        raw, std = stack.mean(axis=0), stack.std(axis=0)
    calibration = None
    if inputs.segmentation:
        array = labels_from_raw(raw, inputs.labels)
    elif inputs.intensities is None:
        array = np.clip(raw[0], 0.0, 1.0)
    else:

        def predict(target: np.ndarray, images: np.ndarray, outputs: np.ndarray) -> np.ndarray:
            out, info = run_model(
                net, target[0], images, outputs, config, device=device, on_level=on_level
            )
            runs.append(RunInfo(info.plan, info.num_windows, info.num_skipped, info.seconds, True))
            return out

        array, calibration = image_output(
            predict,
            raw[0],
            inputs.intensities,
            inputs.target,
            inputs.images,
            inputs.outputs,
            inputs.bounds,
            calibrate=calibrate,
        )
    return ArrayPrediction(array, raw, std, inputs.labels, runs, calibration)
