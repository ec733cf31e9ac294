"""``medverse demo``: the bundled model on a packaged real-anatomy case, with an HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

from medverse.cli.options import old_spelling, spelled

__all__ = ["demo"]


DEFAULT_OUTPUT_DIR = Path("medverse_demo")
DEFAULT_NUM_CONTEXTS = 4
OLD_OUTPUT = old_spelling("--output", "--output-dir")
OLD_CONTEXTS = old_spelling("--contexts", "--num-contexts")


def demo(
    ctx: typer.Context,
    output_dir: Path = typer.Option(
        DEFAULT_OUTPUT_DIR, "--output-dir", "-o", help="Output folder (created if missing)."
    ),
    model: str = typer.Option("medverse-small", "--model", "-m", help="Name or weights path."),
    num_contexts: int = typer.Option(
        DEFAULT_NUM_CONTEXTS, "--num-contexts", "-k", help="Context subjects (1-16)."
    ),
    spacing: float = typer.Option(
        3.5, help="Voxel size in mm of the case (same head at any spacing)."
    ),
    seed: int = typer.Option(2026, help="Seed of the demo subjects."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
    old_output: Path = OLD_OUTPUT,
    old_contexts: int = OLD_CONTEXTS,
) -> None:
    """Segment four brain structures and denoise a scan from a few example subjects, then score.

    The case is built from the MNI template and AAL3 inside the installed packages (no download).
    Writes NIfTI outputs, triplanar PNGs, metrics.json and index.html into OUTPUT_DIR.

    \b
    Example:
      medverse demo --output-dir medverse_demo
    """
    from medverse.demo import DemoConfig, run_demo
    from medverse.errors import InputError

    output = spelled(
        ctx, output_dir, old_output, new="--output-dir", old="--output", default=DEFAULT_OUTPUT_DIR
    )
    num_contexts = spelled(
        ctx,
        num_contexts,
        old_contexts,
        new="--num-contexts",
        old="--contexts",
        default=DEFAULT_NUM_CONTEXTS,
    )
    if not output.parent.exists():
        raise InputError(f"'{output}': the parent folder '{output.parent}' does not exist")
    if output.exists() and not output.is_dir():
        raise InputError(f"'{output}' exists and is not a folder")
    config = DemoConfig(
        num_contexts=num_contexts, spacing=spacing, seed=seed, model=model, device=device
    )
    run_demo(output, config, echo=typer.echo)
