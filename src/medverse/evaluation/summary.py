"""The numbers of an evaluation report: per (task, method) statistics and the tables made of them.

:func:`summarize` gives mean ± sd, counts and failure reasons per task and method;
:mod:`medverse.evaluation.report` writes them as ``summary.md``, ``summary.csv`` and the tables of
``index.html``. Pure: no files, no matplotlib.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from medverse.evaluation.metrics import IMAGE_METRICS, SEGMENTATION_METRICS
from medverse.evaluation.records import CaseResult, Results

__all__ = ["summarize"]

_METRIC_LABELS = {
    "dice": "Dice",
    "hd95": "HD95 (mm)",
    "nsd": "NSD",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "mae": "MAE",
}


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
