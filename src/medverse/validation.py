"""Shared input checks. Each raises :class:`~medverse.errors.InputError` naming the volume,
what was expected, what arrived and, where there is one, the fix.

These run at the boundaries (``io``, ``predict``, the CLI), never inside ``forward``.

Example:
    >>> import numpy as np
    >>> from medverse.validation import check_volume
    >>> try:
    ...     check_volume(np.zeros((4, 4, 4)), "case_001.nii.gz")
    ... except ValueError as error:
    ...     print(str(error).split(";")[0])
    'case_001.nii.gz': constant image (every voxel is 0)
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medverse.errors import InputError

__all__ = [
    "check_3d",
    "check_finite",
    "check_label_map",
    "check_nonempty_mask",
    "check_not_an_input",
    "check_option",
    "check_same_grid",
    "check_volume",
    "format_shape",
    "format_spacing",
]


def _as_numpy(array: Any) -> np.ndarray:
    """Return a NumPy view of ``array``; torch tensors are detached and moved to the CPU."""
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def format_shape(shape: Iterable[int]) -> str:
    """``(90, 100, 80)`` → ``"(90,100,80)"``: compact, for one-line messages."""
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


def format_spacing(spacing: Iterable[float]) -> str:
    """``(2, 2, 2)`` → ``"2.0 mm"``; ``(0.8, 1.2, 2.5)`` → ``"0.8x1.2x2.5 mm"``."""
    values = [float(s) for s in spacing]
    if values and np.allclose(values, values[0], rtol=0, atol=1e-3):
        return f"{values[0]:.3g} mm" if values[0] < 0.1 else f"{values[0]:.1f} mm"
    return "x".join(f"{v:.3g}" for v in values) + " mm"


def _spacing_from_affine(affine: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))


def check_option(value: str, options: Sequence[str], name: str) -> str:
    """Return ``value`` if it is one of ``options``; otherwise raise with the valid choices.

    Args:
        value: the option the user passed.
        options: the accepted values.
        name: the parameter's name, for the message (``"mode"``).

    Returns:
        ``value`` unchanged.

    Raises:
        InputError: ``value`` is not in ``options``; the message lists them and guesses a typo.
    """
    if isinstance(value, str) and value in options:
        return value
    choices = ", ".join(repr(o) for o in options)
    message = f"{name} must be one of {choices}; got {value!r}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value.lower(), list(options), n=1)
        if close:
            message += f". Did you mean {close[0]!r}?"
    raise InputError(message)


def check_3d(shape: Sequence[int], name: str) -> None:
    """Raise unless ``shape`` has exactly three axes ``(X, Y, Z)``.

    Raises:
        InputError: e.g. ``"'t1.nii.gz': expected a 3-D volume, got shape (20, 24)"``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise InputError(f"'{name}': expected a 3-D volume, got shape {shape}")
    if min(shape) < 1:
        raise InputError(f"'{name}': expected a non-empty 3-D volume, got shape {shape}")


def check_finite(array: Any, name: str) -> None:
    """Raise if ``array`` holds any NaN or infinite value, reporting how many.

    Raises:
        InputError: the message counts NaN and Inf voxels and suggests ``numpy.nan_to_num``.
    """
    data = _as_numpy(array)
    if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(
        data.dtype, np.complexfloating
    ):
        return
    finite = np.isfinite(data)
    if finite.all():
        return
    num_nan = int(np.isnan(data).sum())
    num_inf = int(data.size - finite.sum()) - num_nan
    raise InputError(
        f"'{name}': expected finite values, got {num_nan} NaN and {num_inf} Inf voxel(s) "
        f"out of {data.size}; replace them first (e.g. numpy.nan_to_num)"
    )


def check_volume(array: Any, name: str) -> None:
    """Check that ``array`` is a usable intensity volume: 3-D, finite and not constant.

    Args:
        array: NumPy array or torch tensor of shape ``(X, Y, Z)``.
        name: the volume's name or path, for the message.

    Raises:
        InputError: wrong number of axes, NaN/Inf voxels, or a constant image (min == max, so
            min-max normalisation would divide by zero).
    """
    data = _as_numpy(array)
    check_3d(data.shape, name)
    check_finite(data, name)
    low, high = data.min(), data.max()
    if low == high:
        raise InputError(
            f"'{name}': constant image (every voxel is {low.item():g}); min-max normalisation "
            "would divide by zero. Check that the right file was given"
        )


def check_nonempty_mask(array: Any, name: str) -> None:
    """Raise if a context mask has no foreground voxel (no value > 0.5).

    Raises:
        InputError: the message gives the mask's maximum and explains that a segmentation
            context must show the structure.
    """
    data = _as_numpy(array)
    if data.size and (data > 0.5).any():
        return
    high = f"{data.max().item():g}" if data.size else "n/a (empty array)"
    raise InputError(
        f"'{name}': context mask has no foreground voxel (> 0.5); its maximum is {high}. "
        "Each context output must contain the structure to segment; pick another context pair"
    )


MAX_LABEL = 2**31 - 1
"""The largest label value a segmentation may hold (label maps are written as integers)."""


def check_label_map(array: Any, name: str) -> None:
    """Raise unless ``array`` is a label map: finite, integer-valued, labels in 0..2**31-1.

    Raises:
        InputError: the message names the first offending value and how many voxels hold such
            values.
    """
    data = _as_numpy(array)
    check_finite(data, name)
    if not data.size:
        return
    problems = (
        (data != np.round(data), "with a non-integer value"),
        (data < 0, "with a negative value"),
        (data > MAX_LABEL, f"above {MAX_LABEL:,}, the largest label"),
    )
    for bad, what in problems:
        if bad.any():
            example = data[bad].flat[0].item()
            raise InputError(
                f"'{name}': a segmentation mask holds integer labels 0, 1, 2...; got "
                f"{int(bad.sum())} voxel(s) {what} (e.g. {example:g}). "
                "Give a label map, or --task image if this output is an image"
            )


def check_same_grid(
    shape_a: Sequence[int],
    affine_a: Any,
    shape_b: Sequence[int],
    affine_b: Any,
    name_a: str,
    name_b: str,
    atol: float = 1e-4,
    fix: str | None = None,
) -> None:
    """Raise unless two volumes share one voxel grid: same shape and affines equal within ``atol``.

    Args:
        shape_a, shape_b: spatial shapes ``(X, Y, Z)``.
        affine_a, affine_b: 4x4 voxel-to-world (RAS+, mm) matrices.
        name_a, name_b: names or paths for the message.
        atol: absolute tolerance on every affine entry (mm).
        fix: what the message tells the user to do; by default, resample one volume onto the
            other or let medverse do it (remove ``--no-resample``).

    Raises:
        InputError: the message shows both shapes, spacings and origins and how to fix it.
    """
    shape_a = tuple(int(s) for s in shape_a)
    shape_b = tuple(int(s) for s in shape_b)
    matrix_a = np.asarray(affine_a, dtype=np.float64)
    matrix_b = np.asarray(affine_b, dtype=np.float64)
    same_shape = shape_a == shape_b
    same_affine = matrix_a.shape == matrix_b.shape and np.allclose(
        matrix_a, matrix_b, rtol=0, atol=atol
    )
    if same_shape and same_affine:
        return
    what = "spatial shape" if not same_shape else "voxel-to-world affine"
    if not same_shape and not same_affine:
        what = "spatial shape and affine"

    def describe(shape: tuple[int, ...], matrix: np.ndarray) -> str:
        if matrix.shape != (4, 4):
            return f"{format_shape(shape)}, affine of shape {matrix.shape}"
        origin = ", ".join(f"{v:.4g}" for v in matrix[:3, 3])
        spacing = format_spacing(_spacing_from_affine(matrix))
        return f"{format_shape(shape)} {spacing}, origin ({origin})"

    raise InputError(
        f"'{name_a}' and '{name_b}' are not on the same voxel grid ({what} differs): "
        f"{describe(shape_a, matrix_a)} vs {describe(shape_b, matrix_b)}. "
        + (
            fix
            or "Resample one onto the other first (medverse.io.align_to_target), "
            "or remove --no-resample so medverse does it"
        )
    )


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) one inode."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False


def check_not_an_input(
    output: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None],
    option: str = "--output",
) -> None:
    """Raise if the file about to be written is one of the inputs (medverse never modifies them).

    Paths are compared after resolving symbolic links and ``..``, and by inode where both exist,
    so ``./a.nii.gz``, ``dir/../a.nii.gz`` and a hard link all count as ``a.nii.gz``.

    Args:
        output: the file that would be written.
        inputs: the files read (None entries are skipped).
        option: how the message names the output (``"--output"``, ``"--uncertainty"``).

    Raises:
        InputError: e.g. ``"'t1.nii.gz': --output is also an input (the target ...)"``.
    """
    out = Path(output).expanduser()
    for item in inputs:
        if item is None:
            continue
        if _same_file(out, Path(item).expanduser()):
            raise InputError(
                f"'{output}': {option} is the input file '{item}'; medverse never overwrites "
                "its inputs. Choose another output file"
            )
