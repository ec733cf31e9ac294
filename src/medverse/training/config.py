"""Training configuration: :class:`TrainConfig` and its :class:`DataSource` entries.

Both are frozen dataclasses that check themselves in ``__post_init__`` and round-trip through
JSON and YAML (``to_dict``/``from_dict``, :meth:`TrainConfig.from_file`, :meth:`TrainConfig.save`).
Unknown keys are refused with the list of valid ones (and a guess at the misspelt one).

Example (YAML)::

    model: medverse-small          # a registered name, or a ModelConfig mapping
    data:
      - kind: synthetic            # needs no files
        num_subjects: 24
        shape: [96, 96, 96]
      - kind: nnunet
        path: /data/Dataset001_BrainMR
        weight: 2.0
    steps: 2000
    batch_size: 2
    num_contexts: [1, 4]
    out_dir: runs/small
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medverse.errors import InputError
from medverse.files import atomic_write_text
from medverse.inference.pyramid import LEVEL_RULES
from medverse.model.config import ModelConfig
from medverse.types import TASK_FAMILIES
from medverse.validation import check_option

__all__ = [
    "AMP_MODES",
    "AR_SOURCES",
    "DATA_KINDS",
    "DEVICES",
    "SCHEDULES",
    "DataSource",
    "TrainConfig",
]

DATA_KINDS = ("synthetic", "nnunet", "mni")
SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "off")
AR_SOURCES = ("degraded", "self", "mixed")
DEVICES = ("auto", "cpu", "cuda")
GUIDED_CONTEXTS = ("simulated", "registered")


def _lr_scales(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise InputError(f"lr_scales must map parameter-name prefixes to numbers, got {value!r}")
    out = {}
    for prefix, scale in value.items():
        if not isinstance(prefix, str) or not prefix:
            raise InputError(f"lr_scales: a prefix must be a non-empty string, got {prefix!r}")
        _number(scale, f"lr_scales[{prefix!r}]", low=0.0, open_low=True)
        out[prefix] = float(scale)
    return out


def _check_keys(data: Mapping[str, Any], cls: type, where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        hints = []
        for key in unknown:
            guess = difflib.get_close_matches(key, names, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {guess[0]!r}?)" if guess else ""))
        raise InputError(f"{where}: unknown keys {', '.join(hints)}; valid keys: {names}")


def _positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _number(value: Any, name: str, *, low: float, high: float = math.inf, open_low=False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if (value <= low if open_low else value < low) or value > high:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise InputError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (JSON/YAML-ready)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _parse_error(err: Exception) -> str:
    """A YAML/JSON parser error on one line: where (line, column) and what.

    PyYAML's own text spans several lines (a context, a caret drawing, the problem); the CLI
    prints one ``error:`` line.
    """
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(err).split())


@dataclass(frozen=True)
class DataSource:
    """One training data source.

    Args:
        kind: ``"synthetic"`` (generated in memory by :mod:`medverse.data.synthesis`; no files),
            ``"nnunet"`` (an nnU-Net raw folder read by
            :class:`~medverse.data.datasets.NnUNetDataset`) or ``"mni"`` (real-anatomy subjects
            made in memory from the packaged MNI template and AAL3 by
            :func:`~medverse.data.mni.make_mni_cases`: two datasets, tissue classes with skull
            stripping, and AAL3 regions; never the evaluation kit's subjects).
        path: the nnU-Net folder (``kind="nnunet"`` only); relative paths are resolved from the
            config file's folder by :meth:`TrainConfig.from_file`.
        weight: sampling weight among sources (episodes draw a source first).
        name: dataset name (default: ``dataset.json``'s name, or ``synthetic{seed}_{k}``).
        num_val_cases: cases held out for validation episodes (nnU-Net: the last ones in
            sorted order; synthetic: extra subjects), never used for training.
        num_subjects: synthetic: training subjects per template; mni: training subjects.
        num_templates: synthetic: independent anatomies and intensity tables (one dataset each),
            so the model must read the task from the contexts rather than memorise one anatomy.
        shape: synthetic: volume shape; mni: grid shape at the finest voxel size
            (``voxel_mm[0]``), fewer voxels over the same field of view at coarser sizes.
        num_classes: synthetic: foreground labels.
        num_modalities: synthetic: images per subject (>= 2 enables transformation tasks).
        seed: synthetic: generator seed (template ``k`` uses ``seed + k``); mni: subject seed.
        deformation: synthetic: each subject is warped by its own smooth elastic field (4 control
            points per axis, largest displacement this fraction of the smallest axis), so
            subjects are not voxel-aligned like a registered atlas and the mean of the context
            masks is an honest baseline rather than nearly the answer. 0 disables it.
        labels: nnU-Net: label names or ids segmentation tasks may use (default all).
        brain_mask_from_labels: ``label > 0`` is a brain mask (enables skull-stripping tasks).
        spacing: nnU-Net: resample to this voxel size in mm (default: native spacing).
        cache_dir: nnU-Net: folder for the preprocessed ``.npz`` cache (default: no cache).
        voxel_mm: mni: inclusive range of the isotropic voxel size in mm, drawn per subject.
        tissue_threshold: mni: the tissue labels' convention
            (:func:`~medverse.data.mni.make_mni_cases`): 0 = most probable class in the brain,
            ``t > 0`` = only where that class's probability is ``>= t``. With ``t > 0`` the
            tissue labels no longer cover the brain, so they give no skull-stripping tasks.
    """

    kind: str = "synthetic"
    path: str | None = None
    weight: float = 1.0
    name: str | None = None
    num_val_cases: int = 2
    num_subjects: int = 16
    num_templates: int = 1
    shape: tuple[int, int, int] = (48, 48, 48)
    num_classes: int = 6
    num_modalities: int = 2
    seed: int = 0
    deformation: float = 0.1
    labels: tuple[str | int, ...] | None = None
    brain_mask_from_labels: bool = False
    spacing: tuple[float, float, float] | None = None
    cache_dir: str | None = None
    voxel_mm: tuple[float, float] = (2.0, 2.0)
    tissue_threshold: float = 0.0

    def __post_init__(self) -> None:
        where = f"data source {self.name or self.path or self.kind!r}"
        check_option(self.kind, DATA_KINDS, f"{where}: kind")
        if self.kind == "nnunet" and not self.path:
            raise InputError(f"{where}: kind 'nnunet' needs path: the dataset folder")
        if self.kind in ("synthetic", "mni") and self.path:
            raise InputError(f"{where}: kind {self.kind!r} takes no path (it reads no files)")
        voxel = tuple(self.voxel_mm)
        if (
            len(voxel) != 2
            or not all(isinstance(v, int | float) and math.isfinite(v) for v in voxel)
            or not 0 < voxel[0] <= voxel[1]
        ):
            raise InputError(
                f"{where}: voxel_mm must be [low, high] with 0 < low <= high, got {self.voxel_mm!r}"
            )
        object.__setattr__(self, "voxel_mm", (float(voxel[0]), float(voxel[1])))
        _number(self.weight, f"{where}: weight", low=0.0, open_low=True)
        _positive_int(self.num_val_cases, f"{where}: num_val_cases", minimum=0)
        _positive_int(self.num_subjects, f"{where}: num_subjects", minimum=2)
        _positive_int(self.num_templates, f"{where}: num_templates")
        _positive_int(self.num_classes, f"{where}: num_classes")
        _positive_int(self.num_modalities, f"{where}: num_modalities")
        _number(self.deformation, f"{where}: deformation", low=0.0, high=0.5)
        _number(self.tissue_threshold, f"{where}: tissue_threshold", low=0.0, high=0.99)
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 8 for n in shape
        ):
            raise InputError(f"{where}: shape must be three integers >= 8, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        if self.spacing is not None:
            spacing = tuple(float(s) for s in self.spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise InputError(
                    f"{where}: spacing must be three positive numbers, got {self.spacing!r}"
                )
            object.__setattr__(self, "spacing", spacing)
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", str(self.cache_dir))

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "data source") -> DataSource:
        if not isinstance(data, Mapping):
            raise InputError(f"{where} must be a mapping, got {type(data).__name__}")
        _check_keys(data, cls, where)
        return cls(**dict(data))


def _enhancements(value: Any) -> tuple[str, ...] | dict[str, dict[str, Any]]:
    """Names, or name -> parameter ranges; checked by building the operations once."""
    from medverse.data.synthesis import enhancement_ops

    enhancement_ops(value)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Mapping):
        return {str(name): dict(params or {}) for name, params in value.items()}
    return tuple(str(e) for e in value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; validated on construction.

    Model and data:
        model: a registered name (``"medverse-small"``) or a :class:`ModelConfig` (a mapping in
            YAML/JSON).
        init_weights: start from these weights (path readable by ``load_model``) instead of a
            random initialisation.
        data: the sources (:class:`DataSource`); default one synthetic source.

    Episodes (METHOD.md §4):
        batch_size: episodes per optimiser step, over all processes (the global batch; each of
            ``W`` ranks takes ``batch_size / W``). On CPU use >= 2: PyTorch runs batch-1 3-D
            convolutions with few channels on a slow path.
        num_contexts: ``L``, an int or an inclusive ``[low, high]`` drawn per step (paper: 3,
            then 1-8).
        context_batch: contexts per mini-batch inside the network (memory knob; gradients then
            flow through the last mini-batch only, METHOD.md §2.2); None = all at once.
        task_weights: family -> weight among segmentation/transformation/enhancement.
        max_classes: segmentation tasks merge 1..max_classes labels.
        enhancements: the synthesised degradations (default all five, default ranges): a list of
            names, or name -> parameter ranges of its ``Random*`` class, e.g.
            ``{gaussian_noise: {std: [0.01, 0.1]}, bias_field: {coefficients: [0.02, 0.2]}}``
            (:func:`medverse.data.synthesis.enhancement_ops`).
        augment: spatial and intensity augmentation.
        foreground_crop_prob: fine-level windows are centred on the target's foreground with this
            probability.

    Coarse to fine (METHOD.md §3, :mod:`medverse.training.coarse_to_fine`):
        level1_prob: probability that a step is a level-1 pass (whole volumes at the coarsest
            level, no AR context); otherwise a fine-level window with an AR pair. Volumes that fit
            one window only have level 1.
        ar_source: the coarse output of the AR pair: ``"degraded"`` ground truth (default),
            ``"self"`` (the model's own coarse prediction) or ``"mixed"``.
        ar_self_prob: in ``"mixed"`` mode, probability of ``"self"``.
        level_rule: level plan, as in inference (``"medverse"`` or ``"released"``).
        guided_prob: probability that a step trains the registration-guided call
            (``--align deformable``): segmentation episodes whose contexts are registered to the
            target (a residual deformation of ``residual_voxels`` voxels), one window of the
            episode's own grid, AR pair = (target, mean context mask). Needs a network with
            ``prior_gate`` to learn to start from the prior; the other steps are as before.
        residual_voxels: ``[low, high]`` largest residual displacement of a registered context,
            in voxels.
        guided_contexts: where a guided step's contexts come from: ``"simulated"`` (default:
            the target itself under a residual deformation of ``residual_voxels``) or
            ``"registered"``: other subjects of the same dataset, registered onto the target
            with the inference's own registration (ANTs affine + SyN, on each case's first
            modality; images and masks warped with it, masks linearly as soft maps). Real
            inter-subject contexts: other anatomy and other contrast, as a user's contexts.
        registration_cache: the on-disk cache of those registrations (``None``: the per-user
            default of :func:`medverse.registration.default_cache_dir`); the subjects are
            deterministic, so a resumed or repeated run registers nothing twice.

    Optimisation:
        steps: total optimiser steps (also the LR schedule's length).
        lr, weight_decay, betas: AdamW.
        lr_scales: parameter-name prefix -> LR multiplier (e.g.
            ``{target_decoder.output_block.gate: 50}``: a freshly added, zero-initialised input
            skip has to move by ~1 while Adam moves each weight by ~lr per step). Every prefix
            must name at least one parameter.
        trainable: parameter-name prefixes to train; all others are frozen (no gradient, no
            update; a step then costs little more than a forward pass when only late layers
            train). None trains everything.
        schedule: ``"cosine"`` (linear warm-up then cosine to ``min_lr_ratio * lr``) or
            ``"constant"`` (warm-up then flat).
        warmup_steps, min_lr_ratio: see ``schedule``.
        grad_clip: clip the global gradient norm (the predecessor used 0.25; METHOD.md §4);
            0 disables.
        loss_beta, gradient_weight, foreground_weight, dice_weight: loss settings
            (:mod:`medverse.training.losses`).
        amp: ``"auto"`` (bf16 autocast on CUDA, off on CPU), ``"bf16"`` or ``"off"``.

    Bookkeeping:
        checkpoint_every: write a resumable checkpoint every N steps (and at the end).
        keep_checkpoints: how many step checkpoints to keep (``last.pt`` always stays).
        val_every: validate every N steps (0 = only at the end; validation needs held-out
            cases, ``num_val_cases``).
        num_val_episodes: held-out episodes per validation (fixed, the same every time).
        val_num_contexts: contexts of validation episodes.
        out_dir: run folder (checkpoints, ``log.csv``, TensorBoard, exported ``model/``).
        seed: the one seed (model init, episodes, crops).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        num_threads: CPU threads per process (None: PyTorch's default).
        log_every: TensorBoard scalars every N steps (the CSV gets every step).
    """

    model: str | ModelConfig = "medverse-small"
    init_weights: str | None = None
    data: tuple[DataSource, ...] = (DataSource(),)
    batch_size: int = 2
    num_contexts: int | tuple[int, int] = (1, 8)
    context_batch: int | None = None
    task_weights: dict[str, float] = field(
        default_factory=lambda: {"segmentation": 0.5, "transformation": 0.25, "enhancement": 0.25}
    )
    max_classes: int = 5
    enhancements: tuple[str, ...] | dict[str, dict[str, Any]] | None = None
    augment: bool = True
    foreground_crop_prob: float = 0.8
    level1_prob: float = 0.5
    ar_source: str = "degraded"
    ar_self_prob: float = 0.5
    level_rule: str = "medverse"
    guided_prob: float = 0.0
    residual_voxels: tuple[float, float] = (0.3, 3.0)
    guided_contexts: str = "simulated"
    registration_cache: str | None = None
    steps: int = 1000
    lr: float = 2e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    lr_scales: Mapping[str, float] | None = None
    trainable: tuple[str, ...] | None = None
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 0.25
    loss_beta: float = 0.1
    gradient_weight: float = 1.0
    foreground_weight: float | None = 0.5
    dice_weight: float = 0.0
    amp: str = "auto"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    val_every: int = 0
    num_val_episodes: int = 8
    val_num_contexts: int = 3
    out_dir: str = "runs/medverse"
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    log_every: int = 1

    def __post_init__(self) -> None:
        # model
        model = self.model
        if isinstance(model, Mapping):
            model = ModelConfig.from_dict(dict(model))
        elif isinstance(model, str):
            from medverse.checkpoint.model_registry import get_spec, list_models

            try:
                get_spec(model)
            except ValueError:
                raise InputError(
                    f"model {model!r} is not a registered name ({', '.join(list_models())}); "
                    "give a name or a mapping of ModelConfig fields"
                ) from None
        elif not isinstance(model, ModelConfig):
            raise InputError(
                f"model must be a registered name or a ModelConfig mapping, got {type(model).__name__}"
            )
        object.__setattr__(self, "model", model)
        if self.init_weights is not None:
            object.__setattr__(self, "init_weights", str(self.init_weights))
        # data
        data = self.data
        if isinstance(data, DataSource | Mapping):
            data = [data]
        if not isinstance(data, Sequence) or not data:
            raise InputError("data must list at least one source (e.g. [{kind: synthetic}])")
        sources = tuple(
            s if isinstance(s, DataSource) else DataSource.from_dict(s, where=f"data[{i}]")
            for i, s in enumerate(data)
        )
        names = [s.name for s in sources if s.name]
        if len(set(names)) != len(names):
            raise InputError(f"data source names must be unique, got {names}")
        object.__setattr__(self, "data", sources)
        # episodes
        _positive_int(self.batch_size, "batch_size")
        contexts = self.num_contexts
        if isinstance(contexts, int) and not isinstance(contexts, bool):
            contexts = (contexts, contexts)
        if (
            not isinstance(contexts, Sequence)
            or len(contexts) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in contexts)
            or not 1 <= contexts[0] <= contexts[1]
        ):
            raise InputError(
                f"num_contexts must be an int >= 1 or [low, high] with 1 <= low <= high, got {self.num_contexts!r}"
            )
        object.__setattr__(self, "num_contexts", (int(contexts[0]), int(contexts[1])))
        if self.context_batch is not None:
            _positive_int(self.context_batch, "context_batch")
        weights = dict(self.task_weights)
        unknown = sorted(set(weights) - set(TASK_FAMILIES))
        if unknown:
            raise InputError(
                f"task_weights: unknown families {unknown}; choose from {list(TASK_FAMILIES)}"
            )
        for family, weight in weights.items():
            _number(weight, f"task_weights[{family!r}]", low=0.0)
        if sum(weights.values()) <= 0:
            raise InputError(f"task_weights must have a positive sum, got {weights}")
        object.__setattr__(
            self, "task_weights", {f: float(weights.get(f, 0.0)) for f in TASK_FAMILIES}
        )
        _positive_int(self.max_classes, "max_classes")
        if self.enhancements is not None:
            object.__setattr__(self, "enhancements", _enhancements(self.enhancements))
        _number(self.foreground_crop_prob, "foreground_crop_prob", low=0.0, high=1.0)
        # coarse to fine
        _number(self.level1_prob, "level1_prob", low=0.0, high=1.0)
        check_option(self.ar_source, AR_SOURCES, "ar_source")
        _number(self.ar_self_prob, "ar_self_prob", low=0.0, high=1.0)
        check_option(self.level_rule, LEVEL_RULES, "level_rule")
        _number(self.guided_prob, "guided_prob", low=0.0, high=1.0)
        residual = tuple(self.residual_voxels)
        if len(residual) != 2 or not all(isinstance(v, int | float) for v in residual):
            raise InputError(f"residual_voxels must be [low, high], got {self.residual_voxels!r}")
        if not 0 <= residual[0] <= residual[1]:
            raise InputError(f"residual_voxels must be 0 <= low <= high, got {residual}")
        object.__setattr__(self, "residual_voxels", (float(residual[0]), float(residual[1])))
        check_option(self.guided_contexts, GUIDED_CONTEXTS, "guided_contexts")
        # optimisation
        _positive_int(self.steps, "steps")
        _number(self.lr, "lr", low=0.0, open_low=True)
        _number(self.weight_decay, "weight_decay", low=0.0)
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
            raise InputError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if self.lr_scales is not None:
            object.__setattr__(self, "lr_scales", _lr_scales(self.lr_scales))
        if self.trainable is not None:
            names = self.trainable
            if isinstance(names, str) or not isinstance(names, Sequence) or not names:
                raise InputError(f"trainable must list parameter-name prefixes, got {names!r}")
            if not all(isinstance(n, str) and n for n in names):
                raise InputError(f"trainable: prefixes must be non-empty strings, got {names!r}")
            object.__setattr__(self, "trainable", tuple(names))
        check_option(self.schedule, SCHEDULES, "schedule")
        _positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        _number(self.min_lr_ratio, "min_lr_ratio", low=0.0, high=1.0)
        _number(self.grad_clip, "grad_clip", low=0.0)
        _number(self.loss_beta, "loss_beta", low=0.0, open_low=True)
        _number(self.gradient_weight, "gradient_weight", low=0.0)
        _number(self.dice_weight, "dice_weight", low=0.0)
        if self.foreground_weight is not None:
            _number(self.foreground_weight, "foreground_weight", low=0.0, high=1.0)
        check_option(self.amp, AMP_MODES, "amp")
        # bookkeeping
        _positive_int(self.checkpoint_every, "checkpoint_every")
        _positive_int(self.keep_checkpoints, "keep_checkpoints")
        _positive_int(self.val_every, "val_every", minimum=0)
        _positive_int(self.num_val_episodes, "num_val_episodes", minimum=0)
        _positive_int(self.val_num_contexts, "val_num_contexts")
        if not self.out_dir:
            raise InputError("out_dir must be a folder path")
        object.__setattr__(self, "out_dir", str(self.out_dir))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed must be an integer >= 0, got {self.seed!r}")
        check_option(self.device, DEVICES, "device")
        if self.num_threads is not None:
            _positive_int(self.num_threads, "num_threads")
        _positive_int(self.log_every, "log_every")

    # -- derived -------------------------------------------------------------------------------

    @property
    def model_config(self) -> ModelConfig:
        """The architecture (a registered name resolved through the registry)."""
        if isinstance(self.model, ModelConfig):
            return self.model
        from medverse.checkpoint.model_registry import get_spec

        return get_spec(self.model).config

    @property
    def window(self) -> int:
        return self.model_config.window

    # -- round trip ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ModelConfig):
                value = value.to_dict()
            elif f.name == "data":
                value = [s.to_dict() for s in value]
            out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "training config") -> TrainConfig:
        if not isinstance(data, Mapping):
            raise InputError(f"{where} must be a mapping of fields, got {type(data).__name__}")
        _check_keys(data, cls, where)
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> TrainConfig:
        import yaml

        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a ``.yaml``/``.yml`` or ``.json`` file.

        Relative ``path``, ``cache_dir`` and ``init_weights`` entries are resolved against the
        file's folder; ``out_dir`` stays relative to the working directory.

        Raises:
            InputError: missing or unreadable file, bad syntax, or an invalid field; the message
                names the file.
        """
        path = Path(path)
        if path.is_dir():
            raise InputError(f"training config '{path}' is a folder, expected a file")
        if not path.is_file():
            raise InputError(f"training config '{path}' not found")
        try:
            text = path.read_text()
        except OSError as err:
            raise InputError(f"training config '{path}': cannot read ({err.strerror})") from None
        try:
            if path.suffix.lower() == ".json":
                raw = json.loads(text)
            else:
                import yaml

                raw = yaml.safe_load(text)
        except Exception as err:  # yaml.YAMLError or json.JSONDecodeError
            raise InputError(
                f"training config '{path}': not valid {path.suffix[1:].upper() or 'YAML'} "
                f"({_parse_error(err)})"
            ) from None
        if raw is None:  # before: an empty file started a default run (hours, into runs/)
            raise InputError(
                f"training config '{path}' is empty; give at least the fields that differ from "
                "the defaults (see configs/)"
            )
        if not isinstance(raw, dict):
            raise InputError(f"training config '{path}' must hold a mapping of fields")
        base = path.parent

        def resolve(value: str | None) -> str | None:
            if value is None or os.path.isabs(value):
                return value
            return str((base / value).resolve())

        if isinstance(raw.get("data"), list):
            raw["data"] = [
                {**s, **{k: resolve(s[k]) for k in ("path", "cache_dir") if s.get(k)}}
                if isinstance(s, dict)
                else s
                for s in raw["data"]
            ]
        if raw.get("init_weights"):
            raw["init_weights"] = resolve(raw["init_weights"])
        try:
            return cls.from_dict(raw, where=f"training config '{path}'")
        except InputError as err:
            message = str(err)
            if str(path) not in message:
                message = f"training config '{path}': {message}"
            raise InputError(message) from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write YAML (``.yaml``/``.yml``) or JSON, atomically."""
        path = Path(path)
        text = self.to_json() if path.suffix.lower() == ".json" else self.to_yaml()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        return path
