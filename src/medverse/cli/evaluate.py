"""``medverse evaluate``: the paper's held-out protocol with baselines and an HTML report."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import typer

from medverse.cli.options import (
    CACHE_DIR,
    NO_CACHE,
    Engine,
    ModelAlign,
    Refine,
    old_spelling,
    registration_cache,
    spelled,
)

__all__ = ["evaluate"]

#: Parts of a registration-guided segmentation, from the same runs as ``medverse``.
GUIDED_PARTS = ("medverse_network", "medverse_fusion", "medverse_stacked_fusion")

METHODS = (
    "medverse",
    "medverse_network",
    "medverse_fusion",
    "medverse_stacked_fusion",
    "multi_atlas",
    "multi_atlas_sitk",
    "joint_label_fusion",
    "nl_means",
    "context_mean",
    "identity",
)

OLD_OUT = old_spelling("--out", "--output-dir")


def evaluate(
    ctx: typer.Context,
    output_dir: Path = typer.Option(
        None,
        "--output-dir",
        "-o",
        help="Report folder (created; its parent must exist).  [required]",
    ),
    kit: bool = typer.Option(
        True, "--kit/--no-kit", help="Use the real-anatomy kit (MNI152 + AAL3)."
    ),
    kit_dir: Path = typer.Option(
        None, help="A kit folder written earlier (faster than rebuilding)."
    ),
    dataset: Path = typer.Option(
        None,
        "--dataset",
        help="Your nnU-Net raw folder instead of the kit: imagesTr/CASE_0000 + labelsTr/CASE "
        "(one segmentation task per label), or imagesTr/CASE_0000 -> CASE_0001 (image task).",
    ),
    dataset_align: str = typer.Option(
        "affine",
        help="--dataset cases on other grids are brought onto the first case's grid: affine "
        "(registration) or physical (world coordinates).",
    ),
    subjects: int = typer.Option(8, help="Kit subjects to build."),
    spacing: float = typer.Option(
        2.0, help="Kit voxel size in mm; the grid covers the same head (2 mm: 96x112x96)."
    ),
    model: str = typer.Option(
        None, "--model", "-m", help="Registered name or weights path; omit for baselines only."
    ),
    methods: str = typer.Option(
        "medverse,multi_atlas,joint_label_fusion,nl_means,context_mean,identity",
        help="Comma-separated methods. medverse_network / medverse_fusion (with a guided "
        "segmentation: --align deformable, or auto with a gated model): the two parts of the "
        "guided segmentation, from the same runs; medverse_stacked_fusion: its stacking "
        "refitted without the network (what the network adds).",
    ),
    align: ModelAlign = typer.Option(
        ModelAlign.auto,
        "--align",
        help="How the model's contexts reach the target: none (as the protocol gives them, on "
        "the target grid), affine or deformable (registered; deformable segmentation is "
        "registration-guided, as medverse predict --align deformable); auto, as medverse "
        "predict: registration-guided segmentation when the model has a prior gate (the "
        "bundled medverse-small has one), none otherwise and for image tasks.",
    ),
    engine: Engine = typer.Option(
        Engine.ants, help="Registration engine of --align and of the registering baselines."
    ),
    cache_dir: Path = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    tasks: str = typer.Option(
        None, help="Comma-separated task names (default: all of the dataset's)."
    ),
    num_contexts: int = typer.Option(
        4, "--num-contexts", "-k", help="Contexts per draw (paper: 4)."
    ),
    num_draws: int = typer.Option(
        8, "--num-draws", "-n", help="Context draws per target (paper: 8)."
    ),
    seed: int = typer.Option(0, help="Protocol seed; every draw's seed is derived and recorded."),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Image tasks: in-context calibration of the model's output (as medverse predict).",
    ),
    refine: Refine = typer.Option(
        Refine.all,
        "--refine",
        help="The model's finer levels (coarse-to-fine path, not the registration-guided one): "
        "all windows, or adaptive: segmentation windows where the up-sampled coarser "
        "prediction is certain and has no boundary take it instead of a network call (as "
        "medverse predict --refine). Prints the fine windows run and skipped.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    old_out: Path = OLD_OUT,
) -> None:
    """Score medverse and baselines on held-out targets: k contexts x n seeded draws.

    \b
    Example:
      medverse evaluate --output-dir report/ --model medverse-small --spacing 3.5
      medverse evaluate --output-dir r/ --model medverse-small --methods medverse,joint_label_fusion
      medverse evaluate --output-dir report/ --model medverse-small --dataset Dataset001_Liver/
    """
    align, engine, refine = ModelAlign(align).value, Engine(engine).value, Refine(refine).value
    out = spelled(ctx, output_dir, old_out, new="--output-dir", old="--out")
    if out is None:
        ctx.fail("Missing option '--output-dir' / '-o'.")
    from medverse.errors import InputError

    if not out.parent.is_dir():
        raise InputError(f"'{out}': parent folder '{out.parent}' does not exist")
    if out.exists() and not out.is_dir():
        raise InputError(f"'{out}' exists and is not a folder; --output-dir takes a folder")
    # before the kit is built or a model loaded (minutes), not after
    for flag, value in (("--num-contexts", num_contexts), ("--num-draws", num_draws)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    from medverse.evaluation import (
        KitConfig,
        build_kit,
        context_mean,
        identity,
        joint_label_fusion,
        load_kit,
        multi_atlas,
        multi_atlas_sitk,
        nl_means,
    )
    from medverse.evaluation.kit_config import kit_shape
    from medverse.evaluation.protocol import evaluate as run_protocol
    from medverse.evaluation.report import write_report

    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(METHODS))
    if unknown:
        raise InputError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    parts = [m for m in wanted if m in GUIDED_PARTS]
    unguided = typer.BadParameter(
        f"{parts} are parts of the registration-guided segmentation: add --align deformable",
        param_hint="--methods",
    )
    if parts and align not in ("deformable", "auto"):
        raise unguided
    if not kit and kit_dir is None and dataset is None:
        raise InputError("nothing to evaluate: use --kit (default), --kit-dir DIR or --dataset DIR")
    if dataset is not None and kit_dir is not None:
        raise InputError("--dataset and --kit-dir: give one of them")
    cache = registration_cache(cache_dir, no_cache)
    registering = {"engine": engine, "cache": cache}
    table = {
        "multi_atlas": partial(multi_atlas, **registering),
        "multi_atlas_sitk": multi_atlas_sitk,
        "joint_label_fusion": partial(joint_label_fusion, **registering),
        "nl_means": nl_means,
        "context_mean": context_mean,
        "identity": identity,
    }
    for method in table.values():
        if isinstance(method, partial):
            method.task_families = method.func.task_families  # type: ignore[attr-defined]
    chosen = {name: table[name] for name in wanted if name in table}
    model_hash = None
    stacked = None
    model_methods = [m for m in wanted if m.startswith("medverse")]
    if model_methods:
        if model is None:
            typer.echo("no --model given: evaluating the baselines only", err=True)
        else:
            from medverse.checkpoint.factory import load_model
            from medverse.evaluation.model_method import ModelMethod
            from medverse.inference.driver import InferenceConfig

            net = load_model(model)
            model_hash = net.weights_sha256 or net.source
            config = InferenceConfig(sw_batch_size=2, refine=refine)
            stacked = ModelMethod(net, config, calibrate=calibrate, align=align, **registering)
            if parts and stacked.alignment(segmentation=True) != "deformable":
                raise unguided  # auto with a network without a prior gate
            variants = {
                "medverse": stacked,
                "medverse_network": stacked.variant("network"),
                "medverse_fusion": stacked.variant("fusion"),
                "medverse_stacked_fusion": stacked.variant("stacked_fusion"),
            }
            chosen = {**{m: variants[m] for m in model_methods}, **chosen}
    if not chosen:
        raise InputError("no method left to run")
    if dataset is not None:
        from medverse.evaluation.nnunet import NnunetDataset

        data = NnunetDataset(dataset, align=dataset_align)
    elif kit_dir is not None:
        data = load_kit(kit_dir)
    else:
        data = build_kit(
            KitConfig(num_subjects=subjects, spacing=spacing, shape=kit_shape(spacing)),
            progress=progress,
        )
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    unknown_tasks = [t for t in task_list or [] if t not in data.tasks]
    if unknown_tasks:
        raise InputError(
            f"--tasks {','.join(unknown_tasks)}: not a task of this dataset; it has "
            f"{','.join(data.tasks)}"
        )
    results = run_protocol(
        data,
        chosen,
        num_contexts=num_contexts,
        num_draws=num_draws,
        seed=seed,
        tasks=task_list,
        progress=progress,
        model_hash=model_hash,
    )
    index = write_report(results, out)
    typer.echo(f"report: {index}")
    if results.records and all(record.status == "failed" for record in results.records):
        first = results.records[0]
        raise InputError(
            f"no case could be evaluated ({len(results.records)} failed, e.g. task "
            f"'{first.task}', target '{first.target}': {first.reason}); see {index}"
        )
    if stacked is not None:
        windows = stacked.windows
        typer.echo(
            f"medverse fine windows (--refine {refine}): {windows['run']} run, "
            f"{windows['skipped']} skipped"
        )
    summary = out / "summary.md"
    if summary.is_file():
        typer.echo(summary.read_text(encoding="utf-8"))
