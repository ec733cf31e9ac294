"""The ``medverse`` command line: predict, convert, info, train, evaluate.

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
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def clean_errors(func: F) -> F:
    """Turn medverse errors (and unreadable-file OS errors) into one line + exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from medverse.errors import MedverseError

        try:
            return func(*args, **kwargs)
        except MedverseError as err:
            fail(str(err))
        except MemoryError as err:
            fail(f"out of memory ({err}); lower --context-batch or --sw-batch-size, or use a smaller window")
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
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
@clean_errors
def convert(
    src: Path = typer.Argument(..., help="Released Lightning .ckpt, a .pt/.pth state dict or .safetensors."),
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
    typer.echo(f"wrote {out} ({len(net.state_dict())} tensors, {count:,} numbers, channels {list(weights.config.channels)})")


@app.command()
@clean_errors
def info(model: str = typer.Argument(..., help="Registered name or path to weights.")) -> None:
    """Show a model's configuration, parameter count and source."""
    import json

    from medverse.checkpoint.registry import get_spec, list_models, load_model

    if Path(model).exists():
        net = load_model(model)
    else:
        spec = get_spec(model)
        net = load_model(model, pretrained=spec.weights is not None)
    total = sum(p.numel() for p in net.state_dict().values())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    typer.echo(f"model:      {model}")
    typer.echo(f"source:     {net.source}")
    if net.weights_sha256:
        typer.echo(f"sha256:     {net.weights_sha256}")
    typer.echo(f"parameters: {total:,} stored, {trainable:,} trainable")
    typer.echo(f"config:     {json.dumps(net.config.to_dict())}")
    if not Path(model).exists():
        typer.echo(f"registered: {', '.join(list_models())}")
