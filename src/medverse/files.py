"""Atomic file writes: the one place medverse puts an output file in place.

Every writer (volumes, weights, checkpoints, caches, reports) writes to a hidden temporary file
in the destination folder and moves it onto the destination with one ``os.replace``. A reader
therefore sees either the old file or the complete new one, never a partial write, and a failed
or interrupted write leaves no temporary file behind.

The temporary file is named ``.tmp-<random>-<name>``: it keeps the destination's extension (so
nibabel, SimpleITK and numpy pick the same format) and lies on the same file system (so the
move is atomic). This module imports nothing from medverse; any layer may use it.

Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "table.csv") as temporary:
    ...     _ = temporary.write_text("a,b\\n1,2\\n")
    >>> sorted(p.name for p in folder.iterdir())
    ['table.csv']
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "temporary_name"]


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """The hidden temporary path beside ``path``: ``<folder>/.tmp-<8 hex>-<name>``."""
    path = Path(path)
    return path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``.

    The body writes the file at the yielded path (it is not created beforehand). When the body
    returns, the file replaces ``path`` with ``os.replace``; when it raises (any exception,
    ``KeyboardInterrupt`` included), or the move fails, the temporary file is deleted, ``path``
    is left as it was, and the exception propagates. The destination folder must exist.

    Args:
        path: the destination file.

    Yields:
        The temporary path (same folder, name ``.tmp-<random>-<name>``).

    Example:
        >>> import pathlib, tempfile, numpy as np
        >>> destination = pathlib.Path(tempfile.mkdtemp()) / "arrays.npz"
        >>> with atomic_path(destination) as temporary:
        ...     np.savez(temporary, x=np.zeros(3))
        >>> destination.is_file()
        True
    """
    destination = Path(path)
    temporary = temporary_name(destination)
    try:
        yield temporary
        try:
            os.replace(temporary, destination)
        except OSError as error:  # name the file the user asked for, not the temporary one
            raise type(error)(error.errno, error.strerror, str(destination)) from None
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically, encoded as ``encoding`` (UTF-8 by default).

    The text is written as given: no newline translation, whatever the platform or locale.
    """
    atomic_write_bytes(path, text.encode(encoding))
