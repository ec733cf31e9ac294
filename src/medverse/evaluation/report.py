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

The numbers come from :mod:`medverse.evaluation.summary` and the figures from
:mod:`medverse.evaluation.figures`; this module re-exports their public names for one release.
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from medverse.evaluation.figures import (
    PlaneView,
    _box_plot,
    build_example_figure,
    example_figure,
    orientation_letters,
    plane_views,
)
from medverse.evaluation.metrics import IMAGE_METRICS, SEGMENTATION_METRICS
from medverse.evaluation.records import Results
from medverse.evaluation.summary import (
    _markdown,
    _summary_csv_rows,
    _summary_tables,
    summarize,
)
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
