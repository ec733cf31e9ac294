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

from medverse import lazy_getattr

__all__ = [
    "AAL_NOTE",
    "KIT_SEED_NAMESPACE",
    "KIT_TASKS",
    "Case",
    "CaseResult",
    "EvaluationCase",
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

_LAZY = {
    "clear_registration_cache": "medverse.evaluation.baselines",
    "context_mean": "medverse.evaluation.baselines",
    "identity": "medverse.evaluation.baselines",
    "joint_label_fusion": "medverse.evaluation.baselines",
    "multi_atlas": "medverse.evaluation.baselines",
    "multi_atlas_sitk": "medverse.evaluation.baselines",
    "nl_means": "medverse.evaluation.baselines",
    "register_to_target": "medverse.evaluation.baselines",
    "AAL_NOTE": "medverse.evaluation.kit_config",
    "KIT_SEED_NAMESPACE": "medverse.evaluation.kit_config",
    "KIT_TASKS": "medverse.evaluation.kit_config",
    "EvaluationKit": "medverse.evaluation.kit_build",
    "KitConfig": "medverse.evaluation.kit_config",
    "KitFolder": "medverse.evaluation.kit_folder",
    "build_kit": "medverse.evaluation.kit_build",
    "load_kit": "medverse.evaluation.kit_folder",
    "write_kit": "medverse.evaluation.kit_folder",
    "dice": "medverse.evaluation.metrics",
    "empty_reason": "medverse.evaluation.metrics",
    "hd95": "medverse.evaluation.metrics",
    "mae": "medverse.evaluation.metrics",
    "nsd": "medverse.evaluation.metrics",
    "psnr": "medverse.evaluation.metrics",
    "score_image": "medverse.evaluation.metrics",
    "score_segmentation": "medverse.evaluation.metrics",
    "ssim": "medverse.evaluation.metrics",
    "draw_seed": "medverse.evaluation.protocol",
    "evaluate": "medverse.evaluation.protocol",
    "Case": "medverse.evaluation.records",
    "EvaluationCase": "medverse.evaluation.records",
    "CaseResult": "medverse.evaluation.records",
    "EvaluationDataset": "medverse.evaluation.records",
    "Results": "medverse.evaluation.records",
    "TaskInfo": "medverse.evaluation.records",
    "summarize": "medverse.evaluation.summary",
    "write_report": "medverse.evaluation.report",
}


__getattr__ = lazy_getattr(__name__, _LAZY)
