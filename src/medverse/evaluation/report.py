"""Write evaluation results: per-case CSV/JSON, summary tables, box plots, figures, index.html.

Everything goes to one folder that opens without a server (relative links only)::

    out_dir/
      index.html        summary, notes, failures, box plots, figures
      cases.csv         one row per (task, target, draw, method); deterministic
      cases.json        the same rows plus configuration, seeds, versions, model hash; deterministic
      summary.md        mean ± sd per task and method, n, failed and empty cases by reason
      summary.csv       the same numbers, machine-readable; deterministic
      timings.csv       method wall time per case (varies from run to run; kept apart on purpose)
      figures/*.png     box plots and triplanar example figures (small PNGs)

No file carries a timestamp, so two runs with the same seeds give byte-identical CSV/JSON files.
Every file is written to a temporary name in the same folder and moved into place (atomic).
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medverse.evaluation.metrics import IMAGE_METRICS, SEGMENTATION_METRICS
from medverse.evaluation.records import CaseResult, Example, Results
from medverse.files import atomic_write_bytes, atomic_write_text

__all__ = [
    "PlaneView",
    "build_example_figure",
    "example_figure",
    "orientation_letters",
    "plane_views",
    "summarize",
    "write_report",
]

logger = logging.getLogger(__name__)

_DECIMALS = 6
_METRIC_LABELS = {
    "dice": "Dice",
    "hd95": "HD95 (mm)",
    "nsd": "NSD",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "mae": "MAE",
}
_CASE_COLUMNS = (
    "task",
    "family",
    "target",
    "method",
    "draw",
    "draw_seed",
    "contexts",
    "status",
    "reason",
    *SEGMENTATION_METRICS,
    *IMAGE_METRICS,
)


# ----------------------------------------------------------------------------------- writing


def _number(value: Any) -> Any:
    """Round floats for output; NaN/inf become None (JSON null, empty CSV cell)."""
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return None
        return round(value, _DECIMALS)
    return value


def _csv_text(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {key: "" if _number(row.get(key)) is None else _number(row.get(key)) for key in columns}
        )
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    return _number(value)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


# ----------------------------------------------------------------------------------- summary


def _metrics_for(family: str) -> tuple[str, ...]:
    return SEGMENTATION_METRICS if family == "segmentation" else IMAGE_METRICS


def summarize(results: Results) -> list[dict[str, Any]]:
    """Mean ± sd of every metric per (task, method), with counts.

    Returns:
        One dict per (task, method) in first-seen order: ``task``, ``family``, ``method``,
        ``cases`` (records), ``failed``, ``<metric>_mean``, ``<metric>_sd`` (sample sd, ddof=1),
        ``<metric>_n`` (finite values), ``reasons`` (reason → count, failures and empty cases),
        ``note`` (the task's note).
    """
    groups: dict[tuple[str, str], list[CaseResult]] = {}
    for record in results.records:
        groups.setdefault((record.task, record.method), []).append(record)
    rows = []
    for (task, method), records in groups.items():
        family = records[0].family
        info = results.tasks.get(task)
        row: dict[str, Any] = {
            "task": task,
            "family": family,
            "method": method,
            "cases": len(records),
            "failed": sum(record.status == "failed" for record in records),
            "note": info.note if info is not None else "",
        }
        for name in _metrics_for(family):
            values = np.array(
                [record.metrics.get(name, math.nan) for record in records if record.status == "ok"],
                dtype=np.float64,
            )
            finite = values[np.isfinite(values)]
            row[f"{name}_n"] = int(finite.size)
            row[f"{name}_mean"] = float(finite.mean()) if finite.size else math.nan
            row[f"{name}_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        row["reasons"] = dict(sorted(Counter(r.reason for r in records if r.reason).items()))
        rows.append(row)
    return rows


def _mean_sd(row: dict[str, Any], name: str) -> str:
    mean, sd = row[f"{name}_mean"], row[f"{name}_sd"]
    if not math.isfinite(mean):
        return "–"
    digits = 2 if name in ("hd95", "psnr") else 4 if name == "mae" else 3
    text = f"{mean:.{digits}f}"
    return text + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def _reason_text(reasons: dict[str, int]) -> str:
    return "; ".join(f"{count}× {reason}" for reason, count in reasons.items())


def _nsd_label(rows: list[dict[str, Any]], tasks: dict[str, Any]) -> str:
    tolerances = sorted({tasks[r["task"]].nsd_tolerance_mm for r in rows if r["task"] in tasks})
    if len(tolerances) == 1:
        return f"NSD@{tolerances[0]:g}mm"
    return (
        "NSD (tolerance per task: "
        + ", ".join(f"{name} {info.nsd_tolerance_mm:g} mm" for name, info in tasks.items())
        + ")"
    )


def _summary_tables(
    rows: list[dict[str, Any]], tasks: dict[str, Any]
) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = []
    for title, families, metrics in (
        ("Segmentation", ("segmentation",), SEGMENTATION_METRICS),
        ("Transformation and enhancement", ("transformation", "enhancement"), IMAGE_METRICS),
        ("Tasks the dataset could not provide", ("unknown",), ()),
    ):
        selected = [row for row in rows if row["family"] in families]
        if not selected:
            continue
        labels = [_nsd_label(selected, tasks) if m == "nsd" else _METRIC_LABELS[m] for m in metrics]
        header = ["task", "method", "n", *labels, "failed", "empty / failed (named)", "note"]
        body = []
        for row in selected:
            n = max((row[f"{m}_n"] for m in metrics), default=0)
            body.append(
                [
                    row["task"],
                    row["method"],
                    str(n),
                    *(_mean_sd(row, m) for m in metrics),
                    str(row["failed"]),
                    _reason_text(row["reasons"]),
                    row["note"],
                ]
            )
        tables.append((title, header, body))
    return tables


def _markdown(results: Results, rows: list[dict[str, Any]]) -> str:
    config = results.config
    lines = [
        "# Evaluation summary",
        "",
        f"- contexts per query: {config.get('num_contexts')}, draws per target: "
        f"{config.get('num_draws')}, seed: {config.get('seed')}",
        f"- model hash: {results.model_hash or 'not given'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in results.versions.items()),
        "- mean ± sd over all (target, draw) cases with a defined value; n = number of such cases.",
        "",
    ]
    for title, header, body in _summary_tables(rows, results.tasks):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for cells in body:
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _summary_csv_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    columns = ["task", "family", "method", "cases", "failed"]
    for name in (*SEGMENTATION_METRICS, *IMAGE_METRICS):
        columns += [f"{name}_mean", f"{name}_sd", f"{name}_n"]
    columns += ["reasons", "note"]
    flat = []
    for row in rows:
        item = dict(row)
        item["reasons"] = _reason_text(row["reasons"])
        flat.append(item)
    return flat, columns


# ----------------------------------------------------------------------------------- figures


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


# -------------------------------------------------------------------------------------- html

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:0.85em;margin-bottom:1em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.note{font-size:0.8em;color:#8a4b00;max-width:28em}
.note{background:#fff4e0;border-left:4px solid #e69500;padding:4px 8px;font-size:0.9em}
img{border:1px solid #ddd;margin:2px} code{font-size:0.9em}
"""


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    rows = []
    for cells in body:
        tds = [f"<td>{html.escape(cell)}</td>" for cell in cells[:-1]]
        tds.append(f'<td class="note">{html.escape(cells[-1])}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _html(
    results: Results,
    rows: list[dict[str, Any]],
    box_plots: list[tuple[str, str]],
    figures: dict[str, list[str]],
) -> str:
    config = results.config
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>medverse evaluation</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>medverse evaluation</h1>",
        "<ul>",
        f"<li>contexts per query: {config.get('num_contexts')}; draws per target: "
        f"{config.get('num_draws')}; seed: {config.get('seed')}; methods: "
        f"{html.escape(', '.join(config.get('methods', [])))}</li>",
        f"<li>model hash: <code>{html.escape(str(results.model_hash or 'not given'))}</code></li>",
        "<li>versions: "
        + html.escape(", ".join(f"{k} {v}" for k, v in results.versions.items()))
        + "</li>",
        "<li>files: <a href='cases.csv'>cases.csv</a> · <a href='cases.json'>cases.json</a> · "
        "<a href='summary.md'>summary.md</a> · <a href='summary.csv'>summary.csv</a> · "
        "<a href='timings.csv'>timings.csv</a></li>",
        "</ul>",
        "<p>Mean ± sd over all (target, draw) cases with a defined value; n counts them. "
        "Failed and empty-mask cases are counted by reason in the table.</p>",
    ]
    for title, header, body in _summary_tables(rows, results.tasks):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(header, body)]
    failed = results.failed()
    if failed:
        parts.append(f"<h2>Failed cases ({len(failed)})</h2><ul>")
        counts = Counter((r.task, r.method, r.reason) for r in failed)
        for (task, method, reason), count in sorted(counts.items()):
            parts.append(
                f"<li>{count}× <b>{html.escape(task)}</b> / {html.escape(method)}: {html.escape(reason)}</li>"
            )
        parts.append("</ul>")
    if box_plots:
        parts.append("<h2>Distributions</h2><p>† the task carries a note (see its section).</p>")
        for metric, name in box_plots:
            parts.append(
                f"<a href='figures/{name}'><img src='figures/{name}' alt='{html.escape(metric)}'></a>"
            )
    for task in dict.fromkeys(r.task for r in results.records):
        info = results.tasks.get(task)
        parts.append(f"<h2 id='{html.escape(_safe_name(task))}'>{html.escape(task)}</h2>")
        if info is None:
            parts.append("<p>Not provided by the dataset: every case failed (see above).</p>")
        if info is not None and info.description:
            parts.append(f"<p>{html.escape(info.family)}: {html.escape(info.description)}</p>")
        if info is not None and info.note:
            parts.append(f"<p class='note'>Note: {html.escape(info.note)}</p>")
        for name in figures.get(task, []):
            parts.append(
                f"<a href='figures/{name}'><img src='figures/{name}' alt='{html.escape(name)}'></a>"
            )
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ public


def write_report(results: Results, out_dir: str | os.PathLike[str]) -> Path:
    """Write the report folder and return the path of its ``index.html``.

    Args:
        results: what :func:`~medverse.evaluation.protocol.evaluate` returned.
        out_dir: destination folder (created if needed; files in it are replaced).

    Returns:
        ``out_dir / "index.html"``.
    """
    root = Path(out_dir)
    figure_dir = root / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)

    rows = [record.as_row() for record in results.records]
    atomic_write_text(root / "cases.csv", _csv_text(rows, _CASE_COLUMNS))
    document = {
        "config": results.config,
        "versions": results.versions,
        "model_hash": results.model_hash,
        "tasks": {name: asdict(info) for name, info in results.tasks.items()},
        "cases": rows,
    }
    atomic_write_text(
        root / "cases.json",
        json.dumps(_json_safe(document), indent=1, sort_keys=True, allow_nan=False) + "\n",
    )
    timing_rows = [
        {
            "task": r.task,
            "target": r.target,
            "method": r.method,
            "draw": r.draw,
            "seconds": r.seconds,
        }
        for r in results.records
    ]
    atomic_write_text(
        root / "timings.csv",
        _csv_text(timing_rows, ("task", "target", "method", "draw", "seconds")),
    )

    summary = summarize(results)
    atomic_write_text(root / "summary.md", _markdown(results, summary))
    flat, columns = _summary_csv_rows(summary)
    atomic_write_text(root / "summary.csv", _csv_text(flat, columns))

    box_plots = []
    for metric in (*SEGMENTATION_METRICS, *IMAGE_METRICS):
        data = _box_plot(results, metric)
        if data is not None:
            name = f"box_{metric}.png"
            atomic_write_bytes(figure_dir / name, data)
            box_plots.append((metric, name))

    figures: dict[str, list[str]] = {}
    for example in results.examples:
        name = (
            _safe_name(f"{example.task}_{example.target}_{example.method}_draw{example.draw}")
            + ".png"
        )
        try:
            atomic_write_bytes(figure_dir / name, example_figure(example))
        except (ValueError, IndexError) as error:  # a degenerate volume must not stop the report
            logger.warning("figure %s skipped: %s", name, error)
            continue
        figures.setdefault(example.task, []).append(name)

    index = root / "index.html"
    atomic_write_text(index, _html(results, summary, box_plots, figures))
    return index
