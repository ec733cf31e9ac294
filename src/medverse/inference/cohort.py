"""Cohort inference: many targets, one model and one context set, resumable, over many processes.

``medverse predict --targets-from DIR|LIST.csv --output-dir OUT`` (and the same options under
``torchrun --nproc_per_node N -m medverse.predict``):

* **Targets.** A folder: every volume file in it (not recursive), case id = file name without
  its extension and without an nnU-Net channel suffix ``_0000`` (if any file has a channel
  suffix, only channel ``_0000`` files are used); output ``OUT/<case_id><ext>``. A CSV: a header
  with a ``target`` column and optionally an ``output`` column (relative target paths are read
  from the CSV's folder, relative outputs are placed in ``OUT``).
* **Resume.** A target whose output file exists is skipped (``overwrite=True`` redoes it), so a
  killed run, rerun, only does what is missing; outputs are written atomically, so a file that
  exists is complete.
* **Failures.** A target that fails is recorded with its reason and the others go on.
* **Sharding.** Targets are sorted by case id and rank ``r`` of ``W`` takes every ``W``-th one
  from ``r`` (deterministic, no communication). Each rank appends one row per finished target to
  its own log ``OUT/.medverse/summary-rank<r>.csv`` (flushed row by row), then, after a barrier,
  rank 0 merges the logs into ``OUT/summary.csv``: one row per target, the latest record wins; a
  skipped target keeps the numbers of the run that wrote its output.

``summary.csv`` columns: ``case``, ``target``, ``output``, ``status`` (``done``, ``exists``,
``failed``), ``seconds``, ``task``, then per label ``voxels_<label>`` and ``volume_ml_<label>``
(segmentation) or ``output_min``/``output_max``/``output_mean`` (image tasks),
``uncertainty_mean`` (mean voxel-wise std over ensemble draws, when an ensemble ran), ``error``.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medverse.errors import InputError, MedverseError
from medverse.files import atomic_path
from medverse.io.volume import READABLE_EXTENSIONS, WRITABLE_EXTENSIONS
from medverse.validation import check_not_an_input

__all__ = [
    "CohortItem",
    "discover_targets",
    "shard_items",
    "run_cohort",
    "merge_summary",
    "SUMMARY_NAME",
    "LOG_FOLDER",
]

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.csv"
LOG_FOLDER = ".medverse"
_FIRST_COLUMNS = ["case", "target", "output", "status", "seconds", "task"]
_LAST_COLUMNS = ["uncertainty_mean", "error", "finished"]


@dataclass(frozen=True)
class CohortItem:
    """One target of a cohort and where its output goes."""

    case: str
    target: Path
    output: Path


def _split_extension(name: str) -> tuple[str, str]:
    for ext in sorted(READABLE_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return name, ""


def _output_extension(ext: str) -> str:
    return ext if ext in WRITABLE_EXTENSIONS and ext not in (".nhdr", ".mhd") else ".nii.gz"


def discover_targets(source: Path, output_dir: Path) -> list[CohortItem]:
    """The cohort's targets from a folder or a CSV, sorted by case id.

    Raises:
        InputError: no such folder/file, an empty folder or CSV, a CSV without a ``target``
            column, or two targets with the same output.
    """
    source = Path(source)
    if source.is_dir():
        found = []
        for path in sorted(source.iterdir()):
            stem, ext = _split_extension(path.name)
            if path.is_file() and ext and not path.name.startswith("."):
                found.append((stem, ext, path))
        if not found:
            raise InputError(
                f"'{source}': no volume files ({', '.join(READABLE_EXTENSIONS)}) in this folder"
            )
        channels = [f for f in found if len(f[0]) > 5 and f[0][-5] == "_" and f[0][-4:].isdigit()]
        if channels:  # nnU-Net imagesTs layout: CASE_0000.nii.gz (first channel only)
            found = [
                (stem[:-5], ext, path) for stem, ext, path in channels if stem.endswith("_0000")
            ]
        items = [
            CohortItem(stem, path, output_dir / f"{stem}{_output_extension(ext)}")
            for stem, ext, path in found
        ]
    elif source.is_file() and source.suffix.lower() == ".csv":
        items = _read_target_csv(source, output_dir)
    elif source.exists():
        raise InputError(f"'{source}': --targets-from takes a folder of volumes or a .csv list")
    else:
        raise InputError(f"'{source}': no such folder or CSV file")
    items.sort(key=lambda item: item.case)
    outputs: dict[Path, str] = {}
    targets = [item.target for item in items]
    for item in items:
        check_not_an_input(item.output, targets, f"the output of target '{item.target}'")
        if item.output in outputs:
            raise InputError(
                f"targets '{outputs[item.output]}' and '{item.case}' would both write "
                f"'{item.output}'; give distinct outputs"
            )
        outputs[item.output] = item.case
    return items


def _read_target_csv(path: Path, output_dir: Path) -> list[CohortItem]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "target" not in columns:
            raise InputError(
                f"'{path}': expected a header with a 'target' column (and optionally 'output'), "
                f"got {reader.fieldnames}"
            )
        rows = [
            {k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader
        ]
    items = []
    for number, row in enumerate(rows, start=2):
        if not row.get("target"):
            raise InputError(f"'{path}' line {number}: empty target")
        target = Path(row["target"]).expanduser()
        if not target.is_absolute():
            target = path.parent / target
        stem, ext = _split_extension(target.name)
        if row.get("output"):
            output = Path(row["output"]).expanduser()
            output = output if output.is_absolute() else output_dir / output
            case = _split_extension(output.name)[0]
        else:
            case = stem[:-5] if stem.endswith("_0000") else stem
            output = output_dir / f"{case}{_output_extension(ext)}"
        items.append(CohortItem(case, target, output))
    if not items:
        raise InputError(f"'{path}': no targets listed")
    return items


def shard_items(items: Sequence[CohortItem], rank: int, world_size: int) -> list[CohortItem]:
    """Rank ``rank``'s share: items ``rank, rank + W, rank + 2W, ...`` (deterministic).

    Example:
        >>> [i.case for i in shard_items([CohortItem(c, Path(c), Path(c)) for c in "abcde"], 1, 2)]
        ['b', 'd']
    """
    return list(items[rank::world_size])


def _measure(result: Any) -> dict[str, Any]:
    """The summary numbers of one prediction."""
    row: dict[str, Any] = {"task": result.task}
    if result.task == "segmentation":
        voxel_ml = abs(float(np.linalg.det(result.affine[:3, :3]))) / 1000.0
        for label in result.labels:
            count = int((result.array == label).sum())
            row[f"voxels_{label}"] = count
            row[f"volume_ml_{label}"] = round(count * voxel_ml, 4)
    else:
        row.update(
            output_min=float(result.array.min()),
            output_max=float(result.array.max()),
            output_mean=float(result.array.mean()),
        )
    if result.std is not None:
        row["uncertainty_mean"] = float(result.std.max(axis=0).mean())
    return row


class _RowLog:
    """Append-only CSV of finished targets (one per rank), flushed after every row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: dict[str, Any]) -> None:
        # each row follows its own column line, so runs with other columns can share the file
        keys = list(row)
        with open(self.path, "a", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["#columns", *keys])
            writer.writerow(["", *(row[k] for k in keys)])
            fh.flush()


def _read_logs(folder: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("summary-rank*.csv")):
        with open(path, newline="") as fh:
            keys: list[str] | None = None
            for record in csv.reader(fh):
                if record and record[0] == "#columns":
                    keys = record[1:]
                elif keys is not None and len(record) == len(keys) + 1:
                    rows.append(dict(zip(keys, record[1:])))
                    keys = None
    return rows


def run_cohort(
    predict: Callable[[Path], Any],
    items: Sequence[CohortItem],
    output_dir: Path,
    *,
    save: Callable[[Any, Path], Any],
    rank: int = 0,
    world_size: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Predict this rank's share of ``items``; returns its rows (also appended to its log).

    Args:
        predict: ``target path -> Prediction`` (the model and contexts are already loaded).
        items: every target of the cohort (this function takes the rank's share).
        output_dir: ``OUT`` (holds the logs and the summary).
        save: ``(prediction, output path) -> None``, writes the output(s).
        rank, world_size: this process in the ``torchrun`` world.
        overwrite: redo targets whose output exists.
        progress: a progress bar with ETA on stderr (rank 0's position first).
        echo: where one line per failure goes (stderr), besides the summary.
    """
    mine = shard_items(items, rank, world_size)
    row_log = _RowLog(output_dir / LOG_FOLDER / f"summary-rank{rank}.csv")
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(mine),
            desc=f"rank {rank}/{world_size}" if world_size > 1 else "targets",
            unit="target",
            position=rank,
            leave=True,
        )
    for item in mine:
        row: dict[str, Any] = {
            "case": item.case,
            "target": str(item.target),
            "output": str(item.output),
        }
        start = time.perf_counter()
        if item.output.exists() and not overwrite:
            row.update(status="exists")
        else:
            try:
                result = predict(item.target)
                save(result, item.output)
                row.update(status="done", **_measure(result))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:  # one failing target must not stop the cohort
                reason = (
                    str(error)
                    if isinstance(error, MedverseError | OSError)
                    else (f"{type(error).__name__}: {error}")
                )
                row.update(status="failed", error=reason)
                if echo is not None:
                    echo(f"failed: {item.target}: {reason}")
                log.debug("target %s failed", item.target, exc_info=True)
        row["seconds"] = round(time.perf_counter() - start, 3)
        row["finished"] = f"{time.time():.6f}"
        row_log.append(row)
        rows.append(row)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def merge_summary(output_dir: Path, items: Iterable[CohortItem]) -> tuple[Path, dict[str, int]]:
    """Merge every rank's log into ``OUT/summary.csv`` (one row per target, in case order).

    The latest record of a target wins; a target recorded as ``exists`` takes the measurements
    of its latest ``done`` record (the run that wrote its output). Returns the path and the count
    of each status.
    """
    latest: dict[str, dict[str, str]] = {}
    done: dict[str, dict[str, str]] = {}
    for row in sorted(_read_logs(output_dir / LOG_FOLDER), key=_finished):
        latest[row["output"]] = row
        if row.get("status") == "done":
            done[row["output"]] = row
    merged: list[dict[str, str]] = []
    for item in items:
        row = latest.get(str(item.output))
        if row is None:  # never attempted (e.g. a rank was killed): report it
            row = {"case": item.case, "target": str(item.target), "output": str(item.output),
                   "status": "missing"}  # fmt: skip
        elif row.get("status") == "exists" and str(item.output) in done:
            row = {**done[str(item.output)], "status": "exists", "seconds": row.get("seconds", "")}
        merged.append(row)
    columns = list(_FIRST_COLUMNS)
    for row in merged:
        for key in row:
            if key not in columns and key not in _LAST_COLUMNS:
                columns.append(key)
    columns += [c for c in _LAST_COLUMNS if c != "finished"]
    summary = output_dir / SUMMARY_NAME
    with atomic_path(summary) as temporary, open(temporary, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in merged:
            writer.writerow({k: row.get(k, "") for k in columns})
    counts: dict[str, int] = {}
    for row in merged:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return summary, counts


def _finished(row: dict[str, str]) -> float:
    try:
        return float(row.get("finished", "") or 0.0)
    except ValueError:
        return -math.inf
