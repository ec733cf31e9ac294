"""Contexts: the in-context examples a user hands over.

A :class:`ContextPair` is one example: an image and its output (a mask, or another image) on one
grid, which need not be the target's. A :class:`Context` is the set of pairs of one query,
read from file pairs or an nnU-Net raw folder, with the task (segmentation or image) guessed from
the outputs, the label values and their names. Nothing here moves a pair onto the target's grid:
that is :mod:`medverse.io.alignment`.

Example:
    >>> import numpy as np
    >>> from medverse.io import Volume
    >>> image = np.random.default_rng(0).random((8, 8, 8))
    >>> mask = np.zeros((8, 8, 8)); mask[2:5, 2:5, 2:5] = 1
    >>> pair = ContextPair(Volume(image, np.eye(4), name="a.nii.gz"),
    ...                    Volume(mask, np.eye(4), name="a_seg.nii.gz", kind="label"))
    >>> context = Context([pair])
    >>> context.task, context.labels, len(context)
    ('segmentation', (1,), 1)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from medverse.errors import InputError
from medverse.intensity import normalize_intensity as normalize_intensity  # old path, see below
from medverse.io.dataset_json import read_dataset_json
from medverse.io.volume import Volume, read_volume
from medverse.types import PathLike
from medverse.validation import (
    check_finite,
    check_label_map,
    check_nonempty_mask,
    check_option,
    check_same_grid,
    check_volume,
)

__all__ = [
    "OUTPUT_KINDS",
    "TASKS",
    "Context",
    "ContextPair",
    "dataset_label_names",
    "looks_like_labels",
    "check_every_image_labelled",
    "swapped_pair",
]
# normalize_intensity moved to medverse.intensity; importing it from here keeps working for one
# release (for code outside the package that imported it from the old io/context.py)

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("label", "image")
"""What a context output is: a mask (segmentation) or an image (transformation, enhancement)."""
TASKS = ("auto", "segmentation", "image")
_MAX_LABELS = 127  # TotalSegmentator has 117; uint8 images usually show more distinct values
_MAX_SWAP_LABELS = 16  # an "image" with this few integer values is most likely a mask


def looks_like_labels(array: np.ndarray) -> bool:
    """Integer-valued with at most 127 distinct non-negative labels: a label map (else an image)."""
    if array.size == 0 or array.min() < 0:
        return False
    if not np.array_equal(array, np.round(array)):
        return False
    return np.unique(array).size <= _MAX_LABELS + 1


def swapped_pair(image: np.ndarray, output: np.ndarray) -> int:
    """The number of distinct values of ``image`` if the pair looks given in the wrong order (an
    integer "image" with at most 16 labels beside a continuous "output"), else 0."""
    if image.size == 0 or not np.array_equal(image, np.round(image)):
        return 0
    count = int(np.unique(image).size)
    if count > _MAX_SWAP_LABELS + 1 or np.array_equal(output, np.round(output)):
        return 0
    return count


def dataset_label_names(meta: Mapping[str, object]) -> dict[int, str]:
    """Label value -> name from an nnU-Net ``dataset.json``'s ``labels`` entry.

    Reads nnU-Net v2 (``{"background": 0, "liver": 1}``) and v1 (``{"0": "background",
    "1": "liver"}``); region-based entries (lists of values) are skipped.

    Example:
        >>> dataset_label_names({"labels": {"background": 0, "liver": 1}})
        {0: 'background', 1: 'liver'}
    """
    raw = meta.get("labels")
    names: dict[int, str] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if isinstance(value, int) and not isinstance(value, bool):  # v2: name -> value
                names[value] = str(key)
            elif str(key).isdigit():  # v1: "value" -> name
                names[int(key)] = str(value)
    return dict(sorted(names.items()))


def check_every_image_labelled(root: PathLike, ending: str) -> None:
    """Raise if ``imagesTr`` holds a case (``CASE_0000<ending>``) with no ``labelsTr/CASE<ending>``.

    nnU-Net wants a label for every training image; a missing one is most often a file that was
    not copied, and would otherwise be skipped without a word.

    Raises:
        InputError: naming the first unlabelled image, the label expected and how many miss one.
    """
    root = Path(root)
    channel = f"_0000{ending}"
    missing = [
        image
        for image in sorted((root / "imagesTr").glob(f"*{channel}"))
        if not (root / "labelsTr" / f"{image.name[: -len(channel)]}{ending}").is_file()
    ]
    if missing:
        first = missing[0]
        label = root / "labelsTr" / f"{first.name[: -len(channel)]}{ending}"
        raise InputError(
            f"'{first}': no label '{label}' ({len(missing)} image(s) in imagesTr/ have none); "
            "nnU-Net needs a label for every image in imagesTr/: add it or move the image out"
        )


def _labels_of(pairs: Sequence[ContextPair]) -> set[int]:
    """The label values above 0 found in the outputs of ``pairs``."""
    found: set[int] = set()
    for pair in pairs:
        found.update(int(v) for v in np.unique(pair.output.array) if v > 0)
    return found


@dataclass(eq=False)
class ContextPair:
    """One in-context example: an image and its output (a mask or another image) on one grid.

    Args:
        image: the context image.
        output: the context output, on the same grid as ``image``.
        output_kind: ``"label"`` (a mask; must have foreground) or ``"image"``.

    Raises:
        InputError: the two are not on the same grid, the image is constant or not finite, or a
            label output has no foreground voxel.
    """

    image: Volume
    output: Volume
    output_kind: str = "label"

    def __post_init__(self) -> None:
        check_option(self.output_kind, OUTPUT_KINDS, "output_kind")
        check_same_grid(
            self.image.shape,
            self.image.affine,
            self.output.shape,
            self.output.affine,
            self.image.name,
            self.output.name,
            fix="A context image and its output must share one voxel grid (the output drawn on "
            "the image); check that the two files belong together",
        )
        check_volume(self.image.array, self.image.name)
        if self.output_kind == "label":
            check_finite(self.output.array, self.output.name)
            check_nonempty_mask(self.output.array, self.output.name)
        else:
            check_volume(self.output.array, self.output.name)

    @classmethod
    def from_files(
        cls, image_path: PathLike, output_path: PathLike, *, output_kind: str = "label"
    ) -> ContextPair:
        """Read a context image and its output from disk (any format :func:`read_volume` reads).

        Args:
            image_path: the context image.
            output_path: its mask (``output_kind="label"``) or output image.
            output_kind: ``"label"`` or ``"image"``.

        Raises:
            InputError: unreadable files, or the two files are not on the same grid (the message
                names both).

        Example:
            >>> pair = ContextPair.from_files("ct_003.nii.gz", "liver_003.nii.gz")  # doctest: +SKIP
        """
        check_option(output_kind, OUTPUT_KINDS, "output_kind")
        image = read_volume(image_path, kind="image")
        output = read_volume(output_path, kind="label" if output_kind == "label" else "image")
        return cls(image=image, output=output, output_kind=output_kind)

    @property
    def name(self) -> str:
        """The context image's name."""
        return self.image.name


@dataclass
class Context:
    """The in-context examples of one query.

    Attributes:
        pairs: the context pairs (image, output), each on its own grid.
        task: ``"segmentation"`` (outputs are label maps) or ``"image"``.
        labels: label values of a segmentation (default: every value found in the outputs).
        label_names: label value -> name (from ``dataset.json`` or the caller); written next to
            segmentation outputs as ``<stem>.labels.json``.

    Example:
        >>> ctx = Context.from_files([("ct_1.nii.gz", "liver_1.nii.gz")])  # doctest: +SKIP
    """

    pairs: list[ContextPair]
    task: str = "segmentation"
    labels: tuple[int, ...] = field(default=())
    label_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.pairs:
            raise InputError("no context pairs given: pass at least one --context IMAGE OUTPUT")
        check_option(self.task, TASKS[1:], "task")
        if self.task == "segmentation" and not self.labels:
            self.labels = tuple(sorted(_labels_of(self.pairs)))

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[ContextPair]:
        return iter(self.pairs)

    def subset(self, indices: Sequence[int]) -> Context:
        """The context of the pairs at ``indices``, in that order.

        A segmentation keeps those of its labels that the chosen outputs hold, and drops the
        names of the labels it loses (background and other names stay). The names are a copy.

        Raises:
            InputError: no index, or the chosen outputs hold none of the labels.
        """
        pairs = [self.pairs[i] for i in indices]
        if self.task != "segmentation" or not pairs:
            return Context(pairs, self.task, self.labels, dict(self.label_names))
        present = _labels_of(pairs)
        labels = tuple(value for value in self.labels if value in present)
        if not labels:
            raise InputError(
                f"context pairs {list(indices)} hold none of the labels {self.labels}; "
                "choose pairs whose outputs show at least one of them"
            )
        dropped = set(self.labels) - set(labels)
        names = {value: name for value, name in self.label_names.items() if value not in dropped}
        return Context(pairs, self.task, labels, names)

    @classmethod
    def join(cls, contexts: Sequence[Context]) -> Context:
        """One context of the pairs of ``contexts``, in order (e.g. file pairs and a folder).

        A segmentation keeps every label of the contexts joined; the label names are merged (a
        later context's name of a value wins).

        Args:
            contexts: one or more contexts of the same task.

        Raises:
            InputError: no context, or contexts of different tasks (the message names each).

        Example:
            >>> both = Context.join([Context.from_files(pairs), Context.from_nnunet(folder)])  # doctest: +SKIP
        """
        if not contexts:
            raise InputError("no contexts to join: pass at least one Context")
        tasks = [context.task for context in contexts]
        if len(set(tasks)) > 1:
            shown = ", ".join(f"context {i + 1}: {task}" for i, task in enumerate(tasks))
            raise InputError(
                f"cannot join contexts of different tasks ({shown}): read them with the same "
                "task= (on the command line: --task segmentation or --task image)"
            )
        labels: set[int] = set()
        names: dict[int, str] = {}
        for context in contexts:
            labels.update(context.labels)
            names.update(context.label_names)
        pairs = [pair for context in contexts for pair in context.pairs]
        return cls(pairs, tasks[0], tuple(sorted(labels)), names)

    @classmethod
    def from_files(
        cls,
        pairs: Sequence[tuple[PathLike, PathLike]],
        *,
        task: str = "auto",
        label_names: Mapping[int, str] | None = None,
    ) -> Context:
        """Read ``(image, output)`` file pairs.

        Args:
            pairs: paths of each context image and its output (mask or image).
            task: ``"segmentation"``, ``"image"``, or ``"auto"``: label maps (integer values,
                at most 127 labels) in every output → segmentation, otherwise image.
            label_names: label value -> name (segmentation); unnamed labels are ``"label N"``.

        Raises:
            InputError: unreadable files, an image without output, grids that differ within a
                pair, a constant image or an empty mask (each message names the file).
        """
        check_option(task, TASKS, "task")
        outputs: list[tuple[Volume, Volume]] = []
        for i, pair in enumerate(pairs):
            if len(pair) != 2:
                raise InputError(f"context {i + 1}: expected IMAGE OUTPUT, got {list(pair)}")
            if str(pair[1]).startswith("-"):
                raise InputError(
                    f"context image '{pair[0]}' has no OUTPUT (next argument is the option "
                    f"'{pair[1]}'): pass --context IMAGE OUTPUT"
                )
            outputs.append((read_volume(pair[0]), read_volume(pair[1])))
        for image, output in outputs:
            count = swapped_pair(image.array, output.array)
            if not count:
                continue
            message = (
                f"context image '{image.name}' holds {count} integer values (a mask?) and its "
                f"output '{output.name}' continuous values (an image?): the pair looks swapped. "
                "Give the image first: --context IMAGE OUTPUT"
            )
            if task == "auto":
                raise InputError(
                    message + " (or --task image if the output really is an image made from a "
                    "label map)"
                )
            log.warning(message)
        if task == "auto":
            task = (
                "segmentation" if all(looks_like_labels(o.array) for _, o in outputs) else "image"
            )
            log.info("task detected from the context outputs: %s", task)
        kind = "label" if task == "segmentation" else "image"
        built = []
        for image, output in outputs:
            if kind == "label":
                check_label_map(output.array, output.name)
            # a relabelled copy: a volume handed to us is never modified
            labelled = output if output.kind == kind else replace(output, kind=kind)
            built.append(ContextPair(image, labelled, output_kind=kind))
        names = {int(k): str(v) for k, v in (label_names or {}).items()}
        return cls(built, task, label_names=names if task == "segmentation" else {})

    @classmethod
    def from_nnunet(cls, folder: PathLike, *, task: str = "auto", channel: int = 0) -> Context:
        """Every case of an nnU-Net raw folder (``imagesTr/NAME_0000.ext``, ``labelsTr/NAME.ext``).

        The label names come from ``dataset.json`` (:func:`dataset_label_names`).

        Args:
            folder: the dataset folder (holding ``imagesTr`` and ``labelsTr``).
            task: as in :meth:`from_files`.
            channel: which modality ``_000{channel}`` to use as the context image.
        """
        root = Path(folder)
        images, labels = root / "imagesTr", root / "labelsTr"
        if not images.is_dir() or not labels.is_dir():
            raise InputError(
                f"'{root}': expected an nnU-Net raw folder with imagesTr/ and labelsTr/"
            )
        meta = read_dataset_json(root)
        ending = str(meta.get("file_ending", ".nii.gz"))
        pairs = []
        for label in sorted(labels.glob(f"*{ending}")):
            case = label.name[: -len(ending)]
            image = images / f"{case}_{channel:04d}{ending}"
            if not image.is_file():
                raise InputError(f"'{label}': no matching image '{image}'")
            pairs.append((image, label))
        if not pairs:
            raise InputError(f"'{labels}': no label files ending in {ending}")
        check_every_image_labelled(root, ending)
        return cls.from_files(pairs, task=task, label_names=dataset_label_names(meta))
