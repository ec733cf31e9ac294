"""The figures of an evaluation report: box plots of a metric and triplanar example figures.

Every figure is returned as PNG bytes (or, for :func:`build_example_figure`, a matplotlib figure
not drawn yet); :mod:`medverse.evaluation.report` writes them. Slices are labelled from the
affine (:func:`orientation_letters`, :func:`plane_views`): anatomical letters at the panel edges
and world positions in the titles; nothing is reoriented.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medverse.evaluation.records import Example, Results
from medverse.evaluation.summary import _METRIC_LABELS

__all__ = [
    "PlaneView",
    "build_example_figure",
    "example_figure",
    "orientation_letters",
    "plane_views",
]


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _box_plot(results: Results, metric: str) -> bytes | None:
    from matplotlib.figure import Figure

    tasks = [
        t
        for t in dict.fromkeys(r.task for r in results.records)
        if any(r.task == t and r.status == "ok" and metric in r.metrics for r in results.records)
    ]
    methods = list(dict.fromkeys(r.method for r in results.records))
    if not tasks:
        return None
    figure = Figure(figsize=(max(4.0, 1.1 * len(tasks) + 1.5), 2.8), dpi=80)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / max(len(methods), 1)
    colours = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    for index, method in enumerate(methods):
        data, positions = [], []
        for position, task in enumerate(tasks):
            values = [
                r.metrics[metric]
                for r in results.records
                if r.task == task
                and r.method == method
                and r.status == "ok"
                and math.isfinite(r.metrics.get(metric, math.nan))
            ]
            if values:
                data.append(values)
                positions.append(position - 0.4 + width * (index + 0.5))
        if not data:
            continue
        parts = axes.boxplot(
            data,
            positions=positions,
            widths=width * 0.9,
            patch_artist=True,
            manage_ticks=False,
            showfliers=True,
        )
        for patch in parts["boxes"]:
            patch.set_facecolor(colours[index % len(colours)])
            patch.set_alpha(0.6)
        axes.plot([], [], color=colours[index % len(colours)], linewidth=6, alpha=0.6, label=method)
    notes = {t for t in tasks if results.tasks.get(t) is not None and results.tasks[t].note}
    axes.set_xticks(range(len(tasks)))
    axes.set_xticklabels([t + (" †" if t in notes else "") for t in tasks], rotation=20, fontsize=7)
    axes.set_ylabel(_METRIC_LABELS.get(metric, metric), fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(fontsize=6, loc="best")
    figure.tight_layout()
    return _png(figure)


_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
_PLANE_NAMES = {"R": "sagittal", "A": "coronal", "S": "axial"}
_WORLD = "RAS"  # world axes of the RAS+ affines medverse uses; positions are printed as x, y, z
# An Example's slices: (fixed voxel axis, (horizontal voxel axis, vertical voxel axis)) as drawn.
_SLICE_AXES = ((2, (0, 1)), (1, (0, 2)), (0, (1, 2)))


def orientation_letters(affine: Any) -> tuple[str, str, str]:
    """The anatomical direction each voxel axis points to as its index grows.

    Read from the affine with :func:`nibabel.orientations.aff2axcodes` (the closest of R/L, A/P,
    S/I for an oblique axis): ``("R", "A", "S")`` for a RAS+ affine, ``("L", "P", "S")`` for
    an LPS one.

    Raises:
        ValueError: the affine is not an invertible 4x4 matrix.

    Example:
        >>> orientation_letters(np.diag([-1.0, -1.0, 1.0, 1.0]))
        ('L', 'P', 'S')
    """
    from nibabel.orientations import aff2axcodes

    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {matrix.shape}")
    codes = aff2axcodes(matrix)
    if any(code is None for code in codes):
        raise ValueError(f"affine has a degenerate voxel axis (codes {codes}): {matrix.tolist()}")
    return (str(codes[0]), str(codes[1]), str(codes[2]))


@dataclass(frozen=True)
class PlaneView:
    """How one slice of an :class:`Example` is labelled when drawn (``slice.T``, origin lower).

    Attributes:
        name: ``"axial"``, ``"coronal"`` or ``"sagittal"``, from the direction of the fixed axis.
        position: world coordinate of the slice, e.g. ``"z = -12.0 mm"`` (RAS+ world axes).
        left, right, bottom, top: the anatomical letter at each panel edge.
    """

    name: str
    position: str
    left: str
    right: str
    bottom: str
    top: str

    @property
    def title(self) -> str:
        return f"{self.name}, {self.position}"


def plane_views(affine: Any, centre: Sequence[int]) -> tuple[PlaneView, PlaneView, PlaneView]:
    """Names, world positions and edge letters of the three slices of an :class:`Example`.

    The slices are ``volume[:, :, z]``, ``volume[:, y, :]`` and ``volume[x, :, :]`` at
    ``centre = (x, y, z)``, each drawn transposed with the origin at the bottom left, so the
    right edge lies toward the letter of the first remaining voxel axis and the top toward that
    of the second. Nothing is reoriented: an LPS volume shows ``L`` on the right.

    Example:
        >>> [v.title for v in plane_views(np.diag([2.0, 2.0, 2.0, 1.0]), (0, 0, 5))][0]
        'axial, z = 10.0 mm'
    """
    letters = orientation_letters(affine)
    world = np.asarray(affine, dtype=np.float64) @ np.array([*centre[:3], 1.0])
    views = []
    for fixed, (horizontal, vertical) in _SLICE_AXES:
        letter = letters[fixed]
        axis = _WORLD.index(letter if letter in _WORLD else _OPPOSITE[letter])
        views.append(
            PlaneView(
                name=_PLANE_NAMES[_WORLD[axis]],
                position=f"{'xyz'[axis]} = {world[axis]:.1f} mm",
                left=_OPPOSITE[letters[horizontal]],
                right=letters[horizontal],
                bottom=_OPPOSITE[letters[vertical]],
                top=letters[vertical],
            )
        )
    return (views[0], views[1], views[2])


def _aspects(spacing: Sequence[float]) -> list[float]:
    # imshow aspect of the transposed (axial, coronal, sagittal) slices: row over column spacing.
    sx, sy, sz = spacing
    return [sy / sx, sz / sx, sz / sy]


def _range(slices: Sequence[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([np.ravel(plane) for plane in slices])
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high) if high > low else float(low) + 1.0


def _example_affine(example: Example) -> np.ndarray:
    if example.affine is not None:
        return np.asarray(example.affine, dtype=np.float64)
    return np.diag([*example.spacing, 1.0])


def _draw_plane(axes: Any, plane: np.ndarray, view: PlaneView, aspect: float, **style: Any) -> Any:
    """One slice with its four edge letters; returns the image for a colour bar."""
    from matplotlib import patheffects

    image = axes.imshow(plane.T, origin="lower", aspect=aspect, interpolation="nearest", **style)
    outline = [patheffects.withStroke(linewidth=1.5, foreground="black")]
    for text, x, y, ha, va in (
        (view.left, 0.02, 0.5, "left", "center"),
        (view.right, 0.98, 0.5, "right", "center"),
        (view.bottom, 0.5, 0.02, "center", "bottom"),
        (view.top, 0.5, 0.98, "center", "top"),
    ):
        axes.text(
            x,
            y,
            text,
            transform=axes.transAxes,
            ha=ha,
            va=va,
            fontsize=7,
            fontweight="bold",
            color="white",
            path_effects=outline,
        )
    axes.set_xticks([])
    axes.set_yticks([])
    return image


def _label_values(example: Example) -> list[int]:
    slices = [*example.prediction_slices, *(example.reference_slices or ())]
    found = {int(v) for plane in slices for v in np.unique(np.rint(plane)) if v > 0}
    return sorted(found | {v for v in example.label_names if v > 0})


def _segmentation_figure(example: Example) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    views = plane_views(_example_affine(example), example.centre)
    aspects = _aspects(example.spacing)
    low, high = _range(example.image_slices)
    values = _label_values(example)
    names = {v: example.label_names.get(v) or f"label {v}" for v in values}
    single = len(values) <= 1
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9", "C7"]
    colours = {v: palette[i % len(palette)] for i, v in enumerate(values)}
    figure = Figure(figsize=(6.4, 3.0), dpi=80, layout="constrained")
    panels = figure.subplots(1, 3)
    for column, view in enumerate(views):
        axes = panels[column]
        _draw_plane(
            axes,
            example.image_slices[column],
            view,
            aspects[column],
            cmap="gray",
            vmin=low,
            vmax=high,
        )
        sources = [
            ("reference", example.reference_slices),
            ("prediction", example.prediction_slices),
        ]
        for source, slices in sources:
            if slices is None:
                continue
            plane = np.rint(slices[column])
            for value in values:
                mask = plane == value
                if not mask.any() or mask.all():
                    continue
                if single:
                    colour, style = ("lime" if source == "reference" else "red"), "solid"
                else:
                    colour = colours[value]
                    style = "solid" if source == "reference" else "dashed"
                axes.contour(
                    mask.T.astype(np.float32),
                    levels=[0.5],
                    colors=colour,
                    linewidths=0.9,
                    linestyles=style,
                )
        axes.set_title(view.title, fontsize=7)
    if single:
        name = names[values[0]] if values else "foreground"
        handles = [Line2D([], [], color="lime", label=f"reference: {name}")]
        handles.append(Line2D([], [], color="red", label=f"prediction: {name}"))
    else:
        handles = [Line2D([], [], color=colours[v], label=names[v]) for v in values]
        handles.append(Line2D([], [], color="0.4", label="reference (solid)"))
        handles.append(Line2D([], [], color="0.4", linestyle="dashed", label="prediction (dashed)"))
    if example.reference_slices is None:
        handles = [h for h in handles if not h.get_label().startswith("reference")]
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 6),
        fontsize=6,
        frameon=False,
    )
    figure.suptitle(
        f"{example.task} · {example.target} · {example.method}  (world RAS+ mm)", fontsize=7
    )
    return figure


def _image_figure(example: Example) -> Any:
    from matplotlib.figure import Figure

    views = plane_views(_example_affine(example), example.centre)
    aspects = _aspects(example.spacing)
    prediction = example.prediction_slices
    reference = example.reference_slices
    out_range = _range(reference if reference is not None else prediction)
    base, base_name = (
        (reference, "reference") if reference is not None else (example.image_slices, "input")
    )
    difference = tuple(p - b for p, b in zip(prediction, base, strict=True))
    limit = float(np.percentile(np.abs(np.concatenate([d.ravel() for d in difference])), 99.5))
    limit = limit if math.isfinite(limit) and limit > 0 else 1.0
    columns = [
        ("input", example.image_slices, "gray", _range(example.image_slices), "input intensity"),
        ("prediction", prediction, "gray", out_range, "output intensity"),
    ]
    if reference is not None:
        columns.append(("reference", reference, "gray", out_range, "output intensity"))
    columns.append(
        (f"prediction − {base_name}", difference, "RdBu_r", (-limit, limit), "difference")
    )
    figure = Figure(figsize=(1.7 * len(columns) + 0.4, 6.0), dpi=80, layout="constrained")
    grid = figure.subplots(3, len(columns), squeeze=False)
    for column, (title, slices, cmap, (vmin, vmax), label) in enumerate(columns):
        image = None
        for row, view in enumerate(views):
            axes = grid[row][column]
            image = _draw_plane(
                axes, slices[row], view, aspects[row], cmap=cmap, vmin=vmin, vmax=vmax
            )
            axes.set_title((f"{title}\n" if row == 0 else "") + view.title, fontsize=6)
        bar = figure.colorbar(
            image, ax=list(grid[:, column]), location="bottom", shrink=0.9, aspect=12
        )
        bar.set_label(label, fontsize=6)
        bar.ax.tick_params(labelsize=5)
    figure.suptitle(
        f"{example.task} · {example.target} · {example.method}  (world RAS+ mm)", fontsize=7
    )
    return figure


def build_example_figure(example: Example) -> Any:
    """The triplanar figure of one example (a :class:`matplotlib.figure.Figure`, not drawn yet).

    Every panel carries the anatomical letters at its edges (:func:`plane_views`, from the
    example's affine) and the slice's world position in its title. Segmentation: the image with
    reference and prediction contours, a legend naming each label (``"label N"`` when unnamed).
    Image tasks: input, prediction, reference (when there is one) and the difference
    prediction − reference (else prediction − input) on a blue-white-red map centred on 0, each
    column with its colour bar.

    Raises:
        ValueError: a degenerate affine or empty slices.
    """
    if example.family == "segmentation":
        return _segmentation_figure(example)
    return _image_figure(example)


def example_figure(example: Example) -> bytes:
    """:func:`build_example_figure` as PNG bytes."""
    return _png(build_example_figure(example))
