"""Evaluation harness: metrics, held-out protocol, baselines, reports and a real-anatomy kit.

The model enters only as a callable ``method(target_image, context_images, context_outputs, *,
spacing, task_family) -> array``; everything here is model-independent.

Example:
    >>> from medverse.evaluation import KitConfig, build_kit, evaluate, context_mean, write_report
    >>> kit = build_kit(KitConfig(num_subjects=3, spacing=6.0, shape=(28, 34, 28)))  # doctest: +SKIP
    >>> results = evaluate(kit, {"context_mean": context_mean}, num_contexts=2, num_draws=2)  # doctest: +SKIP
    >>> write_report(results, "report")  # doctest: +SKIP
"""

from __future__ import annotations

from medverse.evaluation.baselines import (
    clear_registration_cache,
    context_mean,
    identity,
    joint_label_fusion,
    multi_atlas,
    multi_atlas_sitk,
    nl_means,
    register_to_target,
)
from medverse.evaluation.kit import (
    AAL_NOTE,
    KIT_SEED_NAMESPACE,
    KIT_TASKS,
    EvaluationKit,
    KitConfig,
    KitFolder,
    build_kit,
    load_kit,
    write_kit,
)
from medverse.evaluation.metrics import (
    dice,
    empty_reason,
    hd95,
    mae,
    nsd,
    psnr,
    score_image,
    score_segmentation,
    ssim,
)
from medverse.evaluation.protocol import (
    Case,
    CaseResult,
    EvaluationDataset,
    Results,
    TaskInfo,
    draw_seed,
    evaluate,
)
from medverse.evaluation.report import summarize, write_report

__all__ = [
    "AAL_NOTE",
    "KIT_SEED_NAMESPACE",
    "KIT_TASKS",
    "Case",
    "CaseResult",
    "EvaluationDataset",
    "EvaluationKit",
    "KitConfig",
    "KitFolder",
    "Results",
    "TaskInfo",
    "build_kit",
    "clear_registration_cache",
    "context_mean",
    "dice",
    "draw_seed",
    "empty_reason",
    "evaluate",
    "hd95",
    "identity",
    "joint_label_fusion",
    "load_kit",
    "mae",
    "multi_atlas",
    "multi_atlas_sitk",
    "nl_means",
    "nsd",
    "psnr",
    "register_to_target",
    "score_image",
    "score_segmentation",
    "ssim",
    "summarize",
    "write_kit",
    "write_report",
]
