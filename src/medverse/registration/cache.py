"""The on-disk registration cache: entries keyed by a digest of the content.

:func:`registration_key` digests both volumes (arrays, shapes, affines), the kind, the engine
and its version, and every setting; :class:`RegistrationCache` keeps one ``.npz`` per key,
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from medverse.errors import InputError
from medverse.files import atomic_path
from medverse.registration.ants_engine import _import_ants
from medverse.registration.settings import RegistrationSettings
from medverse.types import PathLike

if TYPE_CHECKING:
    from medverse.io.volume import Volume

__all__ = ["RegistrationCache", "default_cache_dir", "registration_key"]

logger = logging.getLogger(__name__)

_FORMAT = "medverse-registration-1"  # cache entries and keys; bump when results would change


def default_cache_dir() -> Path:
    """Where registrations are cached by default.

    ``$MEDVERSE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/medverse/registrations``, else
    ``~/.cache/medverse/registrations``.
    """
    explicit = os.environ.get("MEDVERSE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medverse" / "registrations"


class RegistrationCache:
    """Registrations on disk, one ``.npz`` per (fixed, moving, kind, engine, settings).

    The key is a BLAKE2 digest of both arrays, shapes and affines, the kind, engine, engine
    version and every setting, so any change to the inputs gives another entry. Entries are
    written to a temporary file and moved into place (``os.replace``), so concurrent writers and
    interrupted runs never leave a partial entry; an unreadable entry is ignored (and rewritten).

    Args:
        directory: the cache folder (created on first write); ``None`` uses
            :func:`default_cache_dir`.

    Raises:
        InputError: ``directory`` exists and is not a folder.

    Example:
        >>> cache = RegistrationCache("/tmp/medverse-registrations")  # doctest: +SKIP
        >>> register(target, context, cache=cache).cached  # doctest: +SKIP
        False
        >>> register(target, context, cache=cache).cached  # doctest: +SKIP
        True
    """

    def __init__(self, directory: PathLike | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        if self.directory.exists() and not self.directory.is_dir():
            raise InputError(f"registration cache '{self.directory}': not a folder")

    def __repr__(self) -> str:
        return f"RegistrationCache('{self.directory}')"

    def path(self, key: str) -> Path:
        """The file that holds (or would hold) the entry ``key``."""
        return self.directory / key[:2] / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The stored arrays of ``key``, or ``None`` when absent or unreadable."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                entry = {name: np.array(stored[name]) for name in stored.files}
            _check_entry(entry)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("ignoring unreadable registration cache entry %s (%s)", path, error)
            return None
        return entry

    def save(self, key: str, entry: dict[str, np.ndarray]) -> Path:
        """Write ``entry`` for ``key`` atomically; returns the path."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **entry)
        return path

    def clear(self) -> int:
        """Delete every entry; returns how many were removed."""
        removed = 0
        if self.directory.is_dir():
            for path in self.directory.glob("*/*.npz"):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _check_entry(entry: dict[str, np.ndarray]) -> None:
    if str(entry.get("format", "")) != _FORMAT:
        raise ValueError(f"format {entry.get('format')!r}, expected {_FORMAT!r}")
    world = entry["world"]
    if world.shape != (4, 4) or not np.isfinite(world).all():
        raise ValueError("world matrix is not a finite 4x4")
    if "field" in entry:
        field, field_affine = entry["field"], entry["field_affine"]
        if field.ndim != 4 or field.shape[0] != 3 or not np.isfinite(field).all():
            raise ValueError("displacement field is not a finite (3, X, Y, Z) array")
        if field_affine.shape != (4, 4):
            raise ValueError("field affine is not 4x4")


def registration_key(
    fixed: Volume, moving: Volume, kind: str, engine: str, settings: RegistrationSettings
) -> str:
    """The cache key of a registration: a digest of everything its result depends on."""
    digest = hashlib.blake2b(digest_size=20)
    header = {
        "format": _FORMAT,
        "kind": kind,
        "engine": engine,
        "engine_version": _engine_version(engine),
        "settings": asdict(settings),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for volume in (fixed, moving):
        array = np.ascontiguousarray(volume.array, dtype=np.float32)
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(volume.affine, dtype=np.float64).tobytes())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _engine_version(engine: str) -> str:
    if engine == "sitk":
        return str(sitk.Version.VersionString())
    ants = _import_ants()
    return str(getattr(ants, "__version__", "unknown"))
