"""Read and write 3-D volumes with their voxel-to-world affine.

Arrays keep the file's voxel order ``(X, Y, Z)``; nothing is reoriented. Affines are 4x4
voxel-to-world matrices in millimetres in the RAS+ convention used by nibabel and TorchIO, whatever
the file stores (ITK formats and DICOM are LPS on disk and are converted on the way in and out).

NIfTI goes through nibabel (its ``affine`` is the reference); NRRD, MetaImage and DICOM series go
through SimpleITK. Every failure surfaces as :class:`~medverse.errors.InputError` naming the file.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from medverse.io import read_volume, write_volume
    >>> affine = np.diag([0.8, -1.2, 2.5, 1.0]); affine[:3, 3] = (10.0, 20.0, -30.0)
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> path = write_volume(folder / "ct.nrrd", np.random.rand(20, 24, 16), affine)
    >>> volume = read_volume(path)
    >>> volume.shape, volume.orientation, np.allclose(volume.affine, affine)
    ((20, 24, 16), ('R', 'P', 'S'), True)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medverse.errors import InputError
from medverse.files import atomic_path, atomic_write_text
from medverse.types import PathLike
from medverse.validation import check_3d, check_option, format_shape, format_spacing

__all__ = [
    "READABLE_EXTENSIONS",
    "VOLUME_KINDS",
    "WRITABLE_EXTENSIONS",
    "Volume",
    "label_names_path",
    "nifti_codes",
    "read_volume",
    "write_label_names",
    "write_volume",
]

logger = logging.getLogger(__name__)

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
READABLE_EXTENSIONS = NIFTI_EXTENSIONS + ITK_EXTENSIONS
"""File name endings :func:`read_volume` accepts; a folder is read as a DICOM series."""
WRITABLE_EXTENSIONS = READABLE_EXTENSIONS
"""File name endings :func:`write_volume` accepts (DICOM is not written)."""
VOLUME_KINDS = ("image", "label")

# ITK stores LPS world coordinates; nibabel/TorchIO use RAS. Same matrix both ways.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Formats that SimpleITK writes as a header plus a separate data file.
_TWO_FILE_EXTENSIONS = (".nhdr", ".mhd")


@dataclass(eq=False)
class Volume:
    """A 3-D scalar volume and where it sits in the world.

    Args:
        array: voxel values, shape ``(X, Y, Z)`` in the file's voxel order; stored as float32.
        affine: 4x4 voxel-to-world matrix (RAS+, mm), stored as float64.
        path: the file or DICOM folder it came from, if any.
        name: how messages refer to it (defaults to the path as given).
        kind: ``"image"`` or ``"label"``; labels default to nearest-neighbour resampling.

    Example:
        >>> import numpy as np
        >>> Volume(np.zeros((20, 24, 16)), np.diag([0.8, 1.2, 2.5, 1.0]), name="demo")
        Volume('demo', shape=(20, 24, 16), spacing=(0.8, 1.2, 2.5), orientation=RAS)
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    name: str = "volume"
    kind: str = "image"

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path = Path(self.path)
        check_option(self.kind, VOLUME_KINDS, "kind")
        self.array = _as_float32(self.array)
        check_3d(self.array.shape, self.name)
        self.affine = _check_affine(self.affine, self.name)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        x, y, z = self.array.shape
        return (int(x), int(y), int(z))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        x, y, z = (float(s) for s in _spacing(self.affine))
        return (x, y, z)

    @property
    def orientation(self) -> tuple[str, str, str]:
        """Axis codes of the world direction each array axis points to, e.g. ``('L', 'P', 'S')``."""
        codes = nib.aff2axcodes(self.affine)
        return (str(codes[0]), str(codes[1]), str(codes[2]))

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"Volume({self.name!r}, shape={self.shape}, spacing=({spacing}), "
            f"orientation={''.join(self.orientation)})"
        )

    def describe(self) -> str:
        """One-line grid summary for messages, e.g. ``"(90,100,80) 2.0 mm LPS"``."""
        return (
            f"{format_shape(self.shape)} {format_spacing(self.spacing)} {''.join(self.orientation)}"
        )

    def save(self, path: PathLike, *, dtype: Any = None) -> Path:
        """Write this volume with :func:`write_volume` and return the path written."""
        return write_volume(path, self.array, self.affine, dtype=dtype)


# ----------------------------------------------------------------------------------- helpers


def _as_float32(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))


def _check_affine(affine: Any, name: str) -> np.ndarray:
    matrix = np.array(affine, dtype=np.float64)  # a copy: callers keep their own
    if matrix.shape != (4, 4):
        raise InputError(f"'{name}': expected a 4x4 affine, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InputError(f"'{name}': affine has NaN or Inf entries:\n{matrix}")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise InputError(f"'{name}': affine is singular (a zero voxel size?):\n{matrix}")
    return matrix


def _extension(path: Path) -> str:
    """The supported ending of ``path`` (``".nii.gz"``), or its last suffix if unsupported."""
    lower = path.name.lower()
    for extension in READABLE_EXTENSIONS:
        if lower.endswith(extension):
            return extension
    return path.suffix.lower()


def _check_shape(shape: tuple[int, ...], where: str) -> None:
    """Accept ``(X, Y, Z)`` and a single-volume ``(X, Y, Z, 1)``; refuse anything else."""
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        return
    hint = ""
    if len(shape) == 4:
        hint = f" ({shape[3]} volumes in one file); extract one first, e.g. with nibabel's slicer"
    elif len(shape) == 2:
        hint = "; medverse needs 3-D volumes, not 2-D images"
    raise InputError(f"{where}: expected a 3-D volume, got shape {shape}{hint}")


def _to_3d(array: np.ndarray, where: str) -> np.ndarray:
    """Squeeze a single-volume 4-D array ``(X, Y, Z, 1)`` to ``(X, Y, Z)``."""
    shape = tuple(int(s) for s in array.shape)
    _check_shape(shape, where)
    return array[..., 0] if len(shape) == 4 else array


def _where(path: Path, kind: str) -> str:
    return f"label '{path}'" if kind == "label" else f"'{path}'"


# -------------------------------------------------------------------------------------- read


def read_volume(path: PathLike, *, name: str | None = None, kind: str = "image") -> Volume:
    """Read a NIfTI, NRRD or MetaImage file, or a folder holding one DICOM series.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, or a folder.
        name: how messages refer to the volume; defaults to ``str(path)``.
        kind: ``"image"`` or ``"label"``. Both are returned as float32; the kind only changes
            messages and the default interpolation when the volume is resampled.

    Returns:
        A :class:`Volume` with the array in the file's voxel order ``(X, Y, Z)`` and the RAS+
        affine. A 4-D file holding one volume (last axis of length 1) is squeezed to 3-D.

    Raises:
        InputError: missing path, unknown extension, unreadable or truncated file, or data that
            is not one 3-D volume. The message names the file.

    Example:
        >>> volume = read_volume("case_001.nii.gz")  # doctest: +SKIP
        >>> volume  # doctest: +SKIP
        Volume('case_001.nii.gz', shape=(512, 512, 88), spacing=(0.78, 0.78, 2.5), orientation=LPS)
    """
    check_option(kind, VOLUME_KINDS, "kind")
    path = Path(path).expanduser()
    where = _where(path, kind)
    if not path.exists():
        folder = path.parent
        detail = "" if folder.is_dir() else f" (folder '{folder}' does not exist either)"
        raise InputError(f"{where}: no such file or folder{detail}")
    if path.is_dir():
        reader, form = _read_dicom_series, "DICOM series"
    else:
        extension = _extension(path)
        if extension in NIFTI_EXTENSIONS:
            reader, form = _read_nifti, "NIfTI"
        elif extension in ITK_EXTENSIONS:
            reader, form = _read_itk, extension.lstrip(".").upper()
        else:
            hint = ""
            if extension in (".dcm", ".ima", ""):
                hint = "; for DICOM pass the folder that holds the series"
            raise InputError(
                f"{where}: unknown extension {extension or '(none)'!r}; expected one of "
                f"{', '.join(READABLE_EXTENSIONS)} or a DICOM series folder{hint}"
            )
    try:
        array, affine = reader(path, where)
    except (InputError, MemoryError):
        raise
    except Exception as error:  # nibabel/ITK/zlib raise many types; re-raise as one
        raise InputError(
            f"{where}: cannot read it as {form} ({type(error).__name__}: {error}); "
            "the file may be truncated or corrupt"
        ) from error
    volume = Volume(
        array=array,
        affine=affine,
        path=path,
        name=str(path) if name is None else name,
        kind=kind,
    )
    logger.debug("read %r", volume)
    return volume


def _read_nifti(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path), mmap=False)
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{where}: expected a NIfTI image, got {type(image).__name__}")
    _check_shape(tuple(int(s) for s in image.shape), where)  # before reading any data
    header = image.header
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        warnings.warn(
            f"{where}: the NIfTI header has neither sform nor qform; using nibabel's "
            "fallback affine (voxel sizes only, no orientation or origin)",
            stacklevel=3,  # the caller of read_volume
        )
    data = np.asarray(image.dataobj, dtype=np.float32)  # applies scl_slope/scl_inter
    return _to_3d(data, where), np.asarray(image.affine, dtype=np.float64)


def _read_itk(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()  # fails fast on a bad header, before any data is read
    _check_itk_shape(reader.GetSize(), reader.GetNumberOfComponents(), where)
    return _from_sitk(reader.Execute(), where)


def _read_dicom_series(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise InputError(
            f"{where}: folder holds no DICOM series; pass a folder of DICOM slices or a "
            f"file ending in {', '.join(READABLE_EXTENSIONS)}"
        )
    if len(series) > 1:
        sizes = ", ".join(
            f"{uid} ({len(reader.GetGDCMSeriesFileNames(str(path), uid))} files)" for uid in series
        )
        raise InputError(
            f"{where}: folder holds {len(series)} DICOM series ({sizes}); expected one. "
            "Move each series into its own folder"
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
    image = reader.Execute()
    _check_itk_shape(image.GetSize(), image.GetNumberOfComponentsPerPixel(), where)
    return _from_sitk(image, where)


def _check_itk_shape(size: tuple[int, ...], num_components: int, where: str) -> None:
    shape = tuple(int(s) for s in size) + ((int(num_components),) if num_components > 1 else ())
    _check_shape(shape, where)


def _from_sitk(image: sitk.Image, where: str) -> tuple[np.ndarray, np.ndarray]:
    """ITK image → (array ``(X, Y, Z)``, RAS affine)."""
    dimension = image.GetDimension()
    data = sitk.GetArrayFromImage(image)  # reversed axes: (Z, Y, X) or (T, Z, Y, X)
    data = np.asarray(data, dtype=np.float32).transpose(tuple(range(dimension))[::-1])
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction[:3, :3] * spacing
    affine_lps[:3, 3] = origin
    return _to_3d(data, where), _LPS_TO_RAS @ affine_lps


def _to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """Array ``(X, Y, Z)`` + RAS affine → ITK image (LPS geometry)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    affine_lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = _spacing(affine_lps)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in affine_lps[:3, 3]])
    image.SetDirection([float(v) for v in (affine_lps[:3, :3] / spacing).ravel()])
    return image


# ------------------------------------------------------------------------------------- write


def nifti_codes(path: PathLike | None) -> tuple[int, int] | None:
    """``(sform_code, qform_code)`` of a NIfTI file's header, or None (not NIfTI, unreadable).

    Only the header is read. :func:`write_volume` takes them so that an output keeps the codes
    of the volume it was computed from (scanner, aligned, template, MNI...).
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file() or _extension(path) not in NIFTI_EXTENSIONS:
        return None
    try:
        header = nib.load(str(path)).header
        return int(header["sform_code"]), int(header["qform_code"])
    except Exception:  # a header we cannot read just keeps the default codes
        return None


def write_volume(
    path: PathLike,
    array: Any,
    affine: Any,
    *,
    dtype: Any = None,
    codes: tuple[int, int] | None = None,
) -> Path:
    """Write a 3-D array and its affine atomically; the format follows the extension.

    The data go to a hidden temporary file in the destination folder (``.tmp-<random>-<name>``),
    which then replaces ``path`` in one ``os.replace``; on any failure the temporary file is
    removed and ``path`` is left as it was. For the two-file formats (``.mhd``, ``.nhdr``) the
    data file is moved into place before the header.

    Args:
        path: destination ending in ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha`` or
            ``.mhd``. Its folder must exist.
        array: voxel values, shape ``(X, Y, Z)`` (NumPy array or torch tensor).
        affine: 4x4 voxel-to-world matrix (RAS+, mm), written as given (NIfTI stores it in
            float32, so entries round-trip to ~1e-7 relative).
        dtype: on-disk data type. ``None`` keeps the array's type, except bool → uint8,
            float16/float64 → float32 and 64-bit integers → int32. Floats cast to an integer
            type are rounded; values out of that type's range raise.
        codes: NIfTI ``(sform_code, qform_code)`` to write (e.g. the input's, from
            :func:`nifti_codes`); a code of 0 leaves that transform unset. None, or both 0,
            writes the affine as both sform and qform with code 1 (scanner). Other formats
            ignore it.

    Returns:
        The path written.

    Raises:
        InputError: unsupported extension, missing folder, not 3-D, bad affine, values that do
            not fit ``dtype``, or the writer failed.
    """
    path = Path(path).expanduser()
    extension = _extension(path)
    if extension not in WRITABLE_EXTENSIONS:
        raise InputError(
            f"'{path}': cannot write extension {extension or '(none)'!r}; expected one of "
            f"{', '.join(WRITABLE_EXTENSIONS)} (DICOM is not written)"
        )
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"'{path}': output folder '{folder}' does not exist; create it first")
    if path.is_dir():
        raise InputError(f"'{path}': is a folder, expected a file name")
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    data = np.asarray(array)
    check_3d(data.shape, str(path))
    matrix = _check_affine(affine, str(path))
    data = _cast(data, dtype, path)

    try:
        if extension in _TWO_FILE_EXTENSIONS:
            _write_two_files(path, data, matrix, secrets.token_hex(4))  # not NIfTI: no codes
        else:
            with atomic_path(path) as temporary:
                _write_file(temporary, extension, data, matrix, codes)
    except (InputError, MemoryError):
        raise
    except Exception as error:
        raise InputError(
            f"'{path}': could not write it ({type(error).__name__}: {error}); nothing was written"
        ) from error
    logger.debug("wrote %s %s", path, format_shape(data.shape))
    return path


def label_names_path(path: PathLike) -> Path:
    """Where the label-name sidecar of a segmentation file goes: ``seg.nii.gz`` -> ``seg.labels.json``.

    The sidecar takes the file's name without its volume extension, so several outputs in one
    folder each get their own.
    """
    path = Path(path)
    extension = _extension(path)
    stem = path.name[: -len(extension)] if extension else path.name
    return path.with_name(f"{stem}.labels.json")


def write_label_names(
    path: PathLike, labels: Sequence[int], names: Mapping[int, str] | None = None
) -> Path:
    """Write the label-name sidecar of the segmentation written at ``path``, atomically.

    The sidecar (:func:`label_names_path`) maps every label value of the segmentation, background
    included, to a name: ``{"0": "background", "1": "liver", "2": "label 2"}``. Values without a
    name in ``names`` are called ``"label N"`` (``"background"`` for 0).

    Args:
        path: the segmentation file (written or about to be).
        labels: its foreground label values.
        names: label value -> name, e.g. from an nnU-Net ``dataset.json``.

    Returns:
        The sidecar's path.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> write_label_names(folder / "seg.nii.gz", [1, 2], {1: "liver"}).name
        'seg.labels.json'
    """
    names = dict(names or {})
    table = {}
    for value in sorted({0, *(int(v) for v in labels)}):
        default = "background" if value == 0 else f"label {value}"
        table[str(value)] = str(names.get(value) or default)
    sidecar = label_names_path(path)
    atomic_write_text(sidecar, json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    return sidecar


def _write_file(
    path: Path,
    extension: str,
    data: np.ndarray,
    affine: np.ndarray,
    codes: tuple[int, int] | None = None,
) -> None:
    if extension in NIFTI_EXTENSIONS:
        image = nib.Nifti1Image(data, affine)
        sform_code, qform_code = codes if codes and any(codes) else (1, 1)  # 1: scanner
        image.set_sform(affine if sform_code else None, code=sform_code)
        image.set_qform(affine if qform_code else None, code=qform_code)
        image.header.set_xyzt_units("mm")
        nib.save(image, str(path))
    else:
        sitk.WriteImage(_to_sitk(data, affine), str(path), useCompression=True)


def _write_two_files(path: Path, data: np.ndarray, affine: np.ndarray, token: str) -> None:
    # Not medverse.files.atomic_path: the writer makes two files (header + data) whose names it
    # chooses itself, so they are written into a hidden staging folder and each is moved out with
    # os.replace, the data first and the header last.
    staging = path.parent / f".tmp-{token}-{path.name}.d"
    staging.mkdir()
    try:
        header = staging / path.name
        _write_file(header, _extension(path), data, affine)
        for item in sorted(staging.iterdir()):  # data file(s) first, the header last
            if item != header:
                os.replace(item, path.parent / item.name)
        os.replace(header, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cast(data: np.ndarray, dtype: Any, path: Path) -> np.ndarray:
    if dtype is None:
        if data.dtype == np.bool_:
            return data.astype(np.uint8)
        if data.dtype in (np.float16, np.float64):
            return data.astype(np.float32)
        if data.dtype in (np.int64, np.uint64):
            target = np.dtype(np.int32)
        elif data.dtype.kind in "iuf":
            return data
        else:
            raise InputError(f"'{path}': cannot write array of dtype {data.dtype}")
    else:
        try:
            target = np.dtype(dtype)
        except TypeError as error:
            raise InputError(f"'{path}': unknown dtype {dtype!r}") from error
        if target == np.bool_:
            target = np.dtype(np.uint8)
        if target.kind not in "iuf":
            raise InputError(f"'{path}': dtype must be an integer or float type, got {target}")
    if target.kind in "iu" and data.dtype.kind not in "iub":
        if not np.isfinite(data).all():
            raise InputError(f"'{path}': NaN or Inf values cannot be written as {target}")
        data = np.rint(data)
    if target.kind in "iu" and data.size:
        info = np.iinfo(target)
        low, high = data.min(), data.max()
        if low < info.min or high > info.max:
            raise InputError(
                f"'{path}': values span [{low}, {high}], outside the range of {target} "
                f"[{info.min}, {info.max}]; pass a wider dtype (e.g. dtype='float32')"
            )
    return data.astype(target)
