"""Fixtures for the evaluation tests: a tiny synthetic ball dataset and a tiny kit.

tests/evaluation has no __init__.py, so helpers reach the tests as fixtures only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from scipy import ndimage

from medverse.evaluation.kit_build import EvaluationKit, build_kit
from medverse.evaluation.kit_config import KitConfig
from medverse.evaluation.records import EvaluationCase, TaskInfo

SHAPE = (24, 26, 22)
SPACING = (1.5, 1.0, 2.0)


def ball_subject(index: int, shape: Sequence[int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A bright ball in a smooth background; its centre moves with ``index``. Returns (image, mask)."""
    grid = np.indices(tuple(shape), dtype=np.float32)
    centre = np.array(shape, dtype=np.float32) / 2 + np.array(
        [index % 3 - 1, index % 2, -(index % 2)]
    )
    radius = 6.0 + (index % 3) * 0.5
    distance = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0))
    mask = (distance <= radius).astype(np.uint8)
    image = ndimage.gaussian_filter(mask.astype(np.float32), 1.0) + 0.1 * grid[0] / shape[0]
    return image.astype(np.float32), mask


class BallDataset:
    """In-memory dataset with a segmentation task ("ball") and an enhancement task ("smooth").

    ``broken`` maps subject id -> "grid" (reference on another grid) or "missing" (no reference).
    """

    def __init__(self, num_subjects: int = 4, broken: Mapping[str, str] | None = None) -> None:
        self._subjects = tuple(f"s{index}" for index in range(num_subjects))
        self._data = {sid: ball_subject(index) for index, sid in enumerate(self._subjects)}
        self.broken = dict(broken or {})
        self._tasks = {
            "ball": TaskInfo("ball", "segmentation", "a ball"),
            "smooth": TaskInfo("smooth", "enhancement", "noisy -> clean", data_range=1.0),
            "ball_noted": TaskInfo(
                "ball_noted", "segmentation", "a ball", note="APPROXIMATE LABELS NOTE"
            ),
        }

    @property
    def subject_ids(self) -> tuple[str, ...]:
        return self._subjects

    @property
    def tasks(self) -> dict[str, TaskInfo]:
        return dict(self._tasks)

    def describe(self) -> dict[str, object]:
        return {"name": "balls", "shape": list(SHAPE)}

    def load_case(self, subject_id: str, task: str) -> EvaluationCase:
        if task not in self._tasks:
            raise KeyError(f"no task {task!r}")
        image, mask = self._data[subject_id]
        if self._tasks[task].family == "segmentation":
            output: np.ndarray | None = mask
        else:
            rng = np.random.default_rng(sum(map(ord, subject_id)))
            output = image
            image = image + rng.normal(0.0, 0.05, image.shape).astype(np.float32)
        problem = self.broken.get(subject_id)
        if problem == "grid":
            output = np.pad(output, 1)
        elif problem == "missing":
            output = None
        return EvaluationCase(subject_id, task, image, output, SPACING, np.diag([*SPACING, 1.0]))  # type: ignore[arg-type]


@pytest.fixture
def ball_dataset() -> BallDataset:
    return BallDataset()


@pytest.fixture
def make_ball_dataset() -> type[BallDataset]:
    """The dataset class, for tests that need broken subjects or another size."""
    return BallDataset


@pytest.fixture(scope="session")
def ball_32() -> tuple[np.ndarray, np.ndarray]:
    """One 32^3 ball subject (image, mask)."""
    return ball_subject(0, shape=(32, 32, 32))


TINY_KIT = KitConfig(num_subjects=3, spacing=6.0, shape=(28, 34, 28))


@pytest.fixture(scope="session")
def tiny_kit() -> EvaluationKit:
    """Three subjects on a 6 mm grid (a few seconds, most of it loading the 1 mm sources once)."""
    return build_kit(TINY_KIT)
