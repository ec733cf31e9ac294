"""A user's nnU-Net raw folder as an evaluation dataset (``medverse evaluate --dataset DIR``).

* **Segmentation** (``labelsTr/`` holds files): one task per foreground label, named after
  ``dataset.json``'s ``labels`` (nnU-Net v2 ``{"name": value}`` or v1 ``{"value": "name"}``;
  without them, every value found in the first label map is a task ``label_<value>``). The input
  is channel ``imagesTr/CASE_0000``, the reference ``labelsTr/CASE == value``.
* **Image tasks** (no label files): channel ``_0000`` is the input and ``_0001`` the reference
  output of one task ``image`` whose family is ``transformation``, or the ``medverse_family``
  entry of ``dataset.json`` (``"enhancement"`` or ``"transformation"``).

The protocol (k contexts x n seeded draws, baselines, report) needs the cases of a task on one
grid. When the cases' grids differ, every case is brought onto the grid of the first case (in
sorted order; ``reference``) with :func:`medverse.io.alignment.align_pair`: ``"affine"``
registration (default, as ``medverse predict`` aligns contexts) or ``"physical"`` world
coordinates; labels are resampled with nearest neighbour. Scores are then computed on that grid.
Aligned cases are cached in memory per subject.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from medverse.errors import InputError
from medverse.evaluation.records import EvaluationCase, TaskInfo
from medverse.io.context import check_every_image_labelled
from medverse.io.dataset_json import read_dataset_json
from medverse.validation import check_label_map

__all__ = ["NnunetDataset", "DATASET_ALIGNMENTS"]

log = logging.getLogger(__name__)

DATASET_ALIGNMENTS = ("affine", "physical")


class NnunetDataset:
    """An nnU-Net raw folder (``imagesTr``, ``labelsTr``, ``dataset.json``): an
    :class:`~medverse.evaluation.records.EvaluationDataset`.

    Args:
        folder: the dataset folder.
        align: how cases on other grids reach the reference grid (``"affine"``, ``"physical"``).
        reference: subject whose grid every case takes (default: the first in sorted order).

    Raises:
        InputError: not an nnU-Net raw folder, no cases, unknown ``align`` or ``reference``.
    """

    def __init__(
        self, folder: str | Path, *, align: str = "affine", reference: str | None = None
    ) -> None:
        self.root = Path(folder)
        images = self.root / "imagesTr"
        if not images.is_dir():
            raise InputError(
                f"'{self.root}': expected an nnU-Net raw folder with imagesTr/ (and labelsTr/ "
                "for segmentation)"
            )
        if align not in DATASET_ALIGNMENTS:
            raise InputError(f"align must be one of {DATASET_ALIGNMENTS}, got {align!r}")
        self.align = align
        meta_path = self.root / "dataset.json"
        self.meta: dict[str, Any] = read_dataset_json(self.root)
        self.ending = str(self.meta.get("file_ending", ".nii.gz"))
        labels = self.root / "labelsTr"
        label_files = sorted(labels.glob(f"*{self.ending}")) if labels.is_dir() else []
        if label_files:
            self.kind = "segmentation"
            check_every_image_labelled(self.root, self.ending)
            subjects = [p.name[: -len(self.ending)] for p in label_files]
            self._label_values = self._labels(label_files[0])
            self._tasks = {
                name: TaskInfo(name, "segmentation", f"label {value} of {self.root.name}")
                for name, value in self._label_values.items()
            }
        else:
            self.kind = "image"
            subjects = sorted(
                p.name[: -len(f"_0001{self.ending}")] for p in images.glob(f"*_0001{self.ending}")
            )
            family = str(self.meta.get("medverse_family", "transformation"))
            if family not in ("transformation", "enhancement"):
                raise InputError(
                    f"'{meta_path}': medverse_family must be 'transformation' or 'enhancement', "
                    f"got {family!r}"
                )
            self._label_values = {}
            self._tasks = {
                "image": TaskInfo("image", family, f"channel _0000 -> _0001 of {self.root.name}")
            }
        if not subjects:
            raise InputError(
                f"'{self.root}': no cases (labelsTr/CASE{self.ending} for segmentation, or "
                f"imagesTr/CASE_0000{self.ending} + CASE_0001{self.ending} for an image task)"
            )
        self._subjects = tuple(sorted(subjects))
        self.reference = reference or self._subjects[0]
        if self.reference not in self._subjects:
            raise InputError(f"reference case {self.reference!r} is not in {self.root}")
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, str]] = {}

    # -- EvaluationDataset ------------------------------------------------------------------
    @property
    def subject_ids(self) -> tuple[str, ...]:
        return self._subjects

    @property
    def tasks(self) -> dict[str, TaskInfo]:
        return dict(self._tasks)

    def describe(self) -> dict[str, Any]:
        return {
            "source": f"nnU-Net raw folder {self.root}",
            "name": self.meta.get("name", self.root.name),
            "kind": self.kind,
            "cases": len(self._subjects),
            "grid": f"every case on the grid of {self.reference!r} ({self.align} alignment "
            "where grids differ)",
        }

    def load_case(self, subject_id: str, task: str) -> EvaluationCase:
        if task not in self._tasks:
            raise KeyError(f"the dataset has no task {task!r}; it has {sorted(self._tasks)}")
        image, output, affine, _ = self._aligned(subject_id)
        if self.kind == "segmentation":
            output = (output == self._label_values[task]).astype(np.float32)
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        return EvaluationCase(subject_id, task, image, output, spacing, affine)  # type: ignore[arg-type]

    # -- helpers ------------------------------------------------------------------------------
    def _paths(self, subject_id: str) -> tuple[Path, Path]:
        image = self.root / "imagesTr" / f"{subject_id}_0000{self.ending}"
        if self.kind == "segmentation":
            return image, self.root / "labelsTr" / f"{subject_id}{self.ending}"
        return image, self.root / "imagesTr" / f"{subject_id}_0001{self.ending}"

    def _labels(self, first: Path) -> dict[str, int]:
        raw = self.meta.get("labels")
        found: dict[str, int] = {}
        if isinstance(raw, dict):
            for key, value in raw.items():
                if isinstance(value, int) and not isinstance(value, bool):  # v2: name -> value
                    name, number = str(key), value
                elif str(key).isdigit():  # v1: "value" -> name
                    name, number = str(value), int(key)
                else:  # region-based entries (lists) are not single labels
                    continue
                if number > 0:
                    found[_task_name(name, number)] = number
        if not found:
            from medverse.io.volume import read_volume

            values = np.unique(read_volume(first, kind="label").array)
            found = {f"label_{int(v)}": int(v) for v in values if v > 0 and v == int(v)}
        if not found:
            raise InputError(f"'{first}': no foreground label to evaluate")
        return found

    def _aligned(self, subject_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        if subject_id in self._cache:
            return self._cache[subject_id]
        from medverse.io.alignment import align_pair
        from medverse.io.context import ContextPair
        from medverse.io.volume import read_volume

        image_path, output_path = self._paths(subject_id)
        output_kind = "label" if self.kind == "segmentation" else "image"
        image = read_volume(image_path)
        output = read_volume(output_path, kind=output_kind)
        if output_kind == "label":
            check_label_map(output.array, output.name)
        if subject_id == self.reference:
            result = (image.array, output.array, image.affine, "reference grid")
        else:
            ref_image = self._reference_volume()
            same = image.shape == ref_image.shape and np.allclose(
                image.affine, ref_image.affine, atol=1e-4
            )
            if same:
                result = (image.array, output.array, ref_image.affine, "on the reference grid")
            else:
                aligned_image, aligned_output, note = align_pair(
                    ContextPair(image, output, output_kind=output_kind),
                    ref_image,
                    mode=self.align,
                    output_kind=output_kind,
                )
                log.info("%s", note)
                result = (aligned_image, aligned_output, ref_image.affine, note)
        self._cache[subject_id] = result
        return result

    def _reference_volume(self) -> Any:
        from medverse.io.volume import read_volume

        if not hasattr(self, "_reference"):
            self._reference = read_volume(self._paths(self.reference)[0])
        return self._reference


def _task_name(name: str, value: int) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("_")
    return cleaned or f"label_{value}"
