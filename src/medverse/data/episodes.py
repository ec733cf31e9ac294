"""Training episodes: the task first, then the subjects (METHOD.md §4).

An episode is one in-context task on ``L + 1`` subjects of one dataset: a target and ``L``
context pairs, every volume on one grid. :class:`EpisodeSampler` draws, in this order:

1. a dataset (by :class:`~medverse.data.datasets.DatasetMix` weight);
2. a task family among those the dataset supports (by ``task_weights``) and the task itself:

   * ``segmentation``: 1-5 label classes merged into one binary mask, the same subset for every
     member; the input is one modality, the same for every member;
   * ``transformation:i->j``: modality ``i`` to modality ``j`` of the same subject, or
     ``transformation:skull_strip``: image to ``image * (label > 0)`` for datasets built with
     ``brain_mask_from_labels=True``;
   * ``enhancement:<name>``: a synthesised degradation (:mod:`medverse.data.synthesis`); the
     pairs are (degraded, clean), the target is degraded and its reference clean. The strength
     (noise level, down-sampling axis and factor, ...) is drawn once per episode, the realisation
     (noise seed, inpainting mask, bias coefficients) per member;

3. the number of contexts ``L`` and ``L + 1`` distinct subjects; the first is the target;
4. the window (whole volume resized, or one crop position shared by all members, centred on the
   target's foreground with probability ``foreground_crop_prob``), one spatial augmentation
   shared by every volume, one intensity augmentation per member's input image;
5. the outputs, then per-volume min-max normalisation to ``[0, 1]`` (masks stay ``{0, 1}``).
   Outputs derived from the input (skull-stripped image, clean image of an enhancement pair)
   are derived from the intensity-augmented input, so the pair stays consistent; the other
   modality of a ``transformation:i->j`` pair is not intensity-augmented.

Members on different grids are resized to the target's shape first (inference resamples
contexts to the target grid too, METHOD.md §3). Every random choice comes from one generator
seeded by ``(seed, index)``, so ``sampler.sample(17)`` is the same episode every time; the
drawn parameters are recorded in :attr:`Episode.params` (JSON-ready). Each member can serve as
the target in turn: :func:`rotate` makes member ``k`` the target without resampling anything.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medverse.errors import InputError
from medverse.intensity import minmax_scale
from medverse.types import TASK_FAMILIES
from medverse.validation import check_option

from .augment import (
    RandomIntensityAugmentation,
    RandomSpatialAugmentation,
    SpatialAugmentation,
    crop_or_resize_to_window,
    window_start,
)
from .cases import Case
from .datasets import DatasetMix
from .degradations import _RandomOp, enhancement_ops

__all__ = [
    "DEFAULT_TASK_WEIGHTS",
    "Episode",
    "EpisodeDataset",
    "EpisodeSampler",
    "collate_episodes",
    "rotate",
]

logger = logging.getLogger(__name__)

#: Segmentation is the main benchmark of the paper (METHOD.md §5), so it gets half the episodes.
DEFAULT_TASK_WEIGHTS = {"segmentation": 0.5, "transformation": 0.25, "enhancement": 0.25}


@dataclass(frozen=True, eq=False)
class Episode:
    """One in-context task: a target and ``L`` context pairs on one grid.

    Attributes:
        target: ``(1, X, Y, Z)`` float32 in ``[0, 1]``, the network's target input.
        target_reference: ``(1, X, Y, Z)`` the ground-truth output for the target.
        context_in: ``(L, 1, X, Y, Z)`` context inputs.
        context_out: ``(L, 1, X, Y, Z)`` context outputs (masks are exactly ``{0, 1}``).
        task: e.g. ``"segmentation"``, ``"transformation:0->1"``, ``"enhancement:gaussian_noise"``.
        family: ``"segmentation"``, ``"transformation"`` or ``"enhancement"``.
        seed: the episode seed; ``sampler.replay(seed)`` rebuilds it.
        index: the index it was sampled with (``None`` when drawn from a generator).
        params: every drawn parameter (dataset, cases, classes, window, augmentations, ...).
    """

    target: np.ndarray
    target_reference: np.ndarray
    context_in: np.ndarray
    context_out: np.ndarray
    task: str
    family: str
    seed: int
    index: int | None = None
    params: dict = field(default_factory=dict)

    @property
    def num_contexts(self) -> int:
        """``L``."""
        return int(self.context_in.shape[0])

    @property
    def is_mask_task(self) -> bool:
        """Whether outputs are binary masks (segmentation)."""
        return self.family == "segmentation"

    def __repr__(self) -> str:
        return (
            f"Episode(task={self.task!r}, dataset={self.params.get('dataset')!r}, "
            f"contexts={self.num_contexts}, shape={tuple(self.target.shape[1:])}, seed={self.seed})"
        )


def rotate(episode: Episode, k: int) -> Episode:
    """The same episode with member ``k`` as the target (``0`` = unchanged target).

    Members are numbered target first, then contexts in order; the old target becomes a context
    at the position the new one left, so ``L + 1`` calls with ``k = 0..L`` use each member as the
    target once.

    Example:
        >>> for k in range(episode.num_contexts + 1):  # doctest: +SKIP
        ...     loss += step(rotate(episode, k))
    """
    if not 0 <= k <= episode.num_contexts:
        raise InputError(f"k must be in [0, {episode.num_contexts}], got {k}")
    if k == 0:
        return episode
    inputs = [episode.target, *episode.context_in]
    outputs = [episode.target_reference, *episode.context_out]
    order = [k] + [i for i in range(len(inputs)) if i != k]
    params = dict(episode.params)
    for key in _PER_MEMBER:
        if isinstance(params.get(key), list) and len(params[key]) == len(order):
            params[key] = [params[key][i] for i in order]
    params["rotation"] = int(k)
    return dataclasses.replace(
        episode,
        target=inputs[k],
        target_reference=outputs[k],
        context_in=np.stack([inputs[i] for i in order[1:]]),
        context_out=np.stack([outputs[i] for i in order[1:]]),
        params=params,
    )


#: ``Episode.params`` entries holding one item per member (target first); :func:`rotate` reorders them.
_PER_MEMBER = ("cases", "case_indices", "intensity", "degradations", "resized_to_target_grid")


def _episode_seed(seed: int, index: int) -> int:
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)  # 63 bits, fits an int64


@dataclass
class _Member:
    """One subject's volumes while an episode is being built."""

    input: np.ndarray
    second: np.ndarray | None = None  # transformation output image
    mask: np.ndarray | None = None  # segmentation mask or brain mask

    def volumes(self) -> list[tuple[str, np.ndarray, bool]]:
        items = [("input", self.input, False)]
        if self.second is not None:
            items.append(("second", self.second, False))
        if self.mask is not None:
            items.append(("mask", self.mask, True))
        return items


class EpisodeSampler:
    """Draws replayable training episodes from one or several datasets.

    Args:
        datasets: a dataset, a list of datasets or a :class:`~medverse.data.datasets.DatasetMix`.
        num_contexts: ``L``, an int or an inclusive range ``(low, high)`` drawn uniformly per
            episode. Default ``(1, 8)``: the predecessor trained with 3, then random 1-8 (METHOD.md
            §4); capped at the number of usable subjects minus one.
        window: spatial size of the returned volumes (int or three); ``None`` keeps the target's
            full grid (for a training loop that runs the coarse-to-fine levels itself).
        window_mode: ``"crop"`` (fine-level pass), ``"resize"`` (level-1 pass) or ``"mixed"``
            (``"resize"`` with probability ``resize_prob``).
        resize_prob: see ``window_mode``.
        task_weights: family -> weight (missing families get 0); default
            :data:`DEFAULT_TASK_WEIGHTS`. Renormalised over the families a dataset supports.
        enhancements: enhancement name -> ``Random*`` op; or what
            :func:`~medverse.data.synthesis.enhancement_ops` takes (a list of names, or name ->
            parameter ranges); default all five with their default ranges.
        max_classes: segmentation tasks merge ``1..max_classes`` classes (paper: 1-5).
        foreground_crop_prob: in crop mode, probability of centring the window on a random
            foreground voxel of the target (mask, or intensity above 10 % of its range) so most
            crops contain the structure.
        augment: apply ``spatial`` and ``intensity`` augmentation.
        spatial: spatial augmentation; default :class:`RandomSpatialAugmentation()`.
        intensity: intensity augmentation; default :class:`RandomIntensityAugmentation()`.
        aligned_prob: probability that a segmentation episode's contexts are *registered*
            contexts, as ``--align deformable`` delivers them: each context is the target's own
            image and mask warped by a small random residual deformation (what a deformable
            registration leaves; largest control-point displacement ``U(*residual_voxels)``
            voxels, 4-8 control points per axis), with its own blur, noise and intensity
            augmentation; masks are warped linearly, so their edges are soft (as the inference's
            soft one-hot warping). ``params["aligned"]`` records it.
        residual_voxels: the range of the residual deformation, in voxels of the episode grid.
        registrar: real registered contexts instead of the simulated residual: a callable
            ``registrar(target_case, context_case, arrays)`` that maps ``(N, X, Y, Z)`` arrays
            on the context case's grid onto the target case's grid (e.g. through a deformable
            registration of the context onto the target; :mod:`medverse.training.registered`).
            An aligned episode's contexts are then the other subjects warped by it (image and
            merged mask in one warp, the mask linearly: soft edges), with no shared spatial
            augmentation (the registration already decides the geometry);
            ``params["registered"]`` records it.
        seed: sampler seed; episode ``i`` is seeded by ``(seed, i)``.

    Raises:
        InputError: a dataset has fewer than two subjects, or no dataset supports a family with
            positive weight, or an option is invalid.

    Example:
        >>> sampler = EpisodeSampler(dataset, num_contexts=3, window=64, seed=0)  # doctest: +SKIP
        >>> episode = sampler.sample(17)  # doctest: +SKIP
        >>> episode.target.shape, episode.context_in.shape  # doctest: +SKIP
        ((1, 64, 64, 64), (3, 1, 64, 64, 64))
    """

    def __init__(
        self,
        datasets,
        *,
        num_contexts: int | Sequence[int] = (1, 8),
        window: int | Sequence[int] | None = 128,
        window_mode: str = "crop",
        resize_prob: float = 0.5,
        task_weights: Mapping[str, float] | None = None,
        enhancements: Mapping[str, _RandomOp] | Sequence[str] | None = None,
        max_classes: int = 5,
        foreground_crop_prob: float = 0.8,
        augment: bool = True,
        spatial: RandomSpatialAugmentation | None = None,
        intensity: RandomIntensityAugmentation | None = None,
        aligned_prob: float = 0.0,
        residual_voxels: tuple[float, float] = (0.3, 3.0),
        registrar: Callable[[Case, Case, np.ndarray], np.ndarray] | None = None,
        seed: int = 0,
    ):
        if isinstance(datasets, DatasetMix):
            self.mix = datasets
        elif isinstance(datasets, Sequence):
            self.mix = DatasetMix(list(datasets))
        else:
            self.mix = DatasetMix([datasets])
        self.num_contexts = _parse_contexts(num_contexts)
        self.window = None if window is None else _window3(window)
        if window_mode not in ("crop", "resize", "mixed"):
            raise InputError(
                f"window_mode must be 'crop', 'resize' or 'mixed', got {window_mode!r}"
            )
        self.window_mode = window_mode
        self.resize_prob = float(resize_prob)
        self.task_weights = _parse_task_weights(task_weights)
        self.enhancements = _parse_enhancements(enhancements)
        if max_classes < 1:
            raise InputError(f"max_classes must be >= 1, got {max_classes}")
        self.max_classes = int(max_classes)
        self.foreground_crop_prob = float(foreground_crop_prob)
        self.spatial = (spatial or RandomSpatialAugmentation()) if augment else None
        self.intensity = (intensity or RandomIntensityAugmentation()) if augment else None
        if not 0.0 <= float(aligned_prob) <= 1.0:
            raise InputError(f"aligned_prob must be in [0, 1], got {aligned_prob}")
        low_r, high_r = (float(v) for v in residual_voxels)
        if not 0.0 <= low_r <= high_r:
            raise InputError(f"residual_voxels must be 0 <= low <= high, got {residual_voxels}")
        self.aligned_prob = float(aligned_prob)
        self.residual_voxels = (low_r, high_r)
        self.registrar = registrar
        self.seed = int(seed)
        self._tasks = [self._dataset_tasks(ds) for ds in self.mix]
        self._usable = [i for i, tasks in enumerate(self._tasks) if tasks]
        if not self._usable:
            raise InputError(
                "no dataset supports a task family with positive weight "
                f"(task_weights={self.task_weights}, datasets={[ds.name for ds in self.mix]})"
            )

    def _dataset_tasks(self, dataset) -> dict[str, list[str]]:
        """Family -> tasks this dataset supports (empty families left out)."""
        if len(dataset) < 2:
            raise InputError(
                f"dataset '{dataset.name}' has {len(dataset)} case(s); episodes need >= 2"
            )
        labeled = len(dataset.labeled_indices)
        num_channels = len(dataset.channel_names)
        tasks: dict[str, list[str]] = {}
        if dataset.label_ids and labeled >= 2:
            tasks["segmentation"] = ["segmentation"]
        transformation = [
            f"transformation:{i}->{j}"
            for i in range(num_channels)
            for j in range(num_channels)
            if i != j
        ]
        if dataset.brain_mask_from_labels and labeled >= 2:
            transformation.append("transformation:skull_strip")
        if transformation:
            tasks["transformation"] = transformation
        if self.enhancements:
            tasks["enhancement"] = [f"enhancement:{name}" for name in self.enhancements]
        return {f: t for f, t in tasks.items() if self.task_weights[f] > 0}

    def __repr__(self) -> str:
        return (
            f"EpisodeSampler({self.mix!r}, num_contexts={self.num_contexts}, window={self.window}, "
            f"window_mode={self.window_mode!r}, task_weights={self.task_weights}, seed={self.seed})"
        )

    # -- public --------------------------------------------------------------------------------

    def sample(self, index_or_rng: int | np.random.Generator) -> Episode:
        """Episode number ``index`` (replayable), or one seeded from a generator's draw."""
        if isinstance(index_or_rng, np.random.Generator):
            return self.replay(int(index_or_rng.integers(2**63 - 1)))
        index = int(index_or_rng)
        return self._build(_episode_seed(self.seed, index), index)

    def replay(self, seed: int) -> Episode:
        """Rebuild the episode with ``Episode.seed == seed`` (same sampler settings)."""
        return self._build(int(seed), None)

    # -- building ------------------------------------------------------------------------------

    def _build(self, seed: int, index: int | None) -> Episode:
        rng = np.random.default_rng(seed)
        dataset_index = self.mix.choose(rng, among=self._usable)
        dataset = self.mix[dataset_index]
        tasks = self._tasks[dataset_index]
        families = [f for f in TASK_FAMILIES if f in tasks]
        weights = np.asarray([self.task_weights[f] for f in families])
        family = families[int(rng.choice(len(families), p=weights / weights.sum()))]
        task = tasks[family][int(rng.integers(len(tasks[family])))]
        params: dict = {"dataset": dataset.name, "dataset_index": dataset_index}

        num_channels = len(dataset.channel_names)
        needs_labels = family == "segmentation" or task == "transformation:skull_strip"
        pool = list(dataset.labeled_indices) if needs_labels else list(range(len(dataset)))
        enhancement = None
        if family == "segmentation":
            count = int(rng.integers(1, min(self.max_classes, len(dataset.label_ids)) + 1))
            classes = sorted(
                int(c) for c in rng.choice(dataset.label_ids, size=count, replace=False)
            )
            params["classes"] = classes
            params["class_names"] = [dataset.label_names.get(c, str(c)) for c in classes]
            params["modality"] = int(rng.integers(num_channels))
        elif task.startswith("transformation:") and "->" in task:
            source, destination = (int(v) for v in task.split(":")[1].split("->"))
            params["modality"], params["output_modality"] = source, destination
        else:
            params["modality"] = int(rng.integers(num_channels))
        if family == "enhancement":
            name = task.split(":")[1]
            enhancement = self.enhancements[name].fix_strength(rng)
            params["enhancement"] = name

        low, high = self.num_contexts
        num_contexts = min(int(rng.integers(low, high + 1)), len(pool) - 1)
        chosen = [int(pool[i]) for i in rng.choice(len(pool), size=num_contexts + 1, replace=False)]
        cases = [dataset.load_case(i) for i in chosen]
        params.update(
            num_contexts=num_contexts,
            case_indices=chosen,
            cases=[case.name for case in cases],
        )
        members = [self._ingredients(case, task, params) for case in cases]
        registered = False
        if self.registrar is not None and family == "segmentation" and self.aligned_prob > 0:
            registered = bool(rng.random() < self.aligned_prob)
            params["registered"] = registered
        if registered:
            members = self._register_members(cases, members)
        members = self._to_common_grid(members, params)
        members = self._to_window(members, rng, params)
        if self.spatial is not None and not registered:
            members = self._augment_spatial(members, rng, params)
        aligned = registered or (
            self.registrar is None
            and family == "segmentation"
            and self.aligned_prob > 0
            and rng.random() < self.aligned_prob
        )
        params["aligned"] = bool(aligned)
        if aligned and not registered:
            members = self._registered_contexts(members, rng, params)

        inputs, outputs, intensity, degradations = [], [], [], []
        for k, member in enumerate(members):
            image = minmax_scale(member.input)
            if self.intensity is not None:
                augmentation = self.intensity.draw(rng)
                image = augmentation(image)
                intensity.append(dataclasses.asdict(augmentation))
            if family == "segmentation":
                assert member.mask is not None
                mask = member.mask.astype(np.float32)
                soft = aligned and k > 0  # registered contexts keep their soft warped edges
                source, output = image, np.clip(mask, 0, 1) if soft else (mask > 0.5)
            elif task == "transformation:skull_strip":
                assert member.mask is not None
                source, output = image, minmax_scale(image * (member.mask > 0.5))
            elif family == "transformation":
                assert member.second is not None
                source, output = image, minmax_scale(member.second)
            else:
                assert enhancement is not None
                op = enhancement.draw(rng)
                degradations.append(dataclasses.asdict(op))
                source, output = image.astype(np.float32), image
                source = op(source)
            inputs.append(minmax_scale(source)[None])
            outputs.append(
                output.astype(np.float32)[None]
                if family == "segmentation"
                else minmax_scale(output)[None]
            )
        if intensity:
            params["intensity"] = intensity
        if degradations:
            params["degradations"] = degradations
        params["target_foreground_fraction"] = (
            float(outputs[0].mean()) if family == "segmentation" else None
        )
        return Episode(
            target=inputs[0],
            target_reference=outputs[0],
            context_in=np.stack(inputs[1:]),
            context_out=np.stack(outputs[1:]),
            task=task,
            family=family,
            seed=int(seed),
            index=index,
            params=_plain(params),
        )

    @staticmethod
    def _ingredients(case: Case, task: str, params: dict) -> _Member:
        image = np.asarray(case.images[params["modality"]], dtype=np.float32)
        if task == "segmentation":
            if case.labels is None:
                raise InputError(f"case '{case.name}' has no labels")
            mask = np.isin(case.labels, params["classes"]).astype(np.float32)
            return _Member(input=image, mask=mask)
        if task == "transformation:skull_strip":
            if case.labels is None:
                raise InputError(f"case '{case.name}' has no labels")
            return _Member(input=image, mask=(case.labels > 0).astype(np.float32))
        if "output_modality" in params:
            second = np.asarray(case.images[params["output_modality"]], dtype=np.float32)
            return _Member(input=image, second=second)
        return _Member(input=image)

    @staticmethod
    def _to_common_grid(members: list[_Member], params: dict) -> list[_Member]:
        shape = members[0].input.shape
        resized = []
        for k, member in enumerate(members):
            resized.append(member.input.shape != shape)
            if member.input.shape != shape:
                members[k] = _map_volumes(
                    member,
                    lambda vols, masks: crop_or_resize_to_window(
                        vols, shape, mode="resize", is_mask=masks
                    ),
                )
        params["resized_to_target_grid"] = resized
        return members

    def _to_window(
        self, members: list[_Member], rng: np.random.Generator, params: dict
    ) -> list[_Member]:
        if self.window is None:
            params["window_mode"] = None
            return members
        mode = self.window_mode
        if mode == "mixed":
            mode = "resize" if rng.random() < self.resize_prob else "crop"
        params["window_mode"] = mode
        if mode == "resize":
            return [
                _map_volumes(
                    m,
                    lambda vols, masks: crop_or_resize_to_window(
                        vols, self.window, mode="resize", is_mask=masks
                    ),
                )
                for m in members
            ]
        target = members[0]
        shape = target.input.shape
        center = None
        if rng.random() < self.foreground_crop_prob:
            if target.mask is not None:
                foreground = target.mask > 0.5
            else:
                low, high = float(target.input.min()), float(target.input.max())
                foreground = target.input > low + 0.1 * (high - low)
            voxels = np.argwhere(foreground)
            if len(voxels):
                center = voxels[int(rng.integers(len(voxels)))]
        start = window_start(shape, self.window, rng, center=center)
        params["window_start"] = list(start)
        return [
            _map_volumes(
                m,
                lambda vols, masks: crop_or_resize_to_window(
                    vols, self.window, mode="crop", start=start
                ),
            )
            for m in members
        ]

    def _register_members(self, cases: list[Case], members: list[_Member]) -> list[_Member]:
        """Every context warped onto the target's grid by ``registrar`` (image and mask in one
        call; the mask stays soft)."""
        assert self.registrar is not None
        result = [members[0]]
        for case, member in zip(cases[1:], members[1:]):
            assert member.mask is not None
            warped = self.registrar(cases[0], case, np.stack([member.input, member.mask]))
            result.append(_Member(input=warped[0], mask=np.clip(warped[1], 0.0, 1.0)))
        return result

    def _registered_contexts(
        self, members: list[_Member], rng: np.random.Generator, params: dict
    ) -> list[_Member]:
        """Replace every context by the target warped with a residual deformation (see
        ``aligned_prob``); blur and noise make its image a different acquisition."""
        target = members[0]
        assert target.mask is not None
        shape = target.input.shape
        low, high = self.residual_voxels
        residuals = []
        result = [target]
        for _ in members[1:]:
            residual = SpatialAugmentation(
                elastic_seed=int(rng.integers(2**31 - 1)),
                elastic_num_control_points=int(rng.integers(4, 9)),
                elastic_max_displacement=float(rng.uniform(low, high)),
            )
            image, mask = residual([target.input, target.mask.astype(np.float32)])
            sigma = float(rng.uniform(0.0, 1.0))
            if sigma > 0.1:
                image = ndimage.gaussian_filter(image, sigma)
            span = float(image.max() - image.min()) or 1.0
            noise = float(rng.uniform(0.0, 0.05)) * span
            image = image + rng.normal(0.0, noise, shape).astype(np.float32)
            residuals.append(
                {
                    "max_displacement": residual.elastic_max_displacement,
                    "control_points": residual.elastic_num_control_points,
                    "blur_sigma": sigma,
                    "noise": noise / span,
                }
            )
            result.append(_Member(input=image.astype(np.float32), mask=np.clip(mask, 0, 1)))
        params["residuals"] = residuals
        return result

    def _augment_spatial(
        self, members: list[_Member], rng: np.random.Generator, params: dict
    ) -> list[_Member]:
        assert self.spatial is not None
        augmentation = self.spatial.draw(members[0].input.shape, rng)
        params["spatial"] = dataclasses.asdict(augmentation)
        flat = [
            (k, name, volume, is_mask)
            for k, m in enumerate(members)
            for name, volume, is_mask in m.volumes()
        ]
        out = augmentation([v for _, _, v, _ in flat], is_mask=[m for *_, m in flat])
        result = [dataclasses.replace(m) for m in members]
        for (k, name, _, _), volume in zip(flat, out, strict=True):
            setattr(result[k], name, volume)
        return result


def _map_volumes(member: _Member, function) -> _Member:
    items = member.volumes()
    out = function([v for _, v, _ in items], [m for *_, m in items])
    result = dataclasses.replace(member)
    for (name, _, _), volume in zip(items, out, strict=True):
        setattr(result, name, np.asarray(volume, dtype=np.float32))
    return result


# --------------------------------------------------------------------------------------------
# torch glue
# --------------------------------------------------------------------------------------------


class EpisodeDataset(torch.utils.data.Dataset):
    """``length`` episodes per epoch for a ``DataLoader``; item ``i`` is ``sampler.sample(epoch * length + i)``.

    Call :meth:`set_epoch` before each epoch for new episodes (works with workers as long as
    ``persistent_workers=False``, the default, since the dataset is sent to workers every epoch).
    Use ``collate_fn=collate_episodes``.
    """

    def __init__(self, sampler: EpisodeSampler, length: int, *, epoch: int = 0):
        if length < 1:
            raise InputError(f"length must be >= 1, got {length}")
        self.sampler = sampler
        self.length = int(length)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Episode:
        return self.sampler.sample(self.epoch * self.length + int(index))


def collate_episodes(episodes: Sequence[Episode]) -> dict:
    """Stack episodes into a batch; contexts are cut to the smallest ``L`` of the batch.

    Returns:
        ``target`` and ``target_reference`` ``(B, 1, X, Y, Z)``, ``context_in`` and
        ``context_out`` ``(B, L, 1, X, Y, Z)`` float32 tensors, and the lists ``task``,
        ``family``, ``seed``, ``params``.
    """
    if not episodes:
        raise InputError("collate_episodes needs at least one episode")
    shapes = {tuple(e.target.shape) for e in episodes}
    if len(shapes) != 1:
        raise InputError(
            f"episodes of one batch need one window shape, got {sorted(shapes)}; set window="
        )
    num_contexts = min(e.num_contexts for e in episodes)
    return {
        "target": torch.from_numpy(np.stack([e.target for e in episodes])),
        "target_reference": torch.from_numpy(np.stack([e.target_reference for e in episodes])),
        "context_in": torch.from_numpy(np.stack([e.context_in[:num_contexts] for e in episodes])),
        "context_out": torch.from_numpy(np.stack([e.context_out[:num_contexts] for e in episodes])),
        "task": [e.task for e in episodes],
        "family": [e.family for e in episodes],
        "seed": [e.seed for e in episodes],
        "params": [e.params for e in episodes],
    }


# --------------------------------------------------------------------------------------------
# option parsing
# --------------------------------------------------------------------------------------------


def _parse_contexts(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int | np.integer):
        low = high = int(value)
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise InputError(f"num_contexts must be an int or (low, high), got {value!r}")
        low, high = pair
    if not 1 <= low <= high:
        raise InputError(f"num_contexts must satisfy 1 <= low <= high, got {value!r}")
    return low, high


def _window3(window: int | Sequence[int]) -> tuple[int, int, int]:
    size = (
        (int(window),) * 3
        if isinstance(window, int | np.integer)
        else tuple(int(w) for w in window)
    )
    if len(size) != 3 or min(size) < 1:
        raise InputError(f"window must be a positive int or three, got {window!r}")
    return size[0], size[1], size[2]


def _parse_task_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict(DEFAULT_TASK_WEIGHTS)
    for family in weights:
        check_option(family, TASK_FAMILIES, "task_weights key")
    parsed = {family: float(weights.get(family, 0.0)) for family in TASK_FAMILIES}
    if any(not np.isfinite(w) or w < 0 for w in parsed.values()) or sum(parsed.values()) <= 0:
        raise InputError(f"task_weights must be >= 0 with a positive sum, got {dict(weights)}")
    return parsed


def _parse_enhancements(
    value: Mapping[str, _RandomOp | Mapping[str, Any] | None] | Sequence[str] | None,
) -> dict[str, _RandomOp]:
    if isinstance(value, Mapping) and all(isinstance(v, _RandomOp) for v in value.values()):
        return dict(value)
    return enhancement_ops(value)


def _plain(value):
    """Numpy scalars and tuples -> plain Python, so ``params`` is JSON-ready."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
