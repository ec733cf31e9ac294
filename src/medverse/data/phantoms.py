"""Synthetic phantoms: label maps of a random anatomy, rendered images, nnU-Net folders.

A test fixture for the whole pipeline and the synthetic data source of training (METHOD.md §4):
:func:`make_label_map` draws an "anatomy" of overlapping ellipsoids, boxes, tubes and smooth blobs
inside a body, :func:`render_modality` turns it into an image, :func:`make_subject` does both for
several modalities and :func:`write_synthetic_dataset` writes a tiny nnU-Net raw folder
(``imagesTr``, ``labelsTr``, ``dataset.json``). The degradations of the enhancement tasks are in
:mod:`medverse.data.degradations` (rendering borrows its bias field and noise).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from medverse.data.degradations import RandomBiasField, RandomGaussianNoise
from medverse.data.noise import _shape3, perlin_noise
from medverse.errors import InputError
from medverse.intensity import minmax_scale
from medverse.types import PathLike

__all__ = [
    "Anatomy",
    "StructureSpec",
    "SyntheticSubject",
    "draw_anatomy",
    "draw_intensity_table",
    "make_label_map",
    "make_subject",
    "render_modality",
    "write_synthetic_dataset",
]

logger = logging.getLogger(__name__)

_KINDS = ("ellipsoid", "box", "tube", "blob")


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


def _other_axes(axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(3) if a != axis)


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
        bias_coefficient: largest magnitude of the bias-field coefficients
            (:class:`~medverse.data.degradations.BiasField`).
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
    image = minmax_scale(image)
    image = RandomBiasField(coefficients=bias_coefficient).draw(rng)(image)
    image = RandomGaussianNoise(std=noise_std).draw(rng)(minmax_scale(image))
    return minmax_scale(image)


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
