"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from medverse.registration import RegistrationCache

__all__ = ["CACHE_DIR", "NO_CACHE", "registration_cache"]

CACHE_DIR = typer.Option(
    None,
    "--cache-dir",
    help="Registration cache, keyed by the images' content (default: $MEDVERSE_CACHE_DIR or "
    "~/.cache/medverse/registrations).",
)
NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write the registration cache.")


def registration_cache(cache_dir: Path | None, no_cache: bool) -> RegistrationCache | None:
    """The cache the two options above ask for."""
    from medverse.registration import RegistrationCache, default_cache_dir

    return None if no_cache else RegistrationCache(cache_dir or default_cache_dir())
