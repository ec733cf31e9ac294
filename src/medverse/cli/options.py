"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from medverse.registration.cache import RegistrationCache

__all__ = [
    "CACHE_DIR",
    "NO_CACHE",
    "Engine",
    "ModelAlign",
    "Refine",
    "old_spelling",
    "registration_cache",
    "spelled",
]

T = TypeVar("T")

# Choices as click types, so a bad value is a usage error at once, before the command's heavy
# imports; tests/cli/test_options.py checks that they equal the library's constants
# (inference.driver.REFINE_MODES, evaluation.model_method.MODEL_ALIGNMENTS,
# registration.settings.ENGINES).


class Refine(str, Enum):
    all = "all"
    adaptive = "adaptive"


class ModelAlign(str, Enum):
    """How ``medverse evaluate`` brings the model's contexts to the target."""

    auto = "auto"
    none = "none"
    affine = "affine"
    deformable = "deformable"


class Engine(str, Enum):
    ants = "ants"
    sitk = "sitk"


CACHE_DIR = typer.Option(
    None,
    "--cache-dir",
    help="Registration cache, keyed by the images' content (default: $MEDVERSE_CACHE_DIR or "
    "~/.cache/medverse/registrations).",
)
NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write the registration cache.")


def registration_cache(cache_dir: Path | None, no_cache: bool) -> RegistrationCache | None:
    """The cache the two options above ask for."""
    from medverse.registration.cache import RegistrationCache, default_cache_dir

    return None if no_cache else RegistrationCache(cache_dir or default_cache_dir())


# One spelling per concept across commands: a count of contexts is --num-contexts (-k), an output
# folder is --output-dir (-o where the command had it). The spellings they replace stay for one
# release as hidden options; the command hands both values to :func:`spelled`.


def old_spelling(old: str, new: str) -> Any:
    """A hidden option ``old``: the previous spelling of ``new``, kept for one release."""
    return typer.Option(None, old, hidden=True, help=f"Old spelling of {new}.")


def spelled(
    ctx: typer.Context,
    value: T,
    old_value: T | None,
    *,
    new: str,
    old: str,
    default: T | None = None,
) -> T:
    """The value of option ``new``, or of its old spelling ``old`` when only that one was given.

    Args:
        ctx: the command's context (for the usage error).
        value: what ``new`` received (``default`` when it was not given).
        old_value: what ``old`` received (``None`` when it was not given).
        new: the option's name, for the messages.
        old: the old spelling's name.
        default: ``new``'s default.

    Returns:
        ``old_value`` when the old spelling was given (a warning on stderr names ``new``), else
        ``value``.

    Raises:
        click.UsageError: both spellings given with different values (exit code 2).
    """
    if old_value is None:
        return value
    if value != default and value != old_value:
        ctx.fail(f"{old} is the old spelling of {new}: give one of them")
    typer.echo(f"warning: {old} is now {new}; the old spelling goes in the next release", err=True)
    return old_value
