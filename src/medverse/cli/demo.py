"""``medverse demo``: the bundled model on a packaged real-anatomy case, with an HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["demo"]


def demo(
    output: Path = typer.Option(
        Path("medverse_demo"), "--output", "-o", help="Output folder (created if missing)."
    ),
    model: str = typer.Option("medverse-small", "--model", "-m", help="Name or weights path."),
    contexts: int = typer.Option(4, "--contexts", "-k", help="Context subjects (1-16)."),
    spacing: float = typer.Option(
        3.5, help="Voxel size in mm of the case (same head at any spacing)."
    ),
    seed: int = typer.Option(2026, help="Seed of the demo subjects."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Segment four brain structures and denoise a scan from a few example subjects, then score.

    The case is built from the MNI template and AAL3 inside the installed packages (no download).
    Writes NIfTI outputs, triplanar PNGs, metrics.json and index.html into OUTPUT.

    \b
    Example:
      medverse demo --output medverse_demo
    """
    from medverse.demo import DemoConfig, run_demo
    from medverse.errors import InputError

    if not output.parent.exists():
        raise InputError(f"'{output}': the parent folder '{output.parent}' does not exist")
    if output.exists() and not output.is_dir():
        raise InputError(f"'{output}' exists and is not a folder")
    config = DemoConfig(
        num_contexts=contexts, spacing=spacing, seed=seed, model=model, device=device
    )
    run_demo(output, config, echo=typer.echo)
