"""Synthetic data from nothing: label maps, multi-modal images, nnU-Net folders, degradations.

Two roles (METHOD.md §4):

* a test fixture for the whole pipeline: :func:`make_label_map` draws an "anatomy" of overlapping
  ellipsoids, boxes, tubes and smooth blobs inside a body, :func:`render_modality` turns it into an
  image, :func:`make_subject` does both for several modalities and :func:`write_synthetic_dataset`
  writes a tiny nnU-Net raw folder (``imagesTr``, ``labelsTr``, ``dataset.json``);
* the enhancement tasks of training. As in TorchIO, randomness is kept apart from the operation: a
  ``Random*`` object draws parameters from a :class:`numpy.random.Generator` and returns a frozen,
  deterministic operation (:class:`GaussianNoise`, :class:`SaltAndPepper`, :class:`BiasField`,
  :class:`Inpainting`, :class:`LowResolution`) whose fields are plain numbers, so
  ``ENHANCEMENT_OPS[name](**dataclasses.asdict(op))`` replays it.

Enhancement operations expect a single 3-D volume ``(X, Y, Z)`` already scaled to ``[0, 1]``
(noise standard deviations and fill values are on that scale) and return ``float32``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
import torch
import torchio as tio
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from medverse.errors import InputError
from medverse.types import PathLike, Shape3

__all__ = [
    "ENHANCEMENT_OPS",
    "RANDOM_ENHANCEMENTS",
    "Anatomy",
    "BiasField",
    "GaussianNoise",
    "Inpainting",
    "LowResolution",
    "RandomBiasField",
    "RandomGaussianNoise",
    "RandomInpainting",
    "RandomLowResolution",
    "RandomSaltAndPepper",
    "SaltAndPepper",
    "StructureSpec",
    "SyntheticSubject",
    "default_enhancements",
    "draw_anatomy",
    "draw_intensity_table",
    "enhancement_ops",
    "make_label_map",
    "make_subject",
    "perlin_noise",
    "render_modality",
    "write_synthetic_dataset",
]

logger = logging.getLogger(__name__)

_KINDS = ("ellipsoid", "box", "tube", "blob")


# --------------------------------------------------------------------------------------------
# Smooth noise
# --------------------------------------------------------------------------------------------


def _gradient_noise(shape: Shape3, cells: Shape3, rng: np.random.Generator) -> np.ndarray:
    """One octave of 3-D Perlin noise: random unit gradients on a ``cells + 1`` lattice.

    Perlin noise is ``sum_corners fade(f) * <g_corner, f - corner>``. Both factors are products
    of per-axis terms, so the sum is three tensor contractions of the gradient lattice with
    small per-axis matrices ``(size, cells + 1)`` (interpolation weights, or weights times the
    offset along the gradient's own axis); this is ~50x faster than gathering corners.
    """
    gradients = rng.normal(size=(3, *(c + 1 for c in cells)))
    gradients /= np.linalg.norm(gradients, axis=0, keepdims=True) + 1e-12
    weights, offsets = [], []
    for size, num_cells in zip(shape, cells, strict=True):
        position = (np.arange(size) + 0.5) * num_cells / size
        index = np.minimum(np.floor(position).astype(np.intp), num_cells - 1)
        frac = position - index
        fade = frac**3 * (frac * (frac * 6 - 15) + 10)
        weight = np.zeros((size, num_cells + 1))
        offset = np.zeros((size, num_cells + 1))
        rows = np.arange(size)
        weight[rows, index] = 1 - fade
        weight[rows, index + 1] = fade
        offset[rows, index] = (1 - fade) * frac
        offset[rows, index + 1] = fade * (frac - 1)
        weights.append(weight)
        offsets.append(offset)
    noise = np.zeros(shape)
    for axis in range(3):
        factors = [offsets[a] if a == axis else weights[a] for a in range(3)]
        noise += np.einsum("ijk,xi,yj,zk->xyz", gradients[axis], *factors, optimize=True)
    return noise


def _other_axes(axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(3) if a != axis)


def perlin_noise(
    shape: Sequence[int],
    *,
    cells: int | Sequence[int] = 4,
    octaves: int = 1,
    persistence: float = 0.5,
    rng: np.random.Generator,
) -> np.ndarray:
    """Fractal Perlin (gradient) noise, scaled so that ``max(|noise|) == 1``.

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        cells: lattice cells per axis of the first octave (larger = finer features).
        octaves: number of octaves; octave ``o`` has ``cells * 2**o`` cells and amplitude
            ``persistence**o``.
        persistence: amplitude ratio between consecutive octaves.
        rng: source of the random gradients.

    Returns:
        ``float32`` array of ``shape`` in ``[-1, 1]``.

    Example:
        >>> noise = perlin_noise((16, 16, 16), cells=2, octaves=2, rng=np.random.default_rng(0))
        >>> noise.shape, float(np.abs(noise).max())
        ((16, 16, 16), 1.0)
    """
    shape3 = _shape3(shape)
    base = np.broadcast_to(np.asarray(cells, dtype=int), (3,))
    if octaves < 1 or np.any(base < 1):
        raise InputError(f"perlin_noise needs octaves >= 1 and cells >= 1, got {octaves}, {cells}")
    total = np.zeros(shape3)
    for octave in range(octaves):
        octave_cells = tuple(int(c) * 2**octave for c in base)
        total += persistence**octave * _gradient_noise(shape3, octave_cells, rng)
    peak = np.abs(total).max()
    return (total / peak if peak > 0 else total).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Label maps: an "anatomy" template, jittered per subject
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StructureSpec:
    """One structure in normalised coordinates (every axis spans ``[-1, 1]``).

    ``kind`` is ``ellipsoid``, ``box``, ``tube`` or ``blob``. ``rotation`` is a row-major 3x3
    matrix; ``points`` are the three control points of a tube's quadratic Bezier curve, whose
    radius is ``radii[0]``; ``wobble`` is the amplitude of the Perlin perturbation of blobs.
    """

    kind: str
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    points: tuple[tuple[float, float, float], ...] = ()
    wobble: float = 0.0


@dataclass(frozen=True)
class Anatomy:
    """A dataset's template: the body (label 1) and one structure per label ``2..num_classes``."""

    body: StructureSpec
    structures: tuple[StructureSpec, ...]

    @property
    def num_classes(self) -> int:
        """Number of foreground labels (body included)."""
        return 1 + len(self.structures)


def _random_rotation(rng: np.random.Generator) -> tuple[float, ...]:
    return tuple(float(v) for v in Rotation.random(random_state=rng).as_matrix().ravel())


def _point_in_body(body: StructureSpec, rng: np.random.Generator, scale: float) -> np.ndarray:
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction) + 1e-12
    radius = scale * rng.random() ** (1 / 3)
    return np.asarray(body.center) + radius * direction * np.asarray(body.radii)


def draw_anatomy(num_classes: int, rng: np.random.Generator) -> Anatomy:
    """Draw a template: a wobbly ellipsoidal body and ``num_classes - 1`` structures inside it.

    Args:
        num_classes: number of foreground labels, ``>= 1``; label 1 is the body.
        rng: random generator.

    Returns:
        An :class:`Anatomy`; pass it to :func:`make_label_map` to get subjects that share it.
    """
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1 (label 1 is the body), got {num_classes}")
    body = StructureSpec(
        kind="blob",
        center=tuple(float(v) for v in rng.uniform(-0.05, 0.05, 3)),
        radii=tuple(float(v) for v in rng.uniform(0.65, 0.9, 3)),
        wobble=float(rng.uniform(0.05, 0.15)),
    )
    structures = []
    for _ in range(num_classes - 1):
        kind = _KINDS[int(rng.integers(len(_KINDS)))]
        center = _point_in_body(body, rng, 0.55)
        if kind == "tube":
            ends = [_point_in_body(body, rng, 0.7) for _ in range(2)]
            middle = (ends[0] + ends[1]) / 2 + rng.normal(0, 0.15, 3)
            points = tuple(tuple(float(v) for v in p) for p in (ends[0], middle, ends[1]))
            radius = float(rng.uniform(0.07, 0.12))
            spec = StructureSpec(
                kind, tuple(float(v) for v in middle), (radius,) * 3, points=points
            )
        else:
            radii = tuple(float(v) for v in rng.uniform(0.15, 0.35, 3))
            spec = StructureSpec(
                kind,
                tuple(float(v) for v in center),
                radii,
                rotation=_random_rotation(rng),
                wobble=float(rng.uniform(0.1, 0.3)) if kind == "blob" else 0.0,
            )
        structures.append(spec)
    return Anatomy(body=body, structures=tuple(structures))


def _jitter(spec: StructureSpec, rng: np.random.Generator, amount: float) -> StructureSpec:
    """The same structure in another subject: moved, resized and turned a little."""
    shift = rng.normal(0, 0.3 * amount, 3)
    scale = rng.uniform(1 - amount, 1 + amount, 3)
    turn = Rotation.from_rotvec(rng.normal(0, amount, 3)).as_matrix()
    rotation = np.asarray(spec.rotation).reshape(3, 3) @ turn
    points = tuple(
        tuple(float(v) for v in np.asarray(p) + shift + rng.normal(0, 0.2 * amount, 3))
        for p in spec.points
    )
    return dataclasses.replace(
        spec,
        center=tuple(float(v) for v in np.asarray(spec.center) + shift),
        radii=tuple(float(v) for v in np.asarray(spec.radii) * scale),
        rotation=tuple(float(v) for v in rotation.ravel()),
        points=points,
    )


def _bezier(points: tuple[tuple[float, float, float], ...], num: int = 32) -> np.ndarray:
    p0, p1, p2 = (np.asarray(p) for p in points)
    t = np.linspace(0, 1, num)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _rasterise(
    spec: StructureSpec, axes: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of ``spec`` on the grid spanned by the 1-D coordinate ``axes``.

    Only the bounding box of the structure is evaluated, so small structures are cheap.
    """
    shape = tuple(len(a) for a in axes)
    if spec.kind == "tube":
        curve = _bezier(spec.points)
        center = (curve.min(0) + curve.max(0)) / 2
        bound = float(np.linalg.norm(curve - center, axis=1).max()) + spec.radii[0]
    else:
        center = np.asarray(spec.center)
        bound = float(max(spec.radii)) * (np.sqrt(3) if spec.kind == "box" else 1.0)
        bound *= 1 + spec.wobble
    window = []
    for axis_coords, c in zip(axes, center, strict=True):
        inside = np.nonzero(np.abs(axis_coords - c) <= bound)[0]
        if inside.size == 0:
            return np.zeros(shape, dtype=bool)
        window.append(slice(int(inside[0]), int(inside[-1]) + 1))
    grid = [
        np.expand_dims(a[w] - c, _other_axes(i))
        for i, (a, w, c) in enumerate(zip(axes, window, center, strict=True))
    ]
    sub_shape = tuple(w.stop - w.start for w in window)
    if spec.kind == "tube":
        distance = np.full(sub_shape, np.inf)
        for point in curve - center:
            d2 = sum((grid[i] - point[i]) ** 2 for i in range(3))
            distance = np.minimum(distance, d2)
        inside_sub = distance <= spec.radii[0] ** 2
    else:
        rot = np.asarray(spec.rotation).reshape(3, 3)
        local = [sum(grid[i] * rot[i, j] for i in range(3)) / spec.radii[j] for j in range(3)]
        if spec.kind == "box":
            inside_sub = np.maximum(
                np.maximum(np.abs(local[0]), np.abs(local[1])), np.abs(local[2])
            )
            inside_sub = inside_sub <= 1
        else:
            radius = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
            if spec.kind == "blob":
                radius = radius + spec.wobble * perlin_noise(sub_shape, cells=2, rng=rng)
            inside_sub = radius <= 1
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(window)] = np.broadcast_to(inside_sub, sub_shape)
    return mask


def make_label_map(
    shape: Sequence[int],
    *,
    num_classes: int,
    rng: np.random.Generator,
    anatomy: Anatomy | None = None,
    jitter: float = 0.1,
) -> np.ndarray:
    """Random 3-D label map: body (label 1) holding overlapping structures (labels ``2..``).

    Structures are painted in label order, each clipped to the body, so later labels overlap
    earlier ones. Every label ``0..num_classes`` is present: a label that was painted over entirely
    gets a small sphere on a body voxel.

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        num_classes: number of foreground labels (``>= 1``).
        rng: random generator (everything drawn comes from it).
        anatomy: template shared by the subjects of a dataset (see :func:`draw_anatomy`); each
            call jitters it. ``None`` draws a fresh one.
        jitter: relative size of the per-subject changes to the template.

    Returns:
        ``int16`` array of ``shape`` with values in ``0..num_classes``.

    Example:
        >>> labels = make_label_map((24, 24, 24), num_classes=5, rng=np.random.default_rng(0))
        >>> sorted(np.unique(labels).tolist())
        [0, 1, 2, 3, 4, 5]
    """
    shape3 = _shape3(shape)
    if anatomy is None:
        anatomy = draw_anatomy(num_classes, rng)
    elif anatomy.num_classes != num_classes:
        raise InputError(
            f"anatomy has {anatomy.num_classes} classes but num_classes={num_classes}; "
            "draw the anatomy with the same num_classes"
        )
    scale = rng.uniform(1 - jitter, 1 + jitter, 3)
    shift = rng.uniform(-jitter / 2, jitter / 2, 3)
    axes = [(np.linspace(-1, 1, n) - s) / k for n, s, k in zip(shape3, shift, scale, strict=True)]
    labels = np.zeros(shape3, dtype=np.int16)
    body = _rasterise(_jitter(anatomy.body, rng, jitter / 2), axes, rng)
    if not body.any():  # degenerate tiny shapes: keep a central voxel
        body[tuple(n // 2 for n in shape3)] = True
    labels[body] = 1
    for label, spec in enumerate(anatomy.structures, start=2):
        labels[_rasterise(_jitter(spec, rng, jitter), axes, rng) & body] = label
    _ensure_all_present(labels, num_classes, body, rng)
    return labels


def _ensure_all_present(
    labels: np.ndarray, num_classes: int, body: np.ndarray, rng: np.random.Generator
) -> None:
    radius = max(1.0, min(labels.shape) / 16)
    grid = np.indices(labels.shape, sparse=True)
    for _ in range(4 * num_classes):
        missing = [k for k in range(1, num_classes + 1) if not (labels == k).any()]
        if not missing:
            return
        candidates = np.argwhere(labels == 1)
        if candidates.size == 0:
            candidates = np.argwhere(body)
        center = candidates[int(rng.integers(len(candidates)))]
        ball = sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2
        paint = ball & body if missing[0] != 1 else ball
        if not paint.any():
            paint = np.zeros_like(body)
            paint[tuple(center)] = True
        labels[paint] = missing[0]


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def draw_intensity_table(num_labels: int, rng: np.random.Generator) -> np.ndarray:
    """Mean intensity per label for one modality: background dark, tissues in ``[0.15, 1]``.

    Args:
        num_labels: number of labels including background (``num_classes + 1``).
        rng: random generator.

    Returns:
        ``float64`` array ``(num_labels,)``.
    """
    table = rng.uniform(0.15, 1.0, num_labels)
    table[0] = rng.uniform(0.0, 0.1)
    return table


def render_modality(
    labels: np.ndarray,
    *,
    rng: np.random.Generator,
    table: np.ndarray | None = None,
    texture: float = 0.08,
    blur_sigma: tuple[float, float] = (0.3, 1.0),
    bias_coefficient: float = 0.3,
    noise_std: tuple[float, float] = (0.005, 0.03),
) -> np.ndarray:
    """Render one image of a label map: intensity table, texture, blur, bias field, noise.

    Args:
        labels: ``(X, Y, Z)`` integer label map.
        rng: random generator.
        table: mean intensity per label (index = label); drawn by :func:`draw_intensity_table` when
            ``None``. A dataset keeps one table per modality so that a modality looks alike in
            every subject.
        texture: amplitude of multiplicative Perlin texture.
        blur_sigma: range of the Gaussian blur sigma, in voxels.
        bias_coefficient: largest magnitude of the bias-field coefficients (:class:`BiasField`).
        noise_std: range of the Gaussian noise standard deviation.

    Returns:
        ``float32`` array of the label map's shape, min-max scaled to ``[0, 1]``.
    """
    labels = np.asarray(labels)
    num_labels = int(labels.max()) + 1
    if table is None:
        table = draw_intensity_table(num_labels, rng)
    elif len(table) < num_labels:
        raise InputError(
            f"intensity table has {len(table)} entries, labels go up to {num_labels - 1}"
        )
    image = np.asarray(table, dtype=np.float64)[labels]
    image *= 1 + texture * perlin_noise(labels.shape, cells=4, octaves=2, rng=rng)
    image = gaussian_filter(image, sigma=rng.uniform(*blur_sigma))
    image = _minmax(image)
    image = RandomBiasField(coefficients=bias_coefficient).draw(rng)(image)
    image = RandomGaussianNoise(std=noise_std).draw(rng)(_minmax(image))
    return _minmax(image)


def _minmax(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    low, high = float(volume.min()), float(volume.max())
    return ((volume - low) / (high - low + 1e-8)).astype(np.float32)


@dataclass(frozen=True, eq=False)
class SyntheticSubject:
    """One synthetic subject.

    Attributes:
        images: ``(M, X, Y, Z)`` float32 in ``[0, 1]``, one channel per modality.
        labels: ``(X, Y, Z)`` int16, ``0`` background, ``1`` body, ``2..`` structures.
        seed: the seed it was made from.
    """

    images: np.ndarray
    labels: np.ndarray
    seed: int


def make_subject(
    shape: Sequence[int],
    num_classes: int,
    num_modalities: int,
    seed: int,
    *,
    anatomy: Anatomy | None = None,
    tables: Sequence[np.ndarray] | None = None,
) -> SyntheticSubject:
    """Make one subject: a label map and ``num_modalities`` renderings of it.

    Args:
        shape: spatial shape ``(X, Y, Z)``.
        num_classes: number of foreground labels (body included).
        num_modalities: number of images (same labels, different intensity tables).
        seed: everything is drawn from ``numpy.random.default_rng(seed)``.
        anatomy: shared template (:func:`draw_anatomy`); ``None`` draws a fresh one.
        tables: one intensity table per modality (jittered by 5 % per subject); ``None`` draws
            fresh ones.

    Returns:
        A :class:`SyntheticSubject`.

    Example:
        >>> subject = make_subject((16, 16, 16), num_classes=3, num_modalities=2, seed=0)
        >>> subject.images.shape, subject.labels.shape
        ((2, 16, 16, 16), (16, 16, 16))
    """
    if num_modalities < 1:
        raise InputError(f"num_modalities must be >= 1, got {num_modalities}")
    if tables is not None and len(tables) != num_modalities:
        raise InputError(f"got {len(tables)} intensity tables for {num_modalities} modalities")
    rng = np.random.default_rng(seed)
    labels = make_label_map(shape, num_classes=num_classes, rng=rng, anatomy=anatomy)
    images = []
    for modality in range(num_modalities):
        table = None
        if tables is not None:
            table = np.asarray(tables[modality]) * rng.uniform(0.95, 1.05, len(tables[modality]))
        images.append(render_modality(labels, rng=rng, table=table))
    return SyntheticSubject(images=np.stack(images), labels=labels, seed=int(seed))


def write_synthetic_dataset(
    root: PathLike,
    num_subjects: int = 4,
    shape: Sequence[int] = (32, 32, 32),
    num_classes: int = 6,
    num_modalities: int = 2,
    seed: int = 0,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    name: str = "Synthetic",
    case_prefix: str = "synth",
) -> Path:
    """Write a tiny nnU-Net raw dataset of synthetic subjects.

    Layout: ``root/imagesTr/{case}_{channel:04d}.nii.gz``, ``root/labelsTr/{case}.nii.gz`` and
    ``root/dataset.json`` (``channel_names``, ``labels``, ``numTraining``, ``file_ending``). All
    subjects share one anatomy template and one intensity table per modality, so label ``k`` and
    modality ``m`` mean the same thing in every subject. The affine is diagonal (``spacing``) with
    a non-zero origin.

    Args:
        root: dataset folder (created; existing files are overwritten).
        num_subjects: number of cases.
        shape: spatial shape of every volume.
        num_classes: foreground labels; label 1 is ``body``, the others ``structure_{k}``.
        num_modalities: channels per case, named ``synth{m}``.
        seed: dataset seed; case ``i`` uses the seed ``SeedSequence([seed, i])``.
        spacing: voxel size written in the affine.
        name: ``name`` field of ``dataset.json``.
        case_prefix: cases are ``{case_prefix}_{i:04d}``.

    Returns:
        ``Path(root)``.

    Example:
        >>> import tempfile
        >>> root = write_synthetic_dataset(tempfile.mkdtemp(), num_subjects=2, shape=(8, 8, 8))
        >>> sorted(p.name for p in (root / "labelsTr").iterdir())
        ['synth_0000.nii.gz', 'synth_0001.nii.gz']
    """
    if num_subjects < 1:
        raise InputError(f"num_subjects must be >= 1, got {num_subjects}")
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(num_classes, rng)
    tables = [draw_intensity_table(num_classes + 1, rng) for _ in range(num_modalities)]
    shape3 = _shape3(shape)
    affine = np.diag([*(float(s) for s in spacing), 1.0])
    affine[:3, 3] = -np.asarray(shape3) * np.asarray(spacing, dtype=float) / 2
    label_dtype = np.uint8 if num_classes < 256 else np.int16
    for index in range(num_subjects):
        case = f"{case_prefix}_{index:04d}"
        subject_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        subject = make_subject(
            shape3, num_classes, num_modalities, subject_seed, anatomy=anatomy, tables=tables
        )
        for channel, image in enumerate(subject.images):
            path = root / "imagesTr" / f"{case}_{channel:04d}.nii.gz"
            nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(path))
        label_path = root / "labelsTr" / f"{case}.nii.gz"
        nib.save(nib.Nifti1Image(subject.labels.astype(label_dtype), affine), str(label_path))
    labels = {"background": 0, "body": 1}
    labels.update({f"structure_{k}": k for k in range(2, num_classes + 1)})
    description = {
        "name": name,
        "channel_names": {str(m): f"synth{m}" for m in range(num_modalities)},
        "labels": labels,
        "numTraining": num_subjects,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=2))
    logger.info("wrote %d synthetic cases to %s", num_subjects, root)
    return root


# --------------------------------------------------------------------------------------------
# Enhancement tasks: deterministic operations ...
# --------------------------------------------------------------------------------------------


def _check_volume(image: np.ndarray, op: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"{op} expects a 3-D volume (X, Y, Z), got shape {image.shape}")
    return image


def _to_tio(image: np.ndarray) -> tio.ScalarImage:
    return tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(image)[None]))


@dataclass(frozen=True)
class GaussianNoise:
    """Add Gaussian noise ``N(mean, std**2)`` (TorchIO ``Noise``; seeded, so replayable)."""

    name: ClassVar[str] = "gaussian_noise"
    std: float
    seed: int
    mean: float = 0.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name)
        noise = tio.Noise(mean=self.mean, std=self.std, seed=self.seed)
        return noise(_to_tio(image)).data[0].numpy().astype(np.float32)


@dataclass(frozen=True)
class SaltAndPepper:
    """Set a fraction ``amount`` of voxels to the image maximum (salt) or minimum (pepper).

    Each corrupted voxel is salt with probability ``salt_ratio``. Neither TorchIO nor MONAI has
    this operation.
    """

    name: ClassVar[str] = "salt_and_pepper"
    amount: float
    seed: int
    salt_ratio: float = 0.5

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name).copy()
        rng = np.random.default_rng(self.seed)
        corrupt = rng.random(image.shape) < self.amount
        salt = rng.random(image.shape) < self.salt_ratio
        low, high = float(image.min()), float(image.max())
        image[corrupt & salt] = high
        image[corrupt & ~salt] = low
        return image


@dataclass(frozen=True)
class BiasField:
    """Multiply by ``exp(field)``, ``field`` a sum of Legendre polynomials up to ``order``.

    Same basis and coefficient order as MONAI's ``RandBiasField`` (``(order+1)(order+2)(order+3)/6
    - 1`` coefficients; the constant term is left out). We call numpy's ``leggrid3d`` directly so
    the coefficients are explicit; TorchIO's ``BiasField`` takes 0.9 s per 128³ volume, this 0.1 s.
    """

    name: ClassVar[str] = "bias_field"
    coefficients: tuple[float, ...]
    order: int = 3

    def field(self, shape: Sequence[int]) -> np.ndarray:
        """The multiplicative field ``exp(sum c_ijk P_i(x) P_j(y) P_k(z))`` on ``shape``."""
        powers = _bias_terms(self.order)
        if len(self.coefficients) != len(powers):
            raise InputError(
                f"bias field of order {self.order} needs {len(powers)} coefficients, "
                f"got {len(self.coefficients)}"
            )
        matrix = np.zeros((self.order + 1,) * 3)
        for (i, j, k), value in zip(powers, self.coefficients, strict=True):
            matrix[i, j, k] = value
        coords = [np.linspace(-1.0, 1.0, n) for n in shape]
        return np.exp(np.polynomial.legendre.leggrid3d(*coords, matrix)).astype(np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name)
        return (image * self.field(image.shape)).astype(np.float32)


def _bias_terms(order: int) -> list[tuple[int, int, int]]:
    terms = [
        (i, j, k)
        for i in range(order + 1)
        for j in range(order + 1 - i)
        for k in range(order + 1 - i - j)
    ]
    return terms[1:] if len(terms) > 1 else terms


@dataclass(frozen=True)
class Inpainting:
    """Blank out a Perlin-noise-shaped region covering a fraction ``fraction`` of the volume.

    The mask is ``noise > quantile(noise, 1 - fraction)`` of :func:`perlin_noise` drawn from
    ``seed`` with ``cells`` and ``octaves``; masked voxels are set to ``fill`` (``None``: the image
    minimum).
    """

    name: ClassVar[str] = "inpainting"
    fraction: float
    seed: int
    cells: int = 3
    octaves: int = 3
    fill: float | None = None

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        """Boolean mask of the voxels to blank out."""
        noise = perlin_noise(
            shape, cells=self.cells, octaves=self.octaves, rng=np.random.default_rng(self.seed)
        )
        return noise > np.quantile(noise, 1 - self.fraction)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name).copy()
        image[self.mask(image.shape)] = image.min() if self.fill is None else self.fill
        return image


@dataclass(frozen=True)
class LowResolution:
    """Down-sample one axis by ``factor`` (area averaging, like a thick slice) and back (trilinear).

    Uses MONAI ``Resize``; TorchIO's ``RandomAnisotropy`` does the same with SimpleITK
    (nearest-neighbour down-sampling) ten times slower at 128³.
    """

    name: ClassVar[str] = "super_resolution"
    axis: int
    factor: float

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name)
        return _down_up(image[None], self.axis, self.factor, is_mask=False)[0]


def _down_up(volumes: np.ndarray, axis: int, factor: float, *, is_mask: bool) -> np.ndarray:
    """Down-sample ``(C, X, Y, Z)`` along spatial ``axis`` by ``factor`` and resize back."""
    if axis not in (0, 1, 2) or factor < 1:
        raise InputError(
            f"down-sampling needs axis in (0, 1, 2) and factor >= 1, got {axis}, {factor}"
        )
    from monai.transforms import Resize  # lazy: importing MONAI costs seconds

    shape = volumes.shape[1:]
    low = list(shape)
    low[axis] = max(1, round(shape[axis] / factor))
    down_mode, up_mode = ("nearest", "nearest") if is_mask else ("area", "trilinear")
    down = Resize(tuple(low), mode=down_mode)(torch.from_numpy(np.ascontiguousarray(volumes)))
    up = Resize(tuple(shape), mode=up_mode)(down)
    return torch.as_tensor(up).cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# ... and the Random* objects that draw their parameters
# --------------------------------------------------------------------------------------------


def _range(value: float | Sequence[float], name: str, *, low: float = 0.0) -> tuple[float, float]:
    pair = (float(value), float(value)) if np.isscalar(value) else tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1] or pair[0] < low:
        raise InputError(f"{name} must be a number or a (min, max) pair >= {low}, got {value!r}")
    return pair[0], pair[1]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


class _RandomOp:
    """Shared behaviour: ``__call__(image, rng)`` draws an operation and applies it."""

    def draw(self, rng: np.random.Generator):  # pragma: no cover - overridden
        raise NotImplementedError

    def fix_strength(self, rng: np.random.Generator) -> _RandomOp:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, image: np.ndarray, rng: np.random.Generator):
        op = self.draw(rng)
        return op(image), op

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class RandomGaussianNoise(_RandomOp):
    """Draw :class:`GaussianNoise` with ``std ~ U(*std)`` and a random seed."""

    def __init__(self, std: float | Sequence[float] = (0.03, 0.2)):
        self.std = _range(std, "std")

    def draw(self, rng: np.random.Generator) -> GaussianNoise:
        return GaussianNoise(std=float(rng.uniform(*self.std)), seed=_seed(rng))

    def fix_strength(self, rng: np.random.Generator) -> RandomGaussianNoise:
        """Same noise level for every member of an episode, a fresh seed each."""
        return RandomGaussianNoise(std=float(rng.uniform(*self.std)))


class RandomSaltAndPepper(_RandomOp):
    """Draw :class:`SaltAndPepper` with ``amount ~ U(*amount)``, ``salt_ratio ~ U(*salt_ratio)``."""

    def __init__(
        self,
        amount: float | Sequence[float] = (0.01, 0.1),
        salt_ratio: float | Sequence[float] = (0.3, 0.7),
    ):
        self.amount = _range(amount, "amount")
        self.salt_ratio = _range(salt_ratio, "salt_ratio")

    def draw(self, rng: np.random.Generator) -> SaltAndPepper:
        return SaltAndPepper(
            amount=float(rng.uniform(*self.amount)),
            seed=_seed(rng),
            salt_ratio=float(rng.uniform(*self.salt_ratio)),
        )

    def fix_strength(self, rng: np.random.Generator) -> RandomSaltAndPepper:
        return RandomSaltAndPepper(
            amount=float(rng.uniform(*self.amount)), salt_ratio=float(rng.uniform(*self.salt_ratio))
        )


class RandomBiasField(_RandomOp):
    """Draw :class:`BiasField`: magnitude ``n ~ U(*coefficients)``, each coefficient ``~ U(-n, n)``.

    A single number ``c`` means ``n = c`` (TorchIO's ``RandomBiasField(coefficients=c)`` law).
    """

    def __init__(self, coefficients: float | Sequence[float] = (0.2, 0.6), order: int = 3):
        self.coefficients = _range(coefficients, "coefficients")
        if order < 1:
            raise InputError(f"bias field order must be >= 1, got {order}")
        self.order = int(order)

    def draw(self, rng: np.random.Generator) -> BiasField:
        magnitude = rng.uniform(*self.coefficients)
        values = rng.uniform(-magnitude, magnitude, len(_bias_terms(self.order)))
        return BiasField(coefficients=tuple(float(v) for v in values), order=self.order)

    def fix_strength(self, rng: np.random.Generator) -> RandomBiasField:
        return RandomBiasField(
            coefficients=float(rng.uniform(*self.coefficients)), order=self.order
        )


class RandomInpainting(_RandomOp):
    """Draw :class:`Inpainting` with ``fraction ~ U(*fraction)``, ``cells`` an integer in range."""

    def __init__(
        self,
        fraction: float | Sequence[float] = (0.05, 0.3),
        cells: int | Sequence[int] = (2, 5),
        octaves: int = 3,
    ):
        self.fraction = _range(fraction, "fraction")
        if self.fraction[1] >= 1:
            raise InputError(f"inpainting fraction must be < 1, got {fraction!r}")
        low, high = _range(cells, "cells", low=1)
        self.cells = (int(low), int(high))
        self.octaves = int(octaves)

    def draw(self, rng: np.random.Generator) -> Inpainting:
        return Inpainting(
            fraction=float(rng.uniform(*self.fraction)),
            seed=_seed(rng),
            cells=int(rng.integers(self.cells[0], self.cells[1] + 1)),
            octaves=self.octaves,
        )

    def fix_strength(self, rng: np.random.Generator) -> RandomInpainting:
        return RandomInpainting(
            fraction=float(rng.uniform(*self.fraction)), cells=self.cells, octaves=self.octaves
        )


class RandomLowResolution(_RandomOp):
    """Draw :class:`LowResolution`: one axis of ``axes``, ``factor ~ U(*factor)`` (default 2-4x)."""

    def __init__(
        self, factor: float | Sequence[float] = (2.0, 4.0), axes: Sequence[int] = (0, 1, 2)
    ):
        self.factor = _range(factor, "factor", low=1.0)
        self.axes = tuple(int(a) for a in axes)
        if not self.axes or any(a not in (0, 1, 2) for a in self.axes):
            raise InputError(f"axes must be a non-empty subset of (0, 1, 2), got {axes!r}")

    def draw(self, rng: np.random.Generator) -> LowResolution:
        axis = self.axes[int(rng.integers(len(self.axes)))]
        return LowResolution(axis=axis, factor=float(rng.uniform(*self.factor)))

    def fix_strength(self, rng: np.random.Generator) -> RandomLowResolution:
        """Same axis and factor for every member (the task is 'undo this down-sampling')."""
        op = self.draw(rng)
        return RandomLowResolution(factor=op.factor, axes=(op.axis,))


#: Deterministic operation class per enhancement task name; ``ENHANCEMENT_OPS[name](**params)``.
ENHANCEMENT_OPS: dict[str, type] = {
    op.name: op for op in (GaussianNoise, SaltAndPepper, BiasField, Inpainting, LowResolution)
}


#: The enhancement tasks of training: name -> ``Random*`` class (keyword arguments = its ranges).
RANDOM_ENHANCEMENTS: dict[str, type[_RandomOp]] = {
    "gaussian_noise": RandomGaussianNoise,
    "salt_and_pepper": RandomSaltAndPepper,
    "bias_field": RandomBiasField,
    "inpainting": RandomInpainting,
    "super_resolution": RandomLowResolution,
}


def default_enhancements() -> dict[str, _RandomOp]:
    """The enhancement tasks of training with their default parameter ranges."""
    return {name: cls() for name, cls in RANDOM_ENHANCEMENTS.items()}


def enhancement_ops(
    spec: Mapping[str, Mapping[str, Any] | None] | Sequence[str] | None,
) -> dict[str, _RandomOp]:
    """``Random*`` operations from names, or from names with parameter ranges.

    Args:
        spec: ``None`` (all five, default ranges); a list of names; or a mapping name ->
            keyword arguments of its ``Random*`` class (``None`` or ``{}`` = defaults), e.g.
            ``{"gaussian_noise": {"std": [0.01, 0.1]}, "bias_field": {"coefficients": 0.1}}``.

    Raises:
        InputError: an unknown name or parameter, or an invalid range.
    """
    if spec is None:
        return default_enhancements()
    if isinstance(spec, str):
        spec = [spec]
    items = spec.items() if isinstance(spec, Mapping) else ((name, None) for name in spec)
    ops: dict[str, _RandomOp] = {}
    for name, params in items:
        if name not in RANDOM_ENHANCEMENTS:
            raise InputError(
                f"unknown enhancement task {name!r}; choose from {sorted(RANDOM_ENHANCEMENTS)}"
            )
        if params is not None and not isinstance(params, Mapping):
            raise InputError(
                f"enhancements[{name!r}] must be a mapping of parameter ranges, got {params!r}"
            )
        cls = RANDOM_ENHANCEMENTS[name]
        params = dict(params or {})
        allowed = sorted(inspect.signature(cls).parameters)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise InputError(
                f"enhancement {name!r}: unknown parameters {unknown}; it takes {allowed}"
            )
        try:
            ops[name] = cls(**params)
        except (TypeError, ValueError) as error:
            raise InputError(
                f"enhancement {name!r}: invalid parameters {params}: {error}"
            ) from error
    if not ops:
        raise InputError("enhancements must name at least one task")
    return ops


def _shape3(shape: Sequence[int]) -> Shape3:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"shape must be three positive integers (X, Y, Z), got {tuple(shape)}")
    return dims[0], dims[1], dims[2]
