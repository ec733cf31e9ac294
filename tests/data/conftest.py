"""Fixtures for tests/data: a tiny synthetic nnU-Net dataset written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from medverse.data.phantoms import write_synthetic_dataset

SHAPE = (24, 24, 24)
NUM_CLASSES = 5
NUM_MODALITIES = 2
NUM_SUBJECTS = 5


@pytest.fixture(scope="session")
def synthetic_spec() -> dict:
    """What :func:`synthetic_root` holds."""
    return {
        "shape": SHAPE,
        "num_classes": NUM_CLASSES,
        "num_modalities": NUM_MODALITIES,
        "num_subjects": NUM_SUBJECTS,
    }


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic dataset; copy it (``shutil.copytree``) before breaking it."""
    root = tmp_path_factory.mktemp("synthetic") / "Dataset001_Synthetic"
    return write_synthetic_dataset(
        root,
        num_subjects=NUM_SUBJECTS,
        shape=SHAPE,
        num_classes=NUM_CLASSES,
        num_modalities=NUM_MODALITIES,
        seed=7,
    )
