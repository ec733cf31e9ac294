"""Predictor: load a model once, predict many targets from files or arrays.

Per target: bring each context pair onto the target grid (physical resampling by default),
then hand the arrays to the array pipeline (:mod:`medverse.inference.pipeline`): normalise every
volume to [0, 1] (optional percentile clipping first), run the coarse-to-fine driver once per
ensemble draw with one output channel per class (the target encoder is shared by all classes),
then combine: segmentation = argmax over classes against a 0.5 background threshold; image tasks
= the output rescaled to the intensity range that the contexts imply for the target (each
aligned context's output range relative to its input's) and, by default, combined with the
target as leave-one-out predictions of the contexts say (:mod:`medverse.inference.calibration`).

Segmentation with ``align="deformable"`` is registration-guided
(:mod:`medverse.inference.guided`): every context is registered to the target (affine, then
deformable), its masks are warped as soft one-hot maps, the network refines their fusion in one
full-resolution pass, and (``calibrate``) the network/fusion blend is chosen on leave-one-out
predictions of the contexts.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medverse.errors import InputError, RegistrationError
from medverse.files import atomic_write_bytes
from medverse.inference.driver import InferenceConfig, autocast_dtype
from medverse.inference.guided import GuidedContext, guided_segmentation, labels_from_raw
from medverse.inference.pipeline import ModelInputs, ensemble_draws, predict_arrays
from medverse.io.alignment import ALIGN_MODES, align_pair
from medverse.io.context import Context
from medverse.io.volume import (
    Volume,
    label_names_path,
    nifti_codes,
    read_volume,
    write_label_names,
    write_volume,
)
from medverse.model.network import MedverseNet
from medverse.registration.cache import RegistrationCache
from medverse.types import PathLike
from medverse.validation import check_option, check_same_grid, check_volume

__all__ = ["Predictor", "Prediction"]

log = logging.getLogger(__name__)


def peak_memory_gib() -> float:
    """Peak resident memory of this process so far, GiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024**3 if sys.platform == "darwin" else 1024**2)


@dataclass
class Prediction:
    """The result for one target.

    Attributes:
        array: ``(X, Y, Z)``: label map (segmentation) or image (in the intensity range the
            contexts imply for the target, :func:`~medverse.inference.calibration.output_range`).
        affine: the target's affine, unchanged.
        task: ``"segmentation"`` or ``"image"``.
        raw: ``(K, X, Y, Z)`` raw network output (mean over ensemble draws), one per class.
        labels: label value of each raw channel (segmentation).
        std: ``(K, X, Y, Z)`` voxel-wise standard deviation over draws, or None.
        source: the target's path.
        summary: levels, windows run per level (``windows``) and skipped by adaptive
            refinement (``skipped``), contexts, seconds, peak memory.
        label_names: label value -> name (segmentation), from the context; saved beside the label
            map as ``<stem>.labels.json`` (:func:`~medverse.io.volume.write_label_names`).
    """

    array: np.ndarray
    affine: np.ndarray
    task: str
    raw: np.ndarray
    labels: tuple[int, ...] = ()
    std: np.ndarray | None = None
    source: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    label_names: dict[int, str] = field(default_factory=dict)

    def mask(self, threshold: float = 0.5) -> np.ndarray:
        """Binary foreground: any class whose raw output exceeds ``threshold``."""
        return (self.raw > threshold).any(axis=0)

    def save(self, path: PathLike, *, raw: bool = False) -> list[Path]:
        """Write atomically with the target's affine (and, for NIfTI, its sform/qform codes).

        ``raw=True`` writes the float network output; with several classes one file per class,
        named ``<stem>_label-<value><ext>``. A segmentation label map gets its label-name sidecar
        ``<stem>.labels.json`` beside it (returned after the volume).
        """
        path = Path(path)
        codes = nifti_codes(self.source)
        if not raw:
            dtype = None
            if self.task == "segmentation":  # the narrowest integer type holding every label
                top = max(self.labels, default=0)
                dtype = np.uint8 if top < 256 else np.int16 if top < 2**15 else np.int32
            if self.task != "segmentation":
                return [write_volume(path, self.array, self.affine, dtype=dtype, codes=codes)]
            # The sidecar first: a sidecar that cannot be written leaves no volume without one,
            # and a volume that cannot be written takes back the sidecar written for it.
            sidecar = label_names_path(path)
            before = sidecar.read_bytes() if sidecar.is_file() else None
            names = write_label_names(path, self.labels, self.label_names)
            try:
                volume = write_volume(path, self.array, self.affine, dtype=dtype, codes=codes)
            except BaseException:
                if before is None:
                    sidecar.unlink(missing_ok=True)
                else:
                    atomic_write_bytes(sidecar, before)
                raise
            return [volume, names]
        if self.raw.shape[0] == 1:
            return [write_volume(path, self.raw[0], self.affine, dtype=np.float32, codes=codes)]
        return [
            write_volume(
                _suffixed(path, f"_label-{lab}"),
                self.raw[k],
                self.affine,
                dtype=np.float32,
                codes=codes,
            )
            for k, lab in enumerate(self.labels)
        ]

    def save_uncertainty(self, path: PathLike) -> Path:
        """Write the standard deviation over ensemble draws (max over classes)."""
        if self.std is None:
            raise InputError("no uncertainty: predict with ensemble >= 2")
        return write_volume(
            path,
            self.std.max(axis=0),
            self.affine,
            dtype=np.float32,
            codes=nifti_codes(self.source),
        )


def _suffixed(path: Path, suffix: str) -> Path:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + suffix + ext)
    return path.with_name(name + suffix)


class Predictor:
    """Full-resolution in-context prediction with a loaded model.

    Args:
        model: a :class:`MedverseNet` (e.g. from :func:`medverse.load_model`).
        config: driver settings (compat, overlap, batch sizes, ``refine``: adaptive refinement
            of segmentation, :class:`~medverse.inference.driver.InferenceConfig`).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Example:
        >>> model = medverse.load_model("medverse-small")  # doctest: +SKIP
        >>> predictor = medverse.Predictor(model)  # doctest: +SKIP
        >>> context = medverse.Context.from_files([("img1.nii.gz", "seg1.nii.gz")])  # doctest: +SKIP
        >>> predictor.predict("target.nii.gz", context).save("pred.nii.gz")  # doctest: +SKIP
    """

    def __init__(
        self, model: MedverseNet, config: InferenceConfig | None = None, *, device: str = "cpu"
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError(
                "device 'cuda' requested but no CUDA device is available; use --device cpu"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config or InferenceConfig()

    def predict(
        self,
        target: Volume | PathLike,
        context: Context | Sequence[tuple[PathLike, PathLike]],
        *,
        align: str = "auto",
        resample: bool = True,
        clip_percentiles: tuple[float, float] | None = None,
        ensemble: int = 1,
        contexts_per_draw: int | None = None,
        seed: int = 0,
        classes: Sequence[int] | None = None,
        calibrate: bool = True,
        engine: str = "ants",
        cache: RegistrationCache | None = None,
    ) -> Prediction:
        """Predict the output of the contexts' task for ``target``.

        Args:
            target: a :class:`Volume` or a path.
            context: a :class:`Context` or ``(image, output)`` path pairs.
            align: how contexts reach the target grid: ``"affine"`` (SimpleITK registration, then
                resampling), ``"physical"`` (world coordinates from the affines), ``"fov"``
                (resize the whole volume), ``"deformable"``: affine then deformable
                registration (``engine``); segmentation is then registration-guided (see the
                module doc). ``"auto"``: :meth:`automatic_alignment` (registration-guided
                segmentation with a gated model such as the bundled ``medverse-small``, affine
                otherwise; if the deformable registration fails, affine with a note). Measured on the real-anatomy kit with contexts re-acquired on
                other grids (benchmarks/bench_alignment.py): mean Dice of the aligned context
                mask with the target mask 0.756 (affine), 0.440 (physical), 0.338 (fov).
            resample: False refuses contexts on another grid instead of resampling them.
            clip_percentiles: clip each image to these percentiles before min-max (CT).
            ensemble: number of draws averaged; draws use random subsets of
                ``contexts_per_draw`` contexts, or (all contexts) flipped copies.
            contexts_per_draw: contexts per draw (default: all).
            seed: seed of the subset draws.
            classes: label values to predict (default: every label present in the contexts).
            calibrate: image tasks with 2+ contexts: combine the network's output with the
                target as the contexts say, fitted on leave-one-out predictions of up to 4
                contexts (:mod:`medverse.inference.calibration`; one extra network run each).
                The coefficients are in ``summary["calibration"]``. Registration-guided
                segmentation: choose the network/fusion blend on leave-one-out predictions
                (``summary["stacking"]``); other segmentation ignores it.
            engine: registration engine of ``align="deformable"`` (``"ants"`` or ``"sitk"``).
            cache: on-disk registration cache (:class:`~medverse.registration.RegistrationCache`),
                or None.

        Returns:
            :class:`Prediction`.

        Raises:
            InputError: bad volumes, grids that cannot be aligned with ``resample=False``.
            ResourceError: out of memory, with the knobs to lower.
        """
        start = time.perf_counter()
        if align != "auto":
            check_option(align, ALIGN_MODES, "align")
        if ensemble < 1:
            raise InputError(f"ensemble must be >= 1, got {ensemble}")
        if int(seed) < 0:  # numpy's generator would raise a bare ValueError at the first draw
            raise InputError(f"seed must be >= 0, got {seed}")
        if not isinstance(target, Volume):
            target = read_volume(target, name=str(target))
        check_volume(target.array, target.name)
        if not isinstance(context, Context):
            context = Context.from_files(list(context))
        automatic = align == "auto"
        if automatic:
            align = self.automatic_alignment(context, resample)
        labels = tuple(classes) if classes is not None else context.labels
        if context.task == "segmentation":
            missing = [c for c in labels if c not in context.labels]
            if missing or not labels:
                raise InputError(
                    f"classes {missing or list(labels)} not found in any context mask (found {list(context.labels)})"
                )
        if contexts_per_draw is not None and not 1 <= contexts_per_draw <= len(context):
            raise InputError(
                f"contexts_per_draw must be in 1..{len(context)}, got {contexts_per_draw}"
            )
        if align == "deformable" and context.task == "segmentation":
            try:
                return self._predict_guided(
                    target,
                    context,
                    labels,
                    start=start,
                    clip_percentiles=clip_percentiles,
                    ensemble=ensemble,
                    contexts_per_draw=contexts_per_draw,
                    seed=seed,
                    calibrate=calibrate,
                    engine=engine,
                    cache=cache,
                )
            except RegistrationError as error:
                if not automatic:
                    raise
                # the default asked for more than the inputs allow: say so, align affinely
                align = "affine"
                fallback = f"deformable registration failed ({error}); contexts aligned affinely"
        else:
            fallback = None

        segmentation = context.task == "segmentation"
        notes: list[str] = []
        inputs = ModelInputs.from_arrays(
            target.array,
            self._aligned_pairs(target, context, align, resample, notes, engine, cache),
            segmentation=segmentation,
            labels=labels if segmentation else None,
            clip_percentiles=clip_percentiles,
            num_contexts=len(context),
            target_name=target.name,
            context_names=[(pair.image.name, pair.output.name) for pair in context],
        )
        draws = ensemble_draws(len(context), ensemble, contexts_per_draw, seed)
        prediction = predict_arrays(
            self.model,
            inputs,
            self.config,
            draws=draws,
            calibrate=calibrate,
            device=self.device,
            on_level=self._on_level,
        )
        last = prediction.draws[-1]
        summary = {
            "levels": last.plan.num_levels,
            "windows": last.num_windows,
            "skipped": last.num_skipped,
            "refine": self.config.refine,
            "precision": "bf16" if autocast_dtype(self.config.precision, self.device) else "fp32",
            "contexts": len(context),
            "draws": len(draws),
            "calibration": (
                prediction.calibration.to_dict() if prediction.calibration is not None else None
            ),
            "plan": [lv.shape for lv in last.plan.levels],
        }
        summary.update(
            seconds=time.perf_counter() - start,
            peak_memory_gib=peak_memory_gib(),
            alignment=[fallback, *notes] if fallback else notes,
            classes=len(labels) if context.task == "segmentation" else 1,
        )
        return Prediction(
            prediction.array, target.affine, context.task, prediction.raw, labels, prediction.std,
            target.path, summary, label_names=dict(context.label_names),
        )  # fmt: skip

    # -- helpers ------------------------------------------------------------------------------
    def automatic_alignment(self, context: Context, resample: bool = True) -> str:
        """What ``align="auto"`` means for these contexts and this model.

        Contexts used as given (``"physical"``) with ``compat="released"`` or ``resample=False``;
        otherwise registration-guided segmentation (``"deformable"``) when the task is
        segmentation and the network has a prior gate (it was trained to refine the fusion of
        registered masks: on the 2 mm evaluation kit it beats joint label fusion, see the
        README), else ``"affine"``.
        """
        if self.config.compat == "released" or not resample:
            return "physical"
        gated = self.model.config.prior_gate
        return "deformable" if gated and context.task == "segmentation" else "affine"

    def _predict_guided(
        self,
        target: Volume,
        context: Context,
        labels: tuple[int, ...],
        *,
        start: float,
        clip_percentiles: tuple[float, float] | None,
        ensemble: int,
        contexts_per_draw: int | None,
        seed: int,
        calibrate: bool,
        engine: str,
        cache: RegistrationCache | None,
    ) -> Prediction:
        """Registration-guided segmentation (``align="deformable"``); draws average ``raw``."""
        contexts = [
            GuidedContext(
                pair.image,
                np.stack([(pair.output.array == lab) for lab in labels]).astype(np.float32),
            )
            for pair in context
        ]
        if contexts_per_draw is None or contexts_per_draw >= len(context):
            subsets = [np.arange(len(context))]  # every draw would be this call (no flips here)
        else:
            draws = ensemble_draws(len(context), ensemble, contexts_per_draw, seed)
            subsets = [subset for subset, _ in draws]
        results = [
            guided_segmentation(
                self.model,
                target,
                [contexts[i] for i in subset],
                config=self.config,
                engine=engine,
                cache=cache,
                stack=calibrate,
                clip_percentiles=clip_percentiles,
                device=self.device,
            )
            for subset in subsets
        ]
        stack = np.stack([r.raw for r in results])
        raw = stack.mean(axis=0)
        std = stack.std(axis=0) if len(results) > 1 else None
        first = results[0]
        summary = {
            "levels": 1,
            "windows": [],
            "skipped": [],
            "contexts": len(context),
            "draws": len(results),
            "calibration": None,
            "guided": True,
            "stacking": first.stacking.to_dict() if first.stacking is not None else None,
            "stacking_description": first.stacking.describe() if first.stacking else None,
            "seconds": time.perf_counter() - start,
            "peak_memory_gib": peak_memory_gib(),
            "alignment": first.notes,
            "classes": len(labels),
        }
        array = labels_from_raw(raw, labels)
        return Prediction(
            array, target.affine, context.task, raw, labels, std, target.path, summary,
            label_names=dict(context.label_names),
        )  # fmt: skip

    @staticmethod
    def _aligned_pairs(
        target: Volume,
        context: Context,
        align: str,
        resample: bool,
        notes: list[str],
        engine: str = "ants",
        cache: RegistrationCache | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each context pair on the target grid, one at a time (its note appended to ``notes``)."""
        for pair in context:
            if not resample:
                for vol in (pair.image, pair.output):
                    check_same_grid(
                        vol.shape, vol.affine, target.shape, target.affine, vol.name, target.name
                    )
            extra = {"engine": engine, "cache": cache} if align == "deformable" else {}
            image, output, note = align_pair(pair, target, mode=align, **extra)
            notes.append(note)
            yield image, output

    on_level = None  # optional callback (level, num_levels), set by the CLI for progress

    def _on_level(self, level: int, num_levels: int) -> None:
        if self.on_level is not None:
            self.on_level(level, num_levels)
