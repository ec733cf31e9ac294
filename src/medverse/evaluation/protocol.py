"""Held-out evaluation protocol: k contexts × n seeded draws per target, every seed recorded.

For each task and each target subject, ``num_draws`` context sets of ``num_contexts`` subjects are
drawn from the *other* subjects of the dataset. Every method (the model's predictor and the
baselines alike) runs on exactly the same draws and is scored with the same spacing-aware metrics
(:mod:`medverse.evaluation.metrics`). The seed of each draw is derived from ``(seed, task, target,
draw)`` with :class:`numpy.random.SeedSequence`, so it does not depend on the order of the loop,
on which tasks are selected, or on Python's hash salt.

A method is any callable::

    method(target_image, context_images, context_outputs, *, spacing, task_family) -> np.ndarray

with ``(X, Y, Z)`` arrays on the target grid. For segmentation the output is thresholded at 0.5
(as the model's masks are ``output > 0.5``). A callable may carry an attribute ``task_families``
(a tuple of family names); it is then only run on those families.

Bad input never stops the run: a case whose reference is missing or on another grid, a task the
dataset cannot provide, too few subjects for the context size or a method that raises is recorded
as ``status="failed"`` with the reason, logged, and the loop goes on.

The records it fills (:class:`TaskInfo`, :class:`EvaluationCase`, :class:`EvaluationDataset`,
:class:`CaseResult`, :class:`Example`, :class:`Results`, ``Method``) live in
:mod:`medverse.evaluation.records`; they are re-exported here for one release.

Example:
    >>> from medverse.evaluation import build_kit, KitConfig, evaluate, context_mean
    >>> kit = build_kit(KitConfig(num_subjects=3, spacing=6.0, shape=(24, 28, 24)))  # doctest: +SKIP
    >>> results = evaluate(kit, {"context_mean": context_mean}, num_contexts=2, num_draws=1)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
import traceback
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medverse.errors import InputError
from medverse.evaluation.metrics import score_image, score_segmentation
from medverse.evaluation.records import (
    Case,
    CaseResult,
    EvaluationCase,
    EvaluationDataset,
    Example,
    Method,
    Results,
    TaskInfo,
)
from medverse.types import TASK_FAMILIES

__all__ = [
    "Case",
    "EvaluationCase",
    "CaseResult",
    "EvaluationDataset",
    "Example",
    "Method",
    "Results",
    "TaskInfo",
    "draw_seed",
    "evaluate",
]

logger = logging.getLogger(__name__)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> dict[str, str]:
    try:
        import medverse

        medverse_version = str(getattr(medverse, "__version__", "")) or _version("medverse")
    except ImportError:  # pragma: no cover - we are inside medverse
        medverse_version = _version("medverse")
    versions = {"medverse": medverse_version}
    for package in ("numpy", "monai", "torch", "SimpleITK"):
        versions[package] = _version(package.lower() if package == "SimpleITK" else package)
    return versions


def draw_seed(seed: int, task: str, target: str, draw: int) -> int:
    """Seed of one context draw: a pure function of ``(seed, task, target, draw)``.

    Uses CRC-32 of the names (stable across runs, unlike ``hash``) fed to
    :class:`numpy.random.SeedSequence`; returns a 32-bit integer.
    """
    entropy = [int(seed), zlib.crc32(task.encode()), zlib.crc32(target.encode()), int(draw)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _check_case(case: EvaluationCase, info: TaskInfo) -> None:
    where = f"task {info.name!r}, subject {case.subject_id!r}"
    image = np.asarray(case.image)
    if image.ndim != 3:
        raise InputError(f"{where}: image must be 3-D (X, Y, Z), got shape {image.shape}.")
    if case.output is None:
        raise InputError(f"{where}: the reference output is missing.")
    output = np.asarray(case.output)
    if output.shape != image.shape:
        raise InputError(
            f"{where}: reference shape {output.shape} differs from the image grid {image.shape}; "
            "resample the reference to the image grid (nearest for masks) first."
        )
    if case.affine is not None and np.asarray(case.affine).shape != (4, 4):
        raise InputError(f"{where}: affine must be 4x4, got {np.asarray(case.affine).shape}.")
    if not np.isfinite(image).all() or not np.isfinite(output).all():
        raise InputError(f"{where}: image or reference has NaN or inf values.")


def _method_families(method: Method) -> tuple[str, ...]:
    return tuple(getattr(method, "task_families", TASK_FAMILIES))


def _score(
    info: TaskInfo, prediction: np.ndarray, case: EvaluationCase
) -> tuple[dict[str, float], str]:
    if info.family == "segmentation":
        scores = score_segmentation(
            prediction > 0.5,
            np.asarray(case.output) > 0.5,
            case.spacing,
            tolerance_mm=info.nsd_tolerance_mm,
        )
    else:
        reference = np.asarray(case.output, dtype=np.float64)
        data_range = info.data_range
        if data_range is None:
            data_range = float(reference.max() - reference.min())
        if not data_range > 0:
            raise InputError(
                f"task {info.name!r}, subject {case.subject_id!r}: the reference is constant, so "
                "PSNR/SSIM are undefined; set TaskInfo.data_range."
            )
        scores = score_image(prediction, reference, data_range)
    reason = str(scores.pop("reason"))
    return {name: float(value) for name, value in scores.items()}, reason


def _load_cases(
    dataset: EvaluationDataset, task: str, info: TaskInfo
) -> tuple[dict[str, EvaluationCase], dict[str, str]]:
    cases: dict[str, EvaluationCase] = {}
    problems: dict[str, str] = {}
    for subject in dataset.subject_ids:
        try:
            case = dataset.load_case(subject, task)
            _check_case(case, info)
        except (InputError, KeyError, FileNotFoundError, OSError, ValueError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
            problems[subject] = f"{type(error).__name__}: {message}"
            logger.warning("task %r, subject %r skipped: %s", task, subject, problems[subject])
            continue
        cases[subject] = case
    return cases, problems


def _context_grid_problem(target: EvaluationCase, contexts: Sequence[EvaluationCase]) -> str | None:
    for case in contexts:
        if np.asarray(case.image).shape != np.asarray(target.image).shape:
            return (
                f"context subject {case.subject_id!r} grid {np.asarray(case.image).shape} differs "
                f"from target {target.subject_id!r} grid {np.asarray(target.image).shape}; "
                "resample the dataset to one grid (medverse.io.align_to_target) first."
            )
    return None


def evaluate(
    dataset_or_kit: EvaluationDataset,
    methods: Mapping[str, Method],
    *,
    num_contexts: int = 4,
    num_draws: int = 8,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
    model_hash: str | None = None,
    num_examples: int = 2,
) -> Results:
    """Run every method on the same seeded context draws and score them.

    Args:
        dataset_or_kit: an :class:`EvaluationDataset` (e.g.
            :class:`~medverse.evaluation.kit_build.EvaluationKit` or
            :class:`~medverse.evaluation.kit_folder.KitFolder`).
        methods: name → callable (see the module docstring); e.g. the model's predictor wrapped
            as a function, ``multi_atlas``, ``context_mean``, ``identity``.
        num_contexts: context pairs per query (k).
        num_draws: random context sets per (target, task) (n).
        seed: base seed; the seed of each draw is :func:`draw_seed` ``(seed, task, target, draw)``.
        tasks: task names to run; ``None`` runs all of the dataset's tasks. A name the dataset
            does not provide is recorded as failed.
        progress: show a tqdm bar over (task, target, draw) with an ETA.
        model_hash: identifier of the model weights (e.g. their SHA-256), stored in the results.
        num_examples: targets per task whose first-draw arrays are kept for report figures.

    Returns:
        A :class:`Results`.

    Raises:
        InputError: for unusable settings (no methods, ``num_contexts < 1``, ``num_draws < 1``).
    """
    if not methods:
        raise InputError("methods is empty; pass e.g. {'context_mean': context_mean}.")
    if int(num_contexts) < 1 or int(num_draws) < 1:
        raise InputError(
            f"num_contexts and num_draws must be >= 1, got {num_contexts} and {num_draws}."
        )
    if not isinstance(dataset_or_kit, EvaluationDataset):
        raise InputError(
            f"dataset_or_kit must provide subject_ids, tasks and load_case(subject_id, task); got "
            f"{type(dataset_or_kit).__name__}. Use build_kit(...) or KitFolder(path)."
        )
    dataset = dataset_or_kit
    available = dict(dataset.tasks)
    task_names = list(available) if tasks is None else list(tasks)
    subject_ids = list(dataset.subject_ids)
    method_names = list(methods)

    describe = getattr(dataset, "describe", None)
    config: dict[str, Any] = {
        "num_contexts": int(num_contexts),
        "num_draws": int(num_draws),
        "seed": int(seed),
        "tasks": task_names,
        "methods": method_names,
        "subjects": subject_ids,
        "dataset": describe() if callable(describe) else type(dataset).__name__,
    }
    records: list[CaseResult] = []
    examples: list[Example] = []
    task_infos: dict[str, TaskInfo] = {}

    bar = _progress_bar(len(task_names) * len(subject_ids) * int(num_draws), progress)
    try:
        for task in task_names:
            if task not in available:
                reason = f"the dataset has no task {task!r}; available: {sorted(available)}"
                logger.warning(reason)
                for target in subject_ids:
                    records.extend(
                        _failed_draws(
                            task, "unknown", target, method_names, seed, num_draws, reason
                        )
                    )
                bar.update(len(subject_ids) * int(num_draws))
                continue
            info = available[task]
            task_infos[task] = info
            cases, problems = _load_cases(dataset, task, info)
            runnable = {
                name: method
                for name, method in methods.items()
                if info.family in _method_families(method)
            }
            example_targets = [subject for subject in subject_ids if subject in cases]
            example_targets = example_targets[: max(int(num_examples), 0)]
            for target in subject_ids:
                if target in problems:
                    reason = f"target unusable: {problems[target]}"
                    records.extend(
                        _failed_draws(
                            task, info.family, target, list(runnable), seed, num_draws, reason
                        )
                    )
                    bar.update(int(num_draws))
                    continue
                pool = [
                    subject for subject in subject_ids if subject != target and subject in cases
                ]
                if len(pool) < num_contexts:
                    reason = (
                        f"only {len(pool)} usable other subjects for task {task!r}, "
                        f"num_contexts={num_contexts}"
                    )
                    records.extend(
                        _failed_draws(
                            task, info.family, target, list(runnable), seed, num_draws, reason
                        )
                    )
                    bar.update(int(num_draws))
                    continue
                for draw in range(int(num_draws)):
                    seed_value = draw_seed(seed, task, target, draw)
                    bar.set_postfix_str(f"{task} {target} draw {draw}", refresh=False)
                    rng = np.random.default_rng(seed_value)
                    chosen = tuple(
                        pool[int(i)]
                        for i in rng.choice(len(pool), size=num_contexts, replace=False)
                    )
                    records.extend(
                        _run_draw(
                            info,
                            cases[target],
                            [cases[c] for c in chosen],
                            runnable,
                            draw,
                            seed_value,
                            chosen,
                            keep=draw == 0 and target in example_targets,
                            examples=examples,
                        )
                    )
                    bar.update(1)
    finally:
        bar.close()
    return Results(
        config=config,
        versions=_versions(),
        model_hash=model_hash,
        tasks=task_infos,
        records=records,
        examples=examples,
    )


def _failed_draws(
    task: str,
    family: str,
    target: str,
    methods: Sequence[str],
    seed: int,
    num_draws: int,
    reason: str,
) -> list[CaseResult]:
    """One failed record per (draw, method), so every target counts the same number of cases."""
    return [
        CaseResult(
            task,
            family,
            target,
            method,
            draw,
            draw_seed(seed, task, target, draw),
            (),
            "failed",
            reason,
        )
        for draw in range(int(num_draws))
        for method in methods
    ]


def _run_draw(
    info: TaskInfo,
    target: EvaluationCase,
    contexts: list[EvaluationCase],
    methods: Mapping[str, Method],
    draw: int,
    seed_value: int,
    chosen: tuple[str, ...],
    *,
    keep: bool,
    examples: list[Example],
) -> list[CaseResult]:
    records: list[CaseResult] = []
    grid_problem = _context_grid_problem(target, contexts)
    context_images = [np.asarray(case.image, dtype=np.float32) for case in contexts]
    context_outputs = [np.asarray(case.output, dtype=np.float32) for case in contexts]
    target_image = np.asarray(target.image, dtype=np.float32)
    for name, method in methods.items():
        record = CaseResult(
            info.name, info.family, target.subject_id, name, draw, seed_value, chosen, "ok"
        )
        if grid_problem is not None:
            record.status, record.reason = "failed", grid_problem
            records.append(record)
            continue
        start = time.perf_counter()
        try:
            output = method(
                target_image.copy(),
                [image.copy() for image in context_images],
                [output.copy() for output in context_outputs],
                spacing=tuple(target.spacing),
                task_family=info.family,
            )
            if hasattr(output, "detach"):
                output = output.detach().cpu().numpy()
            prediction = np.asarray(output, dtype=np.float32)
            if prediction.shape != target_image.shape:
                prediction = np.squeeze(prediction)
            if prediction.shape != target_image.shape:
                raise InputError(
                    f"method {name!r} returned shape {np.asarray(output).shape}, "
                    f"expected the target grid {target_image.shape}."
                )
            record.seconds = time.perf_counter() - start
            record.metrics, record.reason = _score(info, prediction, target)
        except Exception as error:  # a failing method must not stop the run
            record.seconds = time.perf_counter() - start
            record.status = "failed"
            record.reason = f"{type(error).__name__}: {error}"
            logger.warning(
                "task %r, target %r, draw %d, method %r failed: %s\n%s",
                info.name,
                target.subject_id,
                draw,
                name,
                record.reason,
                traceback.format_exc(),
            )
            records.append(record)
            continue
        records.append(record)
        if keep:
            examples.append(
                Example.from_volumes(
                    info,
                    target.subject_id,
                    name,
                    draw,
                    target_image,
                    np.asarray(target.output),
                    prediction,
                    target.spacing,
                    affine=target.affine,
                )
            )
    return records


class _NoBar:
    def update(self, count: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return _NoBar()
    return tqdm(total=total, desc="evaluate", unit="draw", dynamic_ncols=True)
