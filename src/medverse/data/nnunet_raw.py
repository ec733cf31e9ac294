"""Training data in the nnU-Net raw layout, preprocessed once and cached.

A dataset folder holds ``dataset.json``, ``imagesTr/{case}_{channel:04d}{file_ending}`` and
``labelsTr/{case}{file_ending}`` (nnU-Net v2; the v1 keys ``modality`` and ``{"0": "background"}``
label tables are read too). :class:`NnUNetDataset` checks the folder when it is built (files
present, shapes equal, requested labels known, something left after filtering) and raises
:class:`~medverse.errors.InputError` naming the file, so a broken dataset fails before training.
:meth:`NnUNetDataset.prepare` goes further: it preprocesses every case (filling the cache) and
checks that label files hold only ids of ``dataset.json``.

Each case is preprocessed as :class:`~medverse.data.preprocess.PreprocessConfig` says and becomes a
:class:`~medverse.data.cases.Case`. Results are cached per case in ``.npz`` files keyed by a hash
of the configuration and of the source files' paths, sizes and modification times, so an epoch
does not re-read or re-resample NIfTIs.

This is the training side of the layout. The held-out evaluation of a user's nnU-Net folder is
:mod:`medverse.evaluation.nnunet`, and :meth:`medverse.io.context.Context.from_nnunet` reads such a
folder as contexts; both read the layout themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torchio as tio

from medverse.errors import InputError
from medverse.files import atomic_path
from medverse.io.dataset_json import read_dataset_json
from medverse.types import PathLike

from .cases import Case
from .preprocess import PreprocessConfig, _as_label_dtype

__all__ = ["NnUNetDataset"]

logger = logging.getLogger(__name__)

#: Bump when the cached content changes meaning; old cache files are then ignored.
CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------
# Reading: the only functions that touch image files
# --------------------------------------------------------------------------------------------


def _read_image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read any format TorchIO reads: ``(C, X, Y, Z)`` float32 array and RAS affine."""
    tensor, affine = tio.io.read_image(path)
    return np.asarray(tensor, dtype=np.float32), np.asarray(affine, dtype=np.float64)


def _read_shape(path: Path) -> tuple[int, ...]:
    """Shape ``(C, X, Y, Z)`` from the header only."""
    return tuple(int(n) for n in tio.io.read_shape(path))


# --------------------------------------------------------------------------------------------
# nnU-Net raw folders
# --------------------------------------------------------------------------------------------


class NnUNetDataset:
    """An nnU-Net raw dataset folder, checked on construction, preprocessed and cached per case.

    Args:
        root: the dataset folder (holding ``dataset.json``).
        weight: sampling weight when mixed with others
            (:class:`~medverse.data.datasets.DatasetMix`).
        preprocess: preprocessing; default :class:`PreprocessConfig()`.
        cache_dir: folder for preprocessed ``.npz`` files (a sub-folder per dataset);
            ``None`` = no cache, every :meth:`load_case` reads and preprocesses again.
        labels: label names or ids that segmentation tasks may use (default: every non-zero id of
            ``dataset.json``). Unknown names/ids raise.
        cases: keep only these case names (e.g. a training split); unknown names raise.
        require_labels: if ``False``, cases without a label file are kept (``Case.labels`` is
            ``None``; they serve transformation and enhancement tasks only).
        brain_mask_from_labels: ``label > 0`` is a brain mask, enabling image -> skull-stripped
            image transformation tasks (METHOD.md §4). Use it for brain datasets whose labels
            cover the brain, and for synthetic data.
        name: dataset name; default ``dataset.json``'s ``name`` or the folder name.
        check_shapes: read every header on construction and compare shapes (cheap; no voxel data).

    Raises:
        InputError: missing/invalid ``dataset.json``, missing image or label file, image/label
            shape mismatch, unknown label or case requested, or no case left; the message names
            the file.

    Example:
        >>> import tempfile
        >>> from medverse.data.phantoms import write_synthetic_dataset
        >>> root = write_synthetic_dataset(tempfile.mkdtemp(), num_subjects=2, shape=(8, 8, 8))
        >>> dataset = NnUNetDataset(root)
        >>> case = dataset.load_case(0)
        >>> case.images.shape[0], case.channel_names
        (2, ('synth0', 'synth1'))
    """

    def __init__(
        self,
        root: PathLike,
        *,
        weight: float = 1.0,
        preprocess: PreprocessConfig | None = None,
        cache_dir: PathLike | None = None,
        labels: Sequence[str | int] | None = None,
        cases: Sequence[str] | None = None,
        require_labels: bool = True,
        brain_mask_from_labels: bool = False,
        name: str | None = None,
        check_shapes: bool = True,
    ):
        self.root = Path(root)
        if not (math.isfinite(weight) and weight > 0):
            raise InputError(
                f"dataset '{self.root}': weight must be a positive number, got {weight}"
            )
        self.weight = float(weight)
        self.preprocess = preprocess if preprocess is not None else PreprocessConfig()
        self.require_labels = require_labels
        self.brain_mask_from_labels = brain_mask_from_labels
        description = read_dataset_json(self.root, required=True)
        self.name = name or str(description.get("name") or self.root.name)
        self.file_ending = str(description.get("file_ending", ".nii.gz"))
        self.channel_names = self._parse_channels(description)
        self.label_table = self._parse_labels(description)
        self.label_names = {v: k for k, v in self.label_table.items()}
        self.label_ids = self._select_labels(labels)
        self.case_names = self._list_cases(cases, description)
        self.labeled = tuple(self.label_path(i).exists() for i in range(len(self.case_names)))
        if check_shapes:
            self._check_shapes()
        self.cache_dir = None
        if cache_dir is not None:
            digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)
            self.cache_dir = Path(cache_dir) / f"{safe}-{digest}"
        logger.info("dataset %s: %d cases, channels %s", self.name, len(self), self.channel_names)

    # -- parsing -------------------------------------------------------------------------------

    def _parse_channels(self, description: dict) -> tuple[str, ...]:
        channels = description.get("channel_names", description.get("modality"))
        path = self.root / "dataset.json"
        if not isinstance(channels, dict) or not channels:
            raise InputError(
                f"'{path}' needs a non-empty 'channel_names' object such as {{\"0\": \"T1\"}}"
            )
        try:
            ordered = sorted((int(k), str(v)) for k, v in channels.items())
        except ValueError as error:
            raise InputError(
                f"'{path}': channel_names keys must be '0', '1', ..., got {list(channels)}"
            ) from error
        if [k for k, _ in ordered] != list(range(len(ordered))):
            raise InputError(
                f"'{path}': channel_names keys must be 0..{len(ordered) - 1}, got {[k for k, _ in ordered]}"
            )
        return tuple(v for _, v in ordered)

    def _parse_labels(self, description: dict) -> dict[str, int]:
        path = self.root / "dataset.json"
        labels = description.get("labels")
        if labels is None:
            if self.require_labels:
                raise InputError(
                    f"'{path}' has no 'labels' table; add one or pass require_labels=False"
                )
            return {"background": 0}
        if not isinstance(labels, dict):
            raise InputError(f"'{path}': 'labels' must be an object name -> id")
        table: dict[str, int] = {}
        for key, value in labels.items():
            if isinstance(value, str) and str(key).isdigit():  # nnU-Net v1: {"0": "background"}
                key, value = value, int(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(
                    f"'{path}': label '{key}' has id {value!r}; only integer ids are supported "
                    "(region-based labels are not)"
                )
            table[str(key)] = int(value)
        return table

    def _select_labels(self, requested: Sequence[str | int] | None) -> tuple[int, ...]:
        foreground = sorted(v for v in self.label_table.values() if v != 0)
        if requested is None:
            return tuple(foreground)
        chosen = []
        for item in requested:
            if isinstance(item, str) and item in self.label_table:
                chosen.append(self.label_table[item])
            elif not isinstance(item, str) and int(item) in self.label_table.values():
                chosen.append(int(item))
            else:
                raise InputError(
                    f"dataset '{self.name}' ({self.root / 'dataset.json'}): unknown label {item!r}; "
                    f"known labels are {self.label_table}"
                )
        if not [c for c in chosen if c != 0]:
            raise InputError(
                f"dataset '{self.name}': labels={list(requested)} selects no foreground label"
            )
        return tuple(sorted({c for c in chosen if c != 0}))

    def _list_cases(self, requested: Sequence[str] | None, description: dict) -> tuple[str, ...]:
        images = self.root / "imagesTr"
        if not images.is_dir():
            raise InputError(
                f"'{images}' not found; images go in imagesTr/{{case}}_0000{self.file_ending}"
            )
        suffix = f"_0000{self.file_ending}"
        found = sorted(p.name[: -len(suffix)] for p in images.iterdir() if p.name.endswith(suffix))
        expected = description.get("numTraining")
        if isinstance(expected, int) and expected != len(found):
            warnings.warn(
                f"dataset '{self.name}': dataset.json says numTraining={expected}, found {len(found)} cases in '{images}'",
                stacklevel=3,
            )
        if requested is not None:
            unknown = sorted(set(requested) - set(found))
            if unknown:
                raise InputError(f"dataset '{self.name}': cases {unknown} not found in '{images}'")
            found = [c for c in found if c in set(requested)]
        if not found:
            raise InputError(
                f"dataset '{self.name}': no case left in '{images}' (looked for *{suffix}"
                + (f", filtered by cases={list(requested)}" if requested is not None else "")
                + ")"
            )
        for case in found:
            for path in self.image_paths_of(case):
                if not path.is_file():
                    raise InputError(
                        f"dataset '{self.name}', case '{case}': modality file '{path}' is missing "
                        f"(channels {list(self.channel_names)})"
                    )
            label = self.root / "labelsTr" / f"{case}{self.file_ending}"
            if self.require_labels and not label.is_file():
                raise InputError(
                    f"dataset '{self.name}', case '{case}': label file '{label}' is missing; "
                    "add it, drop the case with cases=..., or pass require_labels=False"
                )
        return tuple(found)

    def _check_shapes(self) -> None:
        for index, case in enumerate(self.case_names):
            paths = self.image_paths(index)
            reference = _read_shape(paths[0])
            for path in paths:
                shape = _read_shape(path)
                if shape[0] != 1:
                    raise InputError(
                        f"dataset '{self.name}': '{path}' has {shape[0]} channels; nnU-Net layout "
                        "stores one 3-D volume per file"
                    )
                if shape != reference:
                    raise InputError(
                        f"dataset '{self.name}', case '{case}': '{path}' has shape {shape[1:]}, "
                        f"'{paths[0]}' has {reference[1:]}"
                    )
            if self.labeled[index]:
                label = self.label_path(index)
                shape = _read_shape(label)
                if shape[1:] != reference[1:]:
                    raise InputError(
                        f"dataset '{self.name}', case '{case}': label '{label}' has shape {shape[1:]} "
                        f"but image '{paths[0]}' has {reference[1:]}"
                    )

    # -- access --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.case_names)

    def __getitem__(self, index: int) -> Case:
        return self.load_case(index)

    def __iter__(self) -> Iterator[Case]:
        for index in range(len(self)):
            yield self.load_case(index)

    def __repr__(self) -> str:
        return (
            f"NnUNetDataset(name={self.name!r}, root='{self.root}', cases={len(self)}, "
            f"channels={self.channel_names}, labels={self.label_ids}, weight={self.weight})"
        )

    def image_paths_of(self, case: str) -> list[Path]:
        """Image files of a case name, one per channel."""
        return [
            self.root / "imagesTr" / f"{case}_{c:04d}{self.file_ending}"
            for c in range(len(self.channel_names))
        ]

    def image_paths(self, index: int) -> list[Path]:
        """Image files of case ``index``, one per channel."""
        return self.image_paths_of(self.case_names[index])

    def label_path(self, index: int) -> Path:
        """Label file of case ``index`` (may not exist when ``require_labels=False``)."""
        return self.root / "labelsTr" / f"{self.case_names[index]}{self.file_ending}"

    @property
    def labeled_indices(self) -> tuple[int, ...]:
        """Indices of cases that have a label file."""
        return tuple(i for i, has in enumerate(self.labeled) if has)

    def cache_path(self, index: int) -> Path | None:
        """Where case ``index`` is cached under the current configuration (``None``: no cache)."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{self.case_names[index]}-{self._cache_key(index)}.npz"

    def _cache_key(self, index: int) -> str:
        sources = [*self.image_paths(index)]
        if self.labeled[index]:
            sources.append(self.label_path(index))
        stamp = []
        for path in sources:
            stat = path.stat()
            stamp.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
        payload = json.dumps([CACHE_VERSION, self.preprocess.to_dict(), stamp], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def load_case(self, index: int) -> Case:
        """Preprocessed case ``index``, from the cache when it is current.

        Raises:
            InputError: a file cannot be read, or the label file holds ids missing from
                ``dataset.json`` (the message names the file).
        """
        if not -len(self) <= index < len(self):
            raise IndexError(
                f"case index {index} out of range for {len(self)} cases of '{self.name}'"
            )
        index = index % len(self)
        path = self.cache_path(index)
        if path is not None and path.is_file():
            try:
                return self._load_cached(index, path)
            except (OSError, ValueError, KeyError) as error:  # damaged file: rebuild it
                logger.warning("ignoring damaged cache file %s: %s", path, error)
        case = self._preprocess(index)
        if path is not None:
            self._write_cache(case, path)
        return case

    def prepare(self, *, progress: bool = False) -> None:
        """Preprocess (and cache) every case now, checking label values; call before training."""
        indices: Sequence[int] = range(len(self))
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"preparing {self.name}")
        for index in indices:
            self.load_case(index)

    # -- preprocessing -------------------------------------------------------------------------

    def _preprocess(self, index: int) -> Case:
        case = self.case_names[index]
        paths = self.image_paths(index)
        subject_items: dict[str, tio.Image] = {}
        reference_affine = None
        for channel, path in enumerate(paths):
            array, affine = self._read(path)
            if reference_affine is None:
                reference_affine = affine
            elif not np.allclose(affine, reference_affine, atol=1e-3):
                warnings.warn(
                    f"'{path}' has another affine than '{paths[0]}'; using the latter",
                    stacklevel=3,
                )
            subject_items[f"image_{channel}"] = tio.ScalarImage(
                tensor=torch.from_numpy(array), affine=reference_affine
            )
        labels = None
        if self.labeled[index]:
            label_path = self.label_path(index)
            array, affine = self._read(label_path)
            if array.shape[1:] != subject_items["image_0"].shape[1:]:
                raise InputError(
                    f"dataset '{self.name}', case '{case}': label '{label_path}' has shape {array.shape[1:]} "
                    f"but image '{paths[0]}' has {subject_items['image_0'].shape[1:]}"
                )
            if not np.allclose(array, np.round(array)):
                raise InputError(
                    f"label '{label_path}' holds non-integer values; labels must be integer ids"
                )
            unknown = sorted(
                set(np.unique(array).astype(int).tolist()) - set(self.label_table.values())
            )
            if unknown:
                raise InputError(
                    f"label '{label_path}' holds ids {unknown} that are not in "
                    f"'{self.root / 'dataset.json'}' (known: {sorted(self.label_table.values())})"
                )
            if not np.allclose(affine, reference_affine, atol=1e-3):
                warnings.warn(
                    f"'{label_path}' has another affine than '{paths[0]}'; using the latter",
                    stacklevel=3,
                )
            subject_items["label"] = tio.LabelMap(
                tensor=torch.from_numpy(np.round(array)), affine=reference_affine
            )
        subject = tio.Subject(subject_items)
        subject = self._transform(subject)
        images = np.concatenate(
            [subject[f"image_{c}"].data.numpy() for c in range(len(paths))]
        ).astype(np.float32)
        if "label" in subject:
            labels = _as_label_dtype(subject["label"].data[0].numpy())
        first = subject["image_0"]
        return Case(
            name=case,
            images=images,
            labels=labels,
            channel_names=self.channel_names,
            label_names=dict(self.label_names),
            spacing=tuple(float(s) for s in first.spacing),
            affine=np.asarray(first.affine, dtype=np.float64),
            dataset=self.name,
        )

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            array, affine = _read_image(path)
        except (RuntimeError, OSError, ValueError) as error:
            raise InputError(f"dataset '{self.name}': cannot read '{path}': {error}") from error
        if array.ndim != 4 or array.shape[0] != 1:
            raise InputError(
                f"dataset '{self.name}': '{path}' must hold one 3-D volume, got shape {array.shape}"
            )
        return array, affine

    def _transform(self, subject: tio.Subject) -> tio.Subject:
        config = self.preprocess
        if config.orientation is not None:
            subject = tio.ToOrientation(config.orientation)(subject)
        if config.spacing is not None:
            subject = tio.Resample(config.spacing)(subject)
        if config.crop_foreground:
            nonzero = np.zeros(subject.spatial_shape, dtype=bool)
            for image in subject.get_images(intensity_only=False):
                nonzero |= (image.data != 0).any(0).numpy()
            if nonzero.any():
                shape = np.asarray(subject.spatial_shape)
                where = np.argwhere(nonzero)
                low = np.maximum(where.min(0) - config.foreground_margin, 0)
                high = np.minimum(where.max(0) + 1 + config.foreground_margin, shape)
                cropping = tuple(
                    int(v) for pair in zip(low, shape - high, strict=True) for v in pair
                )
                if any(cropping):
                    subject = tio.Crop(cropping)(subject)
        if config.clip_percentiles is not None:
            subject = tio.RescaleIntensity(out_min_max=(0, 1), percentiles=config.clip_percentiles)(
                subject
            )
        return subject

    # -- cache ---------------------------------------------------------------------------------

    def _write_cache(self, case: Case, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{case.name}-" + "[0-9a-f]" * 16 + ".npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
        arrays = {
            "images": case.images,
            "spacing": np.asarray(case.spacing),
            "affine": case.affine,
        }
        if case.labels is not None:
            arrays["labels"] = case.labels
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    def _load_cached(self, index: int, path: Path) -> Case:
        with np.load(path, allow_pickle=False) as data:
            spacing = tuple(float(s) for s in data["spacing"])
            return Case(
                name=self.case_names[index],
                images=data["images"],
                labels=data["labels"] if "labels" in data.files else None,
                channel_names=self.channel_names,
                label_names=dict(self.label_names),
                spacing=(spacing[0], spacing[1], spacing[2]),
                affine=data["affine"],
                dataset=self.name,
            )
