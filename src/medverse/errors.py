"""Exception types. Each subclasses a built-in so ``except ValueError`` keeps working."""

from __future__ import annotations

__all__ = [
    "MedverseError",
    "InputError",
    "RegistrationError",
    "CheckpointError",
    "ResourceError",
]


class MedverseError(Exception):
    """Base class of every error medverse raises on purpose."""


class InputError(MedverseError, ValueError):
    """A user-supplied volume, file, option or folder is unusable; the message names it."""


class RegistrationError(InputError):
    """A registration ran but failed or gave an implausible result (the message names the
    file); the images themselves were usable, so a simpler alignment may still work."""


class CheckpointError(MedverseError, ValueError):
    """A weight file cannot be read or does not match the architecture."""


class ResourceError(MedverseError, RuntimeError):
    """Not enough memory for the requested settings; the message says which knob to lower."""
