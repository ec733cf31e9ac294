"""The ``medverse`` command line: predict, convert, info, train, evaluate, demo.

Heavy imports live inside the commands so that ``--help`` stays fast. Every expected failure
(bad input, bad checkpoint, too little memory) is one message on stderr and exit code 1; every
usage error (unknown or missing option) is click's usage line + ``Error: ...`` and exit code 2.
All commands are Typer commands: typer >= 0.2x vendors its own click, so a plain click command
mixed into the app would not have its exceptions handled.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperCommand

from medverse.cli.options import CACHE_DIR, NO_CACHE, Refine, registration_cache

app = typer.Typer(
    name="medverse",
    help="Universal in-context learning for 3D medical images (Medverse).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click formatting: usage errors are "Usage: ..." + "Error: ..." with exit code 2 and
    # help is the same on every typer version and terminal.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
F = TypeVar("F", bound=Callable[..., Any])


# Library messages name Python arguments; on the command line the flags are what to type.
_CLI_WORDING = (
    (re.compile(r"\bmode='(affine|physical|fov|deformable)'"), r"--align \1"),
    (re.compile(r"\bresample=False\b"), "--no-resample"),
    (re.compile(r"\b(refine|compat)='(\w+)'"), r"--\1 \2"),
    (
        re.compile(r"\b(num_contexts|num_draws)=(-?\d+)"),
        lambda m: "--" + m.group(1).replace("_", "-") + " " + m.group(2),
    ),
    (
        re.compile(
            r"\b(sw_batch_size|context_batch|contexts_per_draw|overlap|ensemble|clip_percentiles"
            r"|num_contexts|seed)"
            r"(?= must)"
        ),
        lambda m: "--" + m.group(1).replace("_", "-"),
    ),
)


def cli_wording(message: str) -> str:
    """``message`` with Python argument names replaced by the CLI flags that set them.

    A training config's messages name its fields (``num_contexts``, ``context_batch``...), which
    are what the user writes in the file: they stay as they are.
    """
    if message.startswith("training config "):
        return message
    for pattern, replacement in _CLI_WORDING:
        message = pattern.sub(replacement, message)
    return message


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {cli_wording(message)}", err=True)
    raise SystemExit(code)


def warn(message: str) -> None:
    typer.echo(f"warning: {cli_wording(message)}", err=True)


def clean_errors(func: F) -> F:
    """Turn medverse errors (and unreadable-file OS errors) into one line + exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from medverse.errors import MedverseError

        try:
            return func(*args, **kwargs)
        except MedverseError as err:
            fail(str(err))
        except BrokenPipeError:  # output piped into `head` and the like
            sys.stderr.close()
        except MemoryError as err:
            fail(
                f"out of memory ({err}); lower --context-batch or --sw-batch-size, or use a smaller window"
            )
        except OSError as err:
            fail(f"{err.filename or ''}: {err.strerror or err}")
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors."),
) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@app.command()
@clean_errors
def convert(
    src: Path = typer.Argument(
        ..., help="Released Lightning .ckpt, a .pt/.pth state dict or .safetensors."
    ),
    dst: Path = typer.Argument(..., help="Output folder (or NAME.safetensors) in medverse format."),
    window: int = typer.Option(None, help="Window edge to record (released: 128)."),
    half: bool = typer.Option(False, help="Store float16 (half the size)."),
) -> None:
    """Convert the authors' released checkpoint (or a bare state dict) to medverse format.

    \b
    Example:
      medverse convert medverse.ckpt medverse_base/
    """
    from medverse.checkpoint.io import load_network, read_weights, save_model, sha256_file

    digest = sha256_file(src) if src.is_file() else ""
    if digest:  # printed first: compare it with the checksum the publisher lists, if any
        typer.echo(f"read {src} ({src.stat().st_size:,} bytes, sha256 {digest})")
    weights = read_weights(src, window=window)
    net = load_network(weights)  # proves every key maps and every shape fits
    out = save_model(
        dst,
        net.state_dict(),
        weights.config,
        source=weights.source,
        half=half,
        extra={"converted_from_sha256": digest},
    )
    count = sum(p.numel() for p in net.state_dict().values())
    typer.echo(
        f"wrote {out} ({len(net.state_dict())} tensors, {count:,} numbers, channels {list(weights.config.channels)})"
    )


@app.command()
@clean_errors
def info(
    model: str = typer.Argument(
        None, help="Registered name or path to weights; omit to list the registered models."
    ),
) -> None:
    """Show a model's configuration, parameter count and source; alone, list the registry.

    \b
    Example:
      medverse info medverse-base
    """
    import json

    from medverse.checkpoint.factory import load_model, released_weights_help
    from medverse.checkpoint.model_registry import get_spec, list_models

    if model is None:
        for name in list_models():
            spec = get_spec(name)
            bundled = (
                f"bundled weights ({spec.weights})"
                if spec.weights
                else f"no weights bundled: convert the authors' checkpoint (medverse info {name})"
            )
            typer.echo(f"{name:<16} {bundled}\n{'':<16} {spec.description}")
        return
    if Path(model).exists():
        net = load_model(model)
    else:
        spec = get_spec(model)
        net = load_model(model, pretrained=spec.weights is not None)
    total = sum(p.numel() for p in net.state_dict().values())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    typer.echo(f"model:      {model}")
    source = net.source
    if not Path(model).exists():
        spec = get_spec(model)
        if spec.weights is None:
            source = "no weights bundled (architecture only); to use the authors' weights:"
            source += "".join(f"\n  {line}" for line in released_weights_help())
        else:
            source = f"bundled weights {spec.weights}: {spec.description}"
    typer.echo(f"source:     {source}")
    if net.weights_sha256:
        typer.echo(f"sha256:     {net.weights_sha256}")
    typer.echo(f"parameters: {total:,} stored, {trainable:,} trainable")
    typer.echo(f"config:     {json.dumps(net.config.to_dict())}")
    if not Path(model).exists():
        typer.echo(f"registered: {', '.join(list_models())}")


class Task(str, Enum):
    auto = "auto"
    segmentation = "segmentation"
    image = "image"


class Compat(str, Enum):
    medverse = "medverse"
    released = "released"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Align(str, Enum):
    auto = "auto"
    affine = "affine"
    physical = "physical"
    fov = "fov"
    deformable = "deformable"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    auto = "auto"


class PairOptionCommand(TyperCommand):
    """A Typer command whose ``--context``/``-c`` takes two values (IMAGE OUTPUT), repeatable.

    Typer has no repeatable two-value option, so the pair is split into two ``--context``
    occurrences before parsing: the function receives a flat list ``[img1, out1, img2, ...]``.
    Only public click API (``Command.parse_args``) is used, so it works with typer's vendored
    click and with plain click alike.
    """

    pair_options = ("-c", "--context")

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        flat: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                flat += args[i:]
                break
            if arg.startswith("--context=") or (
                arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--")
            ):
                raise typer.BadParameter(
                    "takes two files separated by a space: --context IMAGE OUTPUT",
                    ctx=ctx,
                    param_hint="'--context'",
                )
            if arg in self.pair_options:
                if len(args) - i < 3:
                    raise typer.BadParameter(
                        "requires 2 arguments: --context IMAGE OUTPUT",
                        ctx=ctx,
                        param_hint="'--context'",
                    )
                option = next(
                    (a for a in args[i + 1 : i + 3] if a.startswith("-") and a != "-"), None
                )
                if option is not None:  # `-c IMG -o OUT` would take -o as the output file
                    raise typer.BadParameter(
                        f"requires 2 files, got the option {option!r} among them: "
                        "--context IMAGE OUTPUT",
                        ctx=ctx,
                        param_hint="'--context'",
                    )
                flat += [arg, args[i + 1], arg, args[i + 2]]
                i += 3
                continue
            flat.append(arg)
            i += 1
        return super().parse_args(ctx, flat)


@app.command(cls=PairOptionCommand)
@clean_errors
def predict(
    ctx: typer.Context,
    target: Path = typer.Option(
        None,
        "--target",
        "-t",
        help="Target volume (NIfTI, NRRD, MHA/MHD or a DICOM folder).  [required, or "
        "--targets-from]",
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file (.nii.gz, .nrrd, .mha...).  [required with --target]",
    ),
    targets_from: Path = typer.Option(
        None,
        "--targets-from",
        help="Cohort: a folder of target volumes (case_id.nii.gz or nnU-Net case_id_0000.nii.gz) "
        "or a CSV with a 'target' (and optional 'output') column; writes into --output-dir, "
        "skips outputs that exist, records failures, and writes OUTPUT_DIR/summary.csv. "
        "Under torchrun the targets are sharded by rank.",
    ),
    output_dir: Path = typer.Option(
        None, "--output-dir", help="Cohort output folder (created if missing)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Cohort: redo targets whose output already exists."
    ),
    context: list[Path] = typer.Option(
        None,
        "--context",
        "-c",
        metavar="IMAGE OUTPUT",
        help="A context pair (repeat for more).",
    ),
    contexts_from: Path = typer.Option(
        None,
        "--contexts-from",
        help="nnU-Net raw folder of contexts (imagesTr/NAME_0000.ext, labelsTr/NAME.ext).",
    ),
    model: str = typer.Option(
        "medverse-small",
        "--model",
        "-m",
        help="Registered name or path to weights (what `medverse convert` wrote).",
    ),
    task: Task = typer.Option(Task.auto, help="image = transformation or enhancement."),
    raw: bool = typer.Option(False, "--raw", help="Write the raw float network output."),
    compat: Compat = typer.Option(
        Compat.medverse,
        help="Level plan: per-axis, never squash (medverse) or the authors' (released).",
    ),
    refine: Refine = typer.Option(
        Refine.all,
        help="Finer levels of segmentation: run every window (all), or only windows where the "
        "up-sampled coarser prediction is uncertain (0.05 < p < 0.95) or has a label edge "
        "(adaptive; the others keep the coarser prediction). Image tasks and the "
        "registration-guided pass always run every window; not with --compat released.",
    ),
    precision: Precision = typer.Option(
        Precision.auto,
        help="Network arithmetic: auto = bf16 autocast on CUDA, float32 on CPU; fp32; bf16 "
        "(autocast on any device; for checking on CPU: ~40x slower than fp32 on CPUs "
        "without native bf16, AVX512-BF16 or AMX).",
    ),
    align: Align = typer.Option(
        Align.auto,
        help="How contexts reach the target grid: affine (registration), deformable (affine + "
        "ANTs SyN; segmentation is then registration-guided: network + fusion of the warped "
        "masks, blend chosen on the contexts), physical (world coordinates), fov (resize whole "
        "volume); auto = deformable for segmentation with a model that has a prior gate (the bundled "
        "medverse-small), else affine; physical with --compat released.",
    ),
    cache_dir: Path = CACHE_DIR,
    no_cache: bool = NO_CACHE,
    no_resample: bool = typer.Option(
        False, "--no-resample", help="Refuse contexts on another grid instead of resampling."
    ),
    clip_percentiles: tuple[float, float] = typer.Option(
        None,
        "--clip-percentiles",
        metavar="LOW HIGH",
        help="Clip images to these percentiles before min-max (e.g. 0.5 99.5 for CT).",
    ),
    ensemble: int = typer.Option(1, help="Average N draws (random context subsets, or flips)."),
    contexts_per_draw: int = typer.Option(None, help="Contexts per ensemble draw."),
    uncertainty: Path = typer.Option(None, help="Also write the voxel-wise std over draws."),
    seed: int = typer.Option(0, help="Seed of the ensemble draws."),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Image tasks: fit how to combine output and target on leave-one-out predictions "
        "of the contexts (one extra run per context, up to 4).",
    ),
    device: Device = typer.Option(Device.cpu, help="Where the network runs."),
    context_batch: int = typer.Option(2, help="Contexts per mini-batch (memory knob)."),
    sw_batch_size: int = typer.Option(
        1, help="Windows per network call on an accelerator (memory knob; CPU: one at a time)."
    ),
    overlap: float = typer.Option(0.1, help="Sliding-window overlap."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Report each level."),
) -> None:
    """Predict the full-resolution output for a target (or a cohort) from a few context pairs.

    \b
    Example:
      medverse predict --target ct_001.nii.gz --context ct_010.nii.gz liver_010.nii.gz \\
          --context ct_011.nii.gz liver_011.nii.gz --output liver_001.nii.gz
    """
    cohort = targets_from is not None
    if cohort:
        if target is not None or output is not None:
            ctx.fail("--targets-from replaces --target/--output: give --output-dir instead")
        if output_dir is None:
            ctx.fail("Missing option '--output-dir' (needed with --targets-from).")
        if uncertainty is not None:
            ctx.fail("--uncertainty is for one target; a cohort's summary.csv has uncertainty_mean")
    else:
        if target is None:
            ctx.fail("Missing option '--target' / '-t' (or --targets-from for a cohort).")
        if output is None:
            ctx.fail("Missing option '--output' / '-o'.")
        if output_dir is not None or overwrite:
            ctx.fail("--output-dir and --overwrite go with --targets-from")
    from medverse.checkpoint.factory import load_model
    from medverse.errors import InputError
    from medverse.inference.driver import InferenceConfig
    from medverse.inference.guards import target_warnings
    from medverse.inference.predictor import Predictor
    from medverse.io.context import Context
    from medverse.io.volume import WRITABLE_EXTENSIONS, label_names_path, read_volume
    from medverse.validation import check_not_an_input

    if cohort:
        if not output_dir.parent.is_dir():
            raise InputError(
                f"'{output_dir}': parent folder '{output_dir.parent}' does not exist; create it first"
            )
        if output_dir.exists() and not output_dir.is_dir():
            raise InputError(f"'{output_dir}' exists and is not a folder")
    for out in (output, uncertainty):
        if out is None:
            continue
        if not out.parent.is_dir():
            raise InputError(
                f"'{out}': output folder '{out.parent}' does not exist; create it first"
            )
        if out.is_dir():  # before: found by the writer, after the whole prediction
            raise InputError(f"'{out}' is a folder; give the output file's name")
        if out is output and label_names_path(out).is_dir():
            raise InputError(
                f"'{label_names_path(out)}' is a folder; a segmentation's label names are "
                f"written there beside '{out.name}': move the folder or choose another output"
            )
        if not any(out.name.lower().endswith(ext) for ext in WRITABLE_EXTENSIONS):
            raise InputError(
                f"'{out}': unsupported output extension; use one of {', '.join(WRITABLE_EXTENSIONS)}"
            )
    flat = list(context or [])
    context = list(zip(flat[::2], flat[1::2]))
    if not context and contexts_from is None:
        raise InputError(
            "no contexts: pass --context IMAGE OUTPUT (repeatable) or --contexts-from DIR"
        )
    if uncertainty is not None and ensemble < 2:
        raise InputError("--uncertainty needs --ensemble 2 or more")
    cfg = InferenceConfig(
        compat=compat.value,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        context_batch=context_batch,
        progress=progress,
        refine=refine.value,
        precision=precision.value,
    )
    dist_info = None
    if cohort:
        from medverse.training.distributed import init_distributed

        # under torchrun: join the group (a rank that finishes early waits up to a day for the
        # others at the final barrier); a plain run is a world of one
        dist_info = init_distributed(device.value, timeout_s=24 * 3600.0)
    elif os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        raise InputError("several processes (torchrun) need a cohort: use --targets-from")
    net = load_model(model, device="cpu")
    trained_on = getattr(net, "trained_on", None)
    sources = [Context.from_files(context, task=task.value)] if context else []
    if contexts_from is not None:
        sources.append(Context.from_nnunet(contexts_from, task=task.value))
    pairs = Context.join(sources)
    inputs = [target, *(v.path for pair in pairs for v in (pair.image, pair.output))]
    if output is not None:
        check_not_an_input(output, inputs)
    if uncertainty is not None:
        check_not_an_input(uncertainty, [*inputs, output], "--uncertainty")
    predictor = Predictor(net, cfg, device=str(dist_info.device) if dist_info else device.value)
    options = dict(
        align=align.value,
        resample=not no_resample,
        clip_percentiles=tuple(clip_percentiles) if clip_percentiles else None,
        ensemble=ensemble,
        contexts_per_draw=contexts_per_draw,
        seed=seed,
        calibrate=calibrate,
    )
    if align.value in ("deformable", "auto"):
        options["cache"] = registration_cache(cache_dir, no_cache)
    if cohort:
        _predict_cohort(predictor, pairs, options, targets_from, output_dir, trained_on,
                        raw=raw, overwrite=overwrite, progress=progress, info=dist_info)  # fmt: skip
        return
    target_volume = read_volume(target, name=str(target))
    for line in target_warnings(
        target_volume, trained_on, guided=_guided(predictor, pairs, options)
    ):
        warn(line)
    if progress:
        predictor.on_level = lambda t, n: typer.echo(f"level {t}/{n}", err=True)
    result = predictor.predict(target_volume, pairs, **options)
    for note in result.summary["alignment"]:
        typer.echo(note, err=True)
    written = result.save(output, raw=raw)
    if uncertainty is not None:
        written.append(result.save_uncertainty(uncertainty))
    s = result.summary
    if s.get("stacking_description"):
        typer.echo(s["stacking_description"], err=True)
    passes = (
        "registration-guided (one full-resolution pass)"
        if s.get("guided")
        else f"levels {s['levels']} {s['plan']}, windows {'+'.join(map(str, s['windows']))}"
        + (f" ({sum(s['skipped'])} skipped)" if sum(s.get("skipped", [])) else "")
    )
    typer.echo(
        f"{result.task}: {passes}, "
        f"contexts {s['contexts']}, classes {s['classes']}, draws {s['draws']}, "
        + (f"calibrated {s['calibration']['weights']}, " if s.get("calibration") else "")
        + f"{s['seconds']:.1f} s, peak memory {s['peak_memory_gib']:.2f} GiB -> {', '.join(map(str, written))}"
    )


def _guided(predictor: Any, pairs: Any, options: dict[str, Any]) -> bool:
    """Whether a predict call with these options runs registration-guided segmentation."""
    if pairs is None or pairs.task != "segmentation":
        return False
    align = options["align"]
    if align == "auto":
        align = predictor.automatic_alignment(pairs, options["resample"])
    return align == "deformable"


def _predict_cohort(
    predictor: Any,
    pairs: Any,
    options: dict[str, Any],
    targets_from: Path,
    output_dir: Path,
    trained_on: Any,
    *,
    raw: bool,
    overwrite: bool,
    progress: bool,
    info: Any,
) -> None:
    """``--targets-from``: this rank's share of the cohort, then (rank 0) OUT/summary.csv."""
    from medverse.inference.cohort import discover_targets, merge_summary, run_cohort
    from medverse.inference.guards import target_warnings
    from medverse.io.volume import read_volume
    from medverse.training.distributed import barrier, cleanup
    from medverse.validation import check_not_an_input

    items = discover_targets(targets_from, output_dir)
    contexts = [v.path for pair in pairs for v in (pair.image, pair.output)]
    for item in items:
        check_not_an_input(item.output, contexts, f"the output of target '{item.target}'")
    output_dir.mkdir(exist_ok=True)
    if info.is_main:
        typer.echo(
            f"cohort: {len(items)} targets from {targets_from} -> {output_dir}"
            + (f" on {info.world_size} processes" if info.distributed else ""),
            err=True,
        )
    warned: list[str] = []

    def predict_one(path: Path) -> Any:
        volume = read_volume(path, name=str(path))
        warned.extend(
            target_warnings(volume, trained_on, guided=_guided(predictor, pairs, options))
        )
        return predictor.predict(volume, pairs, **options)

    rows = run_cohort(
        predict_one,
        items,
        output_dir,
        save=lambda result, out: result.save(out, raw=raw),
        rank=info.rank,
        world_size=info.world_size,
        overwrite=overwrite,
        progress=progress,
        echo=lambda line: typer.echo(cli_wording(line), err=True),
    )
    if warned:
        warn(f"{len(warned)} target(s) far from the model's training data, e.g. {warned[0]}")
    barrier(info)  # every rank's log is complete
    failed = sum(row["status"] == "failed" for row in rows)
    if info.is_main:
        summary, counts = merge_summary(output_dir, items)
        shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        typer.echo(f"summary: {summary} ({shown})")
        failed = counts.get("failed", 0) + counts.get("missing", 0)
    cleanup(info)
    if failed:
        raise SystemExit(1)


def _register_lazy_commands() -> None:
    from medverse.cli.demo import demo
    from medverse.cli.evaluate import evaluate
    from medverse.cli.train import train

    app.command("train")(clean_errors(train))
    app.command("evaluate")(clean_errors(evaluate))
    app.command("demo")(clean_errors(demo))


_register_lazy_commands()


def cli() -> None:
    """Console entry point (``medverse``; also ``python -m medverse``)."""
    app(prog_name="medverse")


if __name__ == "__main__":
    cli()
