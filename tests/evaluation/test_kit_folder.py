"""``evaluation/kit_folder.py``: a kit written to a folder reads back the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medverse.evaluation.kit_config import AAL_NOTE
from medverse.evaluation.kit_folder import load_kit, write_kit


def test_folder_round_trip(tiny_kit, tmp_path):
    root = write_kit(tiny_kit, tmp_path / "kit")
    manifest = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    assert manifest["not_for_training"] is True
    assert manifest["tasks"]["putamen_aal"]["note"] == AAL_NOTE
    assert "NOT FOR TRAINING" in (root / "README.md").read_text(encoding="utf-8")
    folder = load_kit(root)
    assert folder.subject_ids == tiny_kit.subject_ids and folder.tasks == tiny_kit.tasks
    for task in ("putamen_aal", "bias_field"):
        expected, loaded = tiny_kit.load_case("kit_002", task), folder.load_case("kit_002", task)
        np.testing.assert_allclose(loaded.image, expected.image, atol=1e-6)
        np.testing.assert_allclose(loaded.output, expected.output, atol=1e-6)
        np.testing.assert_allclose(loaded.affine, expected.affine, atol=1e-5)
        assert loaded.spacing == pytest.approx(expected.spacing)
