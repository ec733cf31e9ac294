"""``medverse demo``: the bundled model on a real-anatomy case built from packaged data.

The case comes from the evaluation kit's construction (:mod:`medverse.evaluation.kit_build`: the MNI
ICBM152 2009 template and AAL3, deformed, with their own contrasts; never used for training) with
its own seed. It is written to files and run through the same path as ``medverse predict``:
one multi-label segmentation call (several structures from one label map per context) and one
denoising call. Dice and PSNR are printed against the references, next to the model-free
baselines (the context-mask mean; the noisy input itself), with the time taken.

Example:
    >>> result = run_demo("demo_out", DemoConfig(num_contexts=2, spacing=6.0))  # doctest: +SKIP
    >>> sorted(result.metrics)  # doctest: +SKIP
    ['denoise_gaussian', 'hippocampus', 'putamen', 'thalamus', 'white_matter']
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medverse.errors import InputError
from medverse.validation import check_option

__all__ = ["DEMO_STRUCTURES", "DemoConfig", "DemoResult", "run_demo"]

#: Label value -> kit task of the multi-label segmentation (AAL structures drawn over white matter).
DEMO_STRUCTURES = {1: "white_matter", 2: "thalamus_aal", 3: "putamen_aal", 4: "hippocampus_aal"}
_LABEL_NAMES = {value: task.removesuffix("_aal") for value, task in DEMO_STRUCTURES.items()}
_ENHANCEMENT = "denoise_gaussian"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo case.

    Args:
        num_contexts: context subjects (each with its label map and its noisy/clean pair).
        spacing: isotropic voxel size in mm; the grid covers the same head at any spacing
            (3.5 mm: 55 x 64 x 55 voxels, one 64^3 window of ``medverse-small``).
        seed: kit seed of the demo subjects (the evaluation reports use seed 0).
        model: registered name or weight path.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    num_contexts: int = 4
    spacing: float = 3.5
    seed: int = 2026
    model: str = "medverse-small"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.num_contexts, bool) or not 1 <= int(self.num_contexts) <= 16:
            raise InputError(f"num_contexts must be in 1..16, got {self.num_contexts!r}")
        if not (math.isfinite(self.spacing) and 1.0 <= self.spacing <= 12.0):
            raise InputError(f"spacing must be in [1, 12] mm, got {self.spacing!r}")
        check_option(self.device, ("cpu", "cuda", "auto"), "device")

    @property
    def shape(self) -> tuple[int, int, int]:
        from medverse.evaluation.kit_config import kit_shape

        return kit_shape(self.spacing)


@dataclass
class DemoResult:
    """What the demo measured and wrote."""

    out_dir: Path
    metrics: dict[str, dict[str, float]]
    seconds: dict[str, float]
    files: list[Path]


def _label_map(masks: dict[str, np.ndarray]) -> np.ndarray:
    out = np.zeros(masks["brain_mask"].shape, np.uint8)
    for value, task in DEMO_STRUCTURES.items():  # later structures are drawn over earlier ones
        out[masks[task] > 0] = value
    return out


def _name(task: str) -> str:
    return task.removesuffix("_aal")


def _write_inputs(
    kit: Any, root: Path, subject_ids: list[str], labels: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Target and contexts as files: nnU-Net layout for the masks, file pairs for denoising."""
    from medverse.files import atomic_write_text
    from medverse.io.volume import write_label_names, write_volume

    target_id, context_ids = subject_ids[0], subject_ids[1:]
    seg = root / "inputs" / "segmentation_contexts"
    (seg / "imagesTr").mkdir(parents=True, exist_ok=True)
    (seg / "labelsTr").mkdir(parents=True, exist_ok=True)
    dataset = {
        "name": "medverse demo contexts",
        "channel_names": {"0": "T1"},
        "labels": {"background": 0, **{_name(t): v for v, t in DEMO_STRUCTURES.items()}},
        "numTraining": len(subject_ids) - 1,
        "file_ending": ".nii.gz",
    }
    atomic_write_text(seg / "dataset.json", json.dumps(dataset, indent=1) + "\n")
    den = root / "inputs" / "denoising_contexts"
    den.mkdir(parents=True, exist_ok=True)
    (root / "reference").mkdir(exist_ok=True)
    affine = kit.affine
    pairs = []
    for sid in context_ids:
        subject = kit.subjects[sid]
        write_volume(seg / "imagesTr" / f"{sid}_0000.nii.gz", subject.image, affine)
        write_volume(seg / "labelsTr" / f"{sid}.nii.gz", labels[sid], affine)
        noisy, clean = den / f"{sid}_noisy.nii.gz", den / f"{sid}_clean.nii.gz"
        write_volume(noisy, subject.inputs[_ENHANCEMENT], affine)
        write_volume(clean, subject.clean, affine)
        pairs.append((noisy, clean))
    target = kit.subjects[target_id]
    paths = {
        "target": write_volume(root / "inputs" / "target.nii.gz", target.image, affine),
        "target_noisy": write_volume(
            root / "inputs" / "target_noisy.nii.gz", target.inputs[_ENHANCEMENT], affine
        ),
        "reference_labels": write_volume(
            root / "reference" / "labels.nii.gz", labels[target_id], affine
        ),
        "reference_label_names": write_label_names(
            root / "reference" / "labels.nii.gz", list(DEMO_STRUCTURES), _LABEL_NAMES
        ),
        "reference_clean": write_volume(root / "reference" / "clean.nii.gz", target.clean, affine),
    }
    return {"paths": paths, "seg_contexts": seg, "den_pairs": pairs}


def _figures(
    kit: Any, target_id: str, reference: np.ndarray, prediction: np.ndarray, denoised: np.ndarray
) -> dict:
    from medverse.evaluation.figures import example_figure
    from medverse.evaluation.records import Example, TaskInfo

    subject = kit.subjects[target_id]
    tasks = kit.tasks
    every_label = TaskInfo("segmentation", "segmentation", "every demo structure in one call")
    example = Example.from_volumes(
        every_label,
        target_id,
        "medverse",
        0,
        subject.image,
        reference,
        prediction,
        kit.spacing,
        affine=kit.affine,
        label_names=_LABEL_NAMES,
    )
    figures = {"segmentation.png": example_figure(example)}
    for value, task in DEMO_STRUCTURES.items():
        example = Example.from_volumes(
            tasks[task],
            target_id,
            "medverse",
            0,
            subject.image,
            reference == value,
            prediction == value,
            kit.spacing,
            affine=kit.affine,
            label_names={1: _name(task)},
        )
        figures[f"{_name(task)}.png"] = example_figure(example)
    example = Example.from_volumes(
        tasks[_ENHANCEMENT],
        target_id,
        "medverse",
        0,
        subject.inputs[_ENHANCEMENT],
        subject.clean,
        denoised,
        kit.spacing,
        affine=kit.affine,
    )
    figures["denoising.png"] = example_figure(example)
    return figures


def _html_page(config: DemoConfig, result: DemoResult, figures: list[str]) -> str:
    rows = []
    for task, values in result.metrics.items():
        cells = [task] + [
            f"{values[k]:.3f}" if k in values and math.isfinite(values[k]) else "-"
            for k in ("dice", "dice_context_mean", "psnr", "psnr_identity")
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    images = "".join(f'<p><img src="{html.escape(name)}" alt="{name}"></p>' for name in figures)
    total = sum(result.seconds.values())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>medverse demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em;max-width:1000px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}</style></head>
<body><h1>medverse demo</h1>
<p>Model <code>{html.escape(config.model)}</code>; one target and {config.num_contexts} context
subjects built from the MNI ICBM152 2009 template and AAL3 (evaluation-kit construction, seed
{config.seed}, {config.spacing} mm, grid {config.shape}); never used for training. AAL labels fit
the template only approximately. Total {total:.1f} s.</p>
<table><tr><th>task</th><th>Dice</th><th>Dice, context mean</th><th>PSNR dB</th>
<th>PSNR dB, noisy input</th></tr>{"".join(rows)}</table>
<p>Letters at the panel edges give the anatomical directions (R/L, A/P, S/I) read from the
target's affine; panel titles give each slice's world position (RAS+ mm). Segmentation figures
name their labels in the legend (the label names are also in <code>segmentation.labels.json</code>);
denoising shows each column's colour bar and the difference prediction − reference.</p>{images}
</body></html>
"""


def run_demo(
    out_dir: str | os.PathLike[str],
    config: DemoConfig | None = None,
    *,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Build the case, predict, score, and write NIfTI outputs, PNG figures and ``index.html``.

    Args:
        out_dir: output folder (created; files of an earlier demo there are replaced).
        config: settings (default :class:`DemoConfig`).
        echo: where progress and results are printed.

    Returns:
        :class:`DemoResult` with Dice/PSNR per task and the seconds of each stage.
    """
    from medverse.checkpoint.factory import load_model
    from medverse.evaluation.kit_build import build_kit
    from medverse.evaluation.kit_config import KitConfig
    from medverse.evaluation.metrics import dice, psnr
    from medverse.files import atomic_write_bytes, atomic_write_text
    from medverse.inference.driver import InferenceConfig
    from medverse.inference.predictor import Predictor
    from medverse.io.context import Context

    config = config or DemoConfig()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    tasks = ("brain_mask", *DEMO_STRUCTURES.values(), _ENHANCEMENT)
    kit = build_kit(
        KitConfig(
            num_subjects=config.num_contexts + 1,
            spacing=config.spacing,
            shape=config.shape,
            seed=config.seed,
            tasks=tasks,
        )
    )
    subject_ids = list(kit.subject_ids)
    labels = {sid: _label_map(kit.subjects[sid].masks) for sid in subject_ids}
    written = _write_inputs(kit, root, subject_ids, labels)
    seconds["build case"] = time.perf_counter() - start
    echo(
        f"case: target {subject_ids[0]} + {config.num_contexts} contexts, grid {config.shape} "
        f"at {config.spacing} mm ({seconds['build case']:.1f} s)"
    )

    start = time.perf_counter()
    net = load_model(config.model)
    predictor = Predictor(net, InferenceConfig(sw_batch_size=2), device=config.device)
    seconds["load model"] = time.perf_counter() - start

    paths = written["paths"]
    start = time.perf_counter()
    context = Context.from_nnunet(written["seg_contexts"])
    segmentation = predictor.predict(paths["target"], context)
    files = segmentation.save(root / "segmentation.nii.gz")
    seconds["segmentation"] = time.perf_counter() - start

    start = time.perf_counter()
    denoising = predictor.predict(
        paths["target_noisy"], Context.from_files(written["den_pairs"], task="image")
    )
    files += denoising.save(root / "denoised.nii.gz")
    seconds["denoising"] = time.perf_counter() - start

    target = kit.subjects[subject_ids[0]]
    reference = labels[subject_ids[0]]
    metrics: dict[str, dict[str, float]] = {}
    for value, task in DEMO_STRUCTURES.items():
        mean = np.mean([labels[sid] == value for sid in subject_ids[1:]], axis=0)
        metrics[_name(task)] = {
            "dice": dice(segmentation.array == value, reference == value),
            "dice_context_mean": dice(mean > 0.5, reference == value),
        }
    metrics[_ENHANCEMENT] = {
        "psnr": psnr(denoising.array, target.clean, 1.0),
        "psnr_identity": psnr(target.inputs[_ENHANCEMENT], target.clean, 1.0),
    }
    echo(
        f"segmentation: {segmentation.summary['classes']} structures in one call, "
        f"{seconds['segmentation']:.1f} s; denoising {seconds['denoising']:.1f} s"
    )
    if segmentation.summary.get("guided"):
        echo(
            "  registration-guided (contexts registered affine + SyN, network + fusion of the "
            f"warped masks): {segmentation.summary['stacking_description'] or 'network only'}"
        )
    for task, values in metrics.items():
        if "dice" in values and math.isnan(values["dice"]):
            echo(f"  {task:<16} Dice n/a: the structure is empty in the target's reference")
        elif "dice" in values:
            echo(
                f"  {task:<16} Dice {values['dice']:.3f}   "
                f"(context-mask mean {values['dice_context_mean']:.3f})"
            )
        else:
            echo(
                f"  {task:<16} PSNR {values['psnr']:.2f} dB (noisy input "
                f"{values['psnr_identity']:.2f} dB)"
            )

    start = time.perf_counter()
    figures = _figures(kit, subject_ids[0], reference, segmentation.array, denoising.array)
    for name, data in figures.items():
        atomic_write_bytes(root / name, data)
    seconds["figures"] = time.perf_counter() - start
    summary = {
        "config": asdict(config) | {"shape": list(config.shape)},
        "model": net.source,
        "weights_sha256": net.weights_sha256,
        "subjects": subject_ids,
        "metrics": {
            task: {k: (v if math.isfinite(v) else None) for k, v in values.items()}
            for task, values in metrics.items()
        },
        "seconds": seconds,
    }
    atomic_write_text(root / "metrics.json", json.dumps(summary, indent=2) + "\n")
    files += [*(root / n for n in figures), root / "metrics.json", root / "index.html"]
    result = DemoResult(root, metrics, seconds, files)
    atomic_write_text(root / "index.html", _html_page(config, result, list(figures)))
    echo(f"wrote {root / 'index.html'} and NIfTI outputs; total {sum(seconds.values()):.1f} s")
    return result
