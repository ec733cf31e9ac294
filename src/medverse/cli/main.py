"""The ``medverse`` command line: predict, convert, info, train, evaluate, demo.

Heavy imports live inside the commands so that ``--help`` stays fast. Every expected failure
(bad input, bad checkpoint, too little memory) is one message on stderr and exit code 1.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import typer

app = typer.Typer(
    name="medverse",
    help="Universal in-context learning for 3D medical images (Medverse).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


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
    """Convert the authors' released checkpoint (or a bare state dict) to medverse format."""
    from medverse.checkpoint.io import load_network, read_weights, save_model, sha256_file

    weights = read_weights(src, window=window)
    net = load_network(weights)  # proves every key maps and every shape fits
    out = save_model(
        dst,
        net.state_dict(),
        weights.config,
        source=weights.source,
        half=half,
        extra={"converted_from_sha256": sha256_file(src) if src.is_file() else ""},
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
    """Show a model's configuration, parameter count and source; alone, list the registry."""
    import json

    from medverse.checkpoint.registry import get_spec, list_models, load_model

    if model is None:
        for name in list_models():
            spec = get_spec(name)
            bundled = (
                f"bundled weights ({spec.weights})"
                if spec.weights
                else "no weights bundled: convert the authors' checkpoint"
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
            source = "no weights bundled (architecture only; convert the released checkpoint)"
        else:
            source = f"bundled weights {spec.weights}: {spec.description}"
    typer.echo(f"source:     {source}")
    if net.weights_sha256:
        typer.echo(f"sha256:     {net.weights_sha256}")
    typer.echo(f"parameters: {total:,} stored, {trainable:,} trainable")
    typer.echo(f"config:     {json.dumps(net.config.to_dict())}")
    if not Path(model).exists():
        typer.echo(f"registered: {', '.join(list_models())}")


@click.command("predict", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--target",
    "-t",
    required=True,
    type=click.Path(path_type=Path),
    help="Target volume (NIfTI, NRRD, MHA/MHD or a DICOM folder).",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file (.nii.gz, .nrrd, .mha...).",
)
@click.option(
    "--context",
    "-c",
    "context",
    nargs=2,
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="IMAGE OUTPUT",
    help="A context pair (repeat for more).",
)
@click.option(
    "--contexts-from",
    type=click.Path(path_type=Path),
    default=None,
    help="nnU-Net raw folder of contexts (imagesTr/NAME_0000.ext, labelsTr/NAME.ext).",
)
@click.option(
    "--model",
    "-m",
    default="medverse-small",
    show_default=True,
    help="Registered name or path to weights (what `medverse convert` wrote).",
)
@click.option(
    "--task",
    type=click.Choice(["auto", "segmentation", "image"]),
    default="auto",
    show_default=True,
    help="image = transformation or enhancement.",
)
@click.option("--raw", is_flag=True, help="Write the raw float network output.")
@click.option(
    "--compat",
    type=click.Choice(["medverse", "released"]),
    default="medverse",
    show_default=True,
    help="Level plan: per-axis, never squash (medverse) or the authors' (released).",
)
@click.option(
    "--align",
    type=click.Choice(["auto", "affine", "physical", "fov"]),
    default="auto",
    show_default=True,
    help="How contexts reach the target grid: affine (registration), physical (world coordinates), "
    "fov (resize whole volume); auto = affine, or physical with --compat released.",
)
@click.option(
    "--no-resample", is_flag=True, help="Refuse contexts on another grid instead of resampling."
)
@click.option(
    "--clip-percentiles",
    nargs=2,
    type=float,
    default=None,
    metavar="LOW HIGH",
    help="Clip images to these percentiles before min-max (e.g. 0.5 99.5 for CT).",
)
@click.option(
    "--ensemble",
    type=int,
    default=1,
    show_default=True,
    help="Average N draws (random context subsets, or flips).",
)
@click.option("--contexts-per-draw", type=int, default=None, help="Contexts per ensemble draw.")
@click.option(
    "--uncertainty",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the voxel-wise std over draws.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the ensemble draws.")
@click.option(
    "--calibrate/--no-calibrate",
    default=True,
    show_default=True,
    help="Image tasks: fit how to combine output and target on leave-one-out predictions "
    "of the contexts (one extra run per context, up to 4).",
)
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option(
    "--context-batch",
    type=int,
    default=2,
    show_default=True,
    help="Contexts per mini-batch (memory knob).",
)
@click.option(
    "--sw-batch-size",
    type=int,
    default=1,
    show_default=True,
    help="Windows per network call (memory knob).",
)
@click.option(
    "--overlap", type=float, default=0.1, show_default=True, help="Sliding-window overlap."
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@clean_errors
def predict(
    target: Path,
    output: Path,
    context: tuple[tuple[Path, Path], ...],
    contexts_from: Path | None,
    model: str,
    task: str,
    raw: bool,
    compat: str,
    align: str,
    no_resample: bool,
    clip_percentiles: tuple[float, float] | None,
    ensemble: int,
    contexts_per_draw: int | None,
    uncertainty: Path | None,
    seed: int,
    calibrate: bool,
    device: str,
    context_batch: int,
    sw_batch_size: int,
    overlap: float,
    progress: bool,
) -> None:
    """Predict the full-resolution output for TARGET from a few context pairs."""
    from medverse.checkpoint.registry import load_model
    from medverse.errors import InputError
    from medverse.inference.driver import InferenceConfig
    from medverse.inference.predictor import Predictor
    from medverse.io.context_set import Context
    from medverse.io.volume import WRITABLE_EXTENSIONS

    for out in (output, uncertainty):
        if out is None:
            continue
        if not out.parent.is_dir():
            raise InputError(
                f"'{out}': output folder '{out.parent}' does not exist; create it first"
            )
        if not any(out.name.endswith(ext) for ext in WRITABLE_EXTENSIONS):
            raise InputError(
                f"'{out}': unsupported output extension; use one of {', '.join(WRITABLE_EXTENSIONS)}"
            )
    if not context and contexts_from is None:
        raise InputError(
            "no contexts: pass --context IMAGE OUTPUT (repeatable) or --contexts-from DIR"
        )
    if uncertainty is not None and ensemble < 2:
        raise InputError("--uncertainty needs --ensemble 2 or more")
    cfg = InferenceConfig(
        compat=compat,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        context_batch=context_batch,
        progress=progress,
    )
    net = load_model(model, device="cpu")
    pairs = Context.from_files(list(context), task=task) if context else None
    if contexts_from is not None:
        extra = Context.from_nnunet(contexts_from, task=task)
        pairs = extra if pairs is None else Context(pairs.pairs + extra.pairs, pairs.task)
    predictor = Predictor(net, cfg, device=device)
    if progress:
        predictor.on_level = lambda t, n: click.echo(f"level {t}/{n}", err=True)
    result = predictor.predict(
        target,
        pairs,
        align=align,
        resample=not no_resample,
        clip_percentiles=tuple(clip_percentiles) if clip_percentiles else None,
        ensemble=ensemble,
        contexts_per_draw=contexts_per_draw,
        seed=seed,
        calibrate=calibrate,
    )
    for note in result.summary["alignment"]:
        click.echo(note, err=True)
    written = result.save(output, raw=raw)
    if uncertainty is not None:
        written.append(result.save_uncertainty(uncertainty))
    s = result.summary
    click.echo(
        f"{result.task}: levels {s['levels']} {s['plan']}, windows {'+'.join(map(str, s['windows']))}, "
        f"contexts {s['contexts']}, classes {s['classes']}, draws {s['draws']}, "
        + (f"calibrated {s['calibration']['weights']}, " if s.get("calibration") else "")
        + f"{s['seconds']:.1f} s, peak memory {s['peak_memory_gib']:.2f} GiB -> {', '.join(map(str, written))}"
    )


def _register_lazy_commands() -> None:
    from medverse.cli.demo import demo
    from medverse.cli.evaluate import evaluate
    from medverse.cli.train import train

    app.command("train")(clean_errors(train))
    app.command("evaluate")(clean_errors(evaluate))
    app.command("demo")(clean_errors(demo))


_register_lazy_commands()


def cli() -> None:
    """Console entry point: the Typer commands plus the click ``predict`` command."""
    group = typer.main.get_command(app)
    group.add_command(predict, "predict")  # type: ignore[attr-defined]
    group(prog_name="medverse")


if __name__ == "__main__":
    cli()
