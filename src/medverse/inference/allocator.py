"""Keep freed memory for reuse during CPU inference (glibc ``malloc`` settings).

A window of the network allocates and frees the same few large feature maps again and again
(an 8-channel 64^3 map is 8 MiB). glibc serves such blocks with ``mmap`` and gives them back to
the system on ``free``, or trims them off the top of the heap, so every new map is fresh memory
that the kernel faults in page by page: about 40,000 minor page faults and a quarter of a
``medverse-small`` window's time on this project's CPUs. With ``M_MMAP_THRESHOLD`` at glibc's
maximum (32 MiB) and ``M_TRIM_THRESHOLD`` at 1 GiB, freed maps stay in the heap and are reused
(about 300 page faults a window); the arithmetic is the same, so the output is too.

The cost: memory freed during inference stays with the process (up to the peak it already
reached) instead of going back to the system. :func:`keep_freed_memory` is called by the first
CPU inference of a process; ``MEDVERSE_KEEP_FREED_MEMORY=0`` leaves ``malloc`` as it is. It does
nothing where the C library is not glibc (macOS, Windows, musl).

Example:
    >>> keep_freed_memory() in (True, False)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

log = logging.getLogger(__name__)

#: Set to ``0`` to leave glibc's malloc settings alone.
ENV = "MEDVERSE_KEEP_FREED_MEMORY"
#: Blocks up to this size come from the heap, not ``mmap`` (glibc's maximum on 64-bit).
MMAP_THRESHOLD = 32 * 1024**2
#: Free memory at the top of the heap kept before it is given back.
TRIM_THRESHOLD = 1024**3

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks for reuse, once per process.

    Returns:
        Whether the settings are in force (False when turned off by :data:`ENV`, on another C
        library, or when ``mallopt`` refused them).
    """
    if "active" in _state:
        return _state["active"]
    active = False
    if os.environ.get(ENV, "1").strip() != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt  # absent from musl
            active = bool(
                mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        except (OSError, AttributeError):
            active = False
    log.debug("malloc keeps freed memory: %s", active)
    _state["active"] = active
    return active
