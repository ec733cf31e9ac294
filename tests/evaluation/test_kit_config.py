"""``evaluation/kit_config.py``: the kit's tasks (AAL tasks carry their note) and its checked
configuration."""

from __future__ import annotations

import pytest

from medverse.errors import InputError
from medverse.evaluation.kit_config import AAL3_LABELS, AAL_NOTE, KIT_TASKS, KitConfig


def test_aal_tasks_carry_the_note():
    aal = {name for name in KIT_TASKS if name.endswith("_aal")}
    assert aal == {f"{name}_aal" for name in ("hippocampus", "thalamus", "putamen", "caudate")}
    for name, info in KIT_TASKS.items():
        assert (info.note == AAL_NOTE) == (name in aal), name
    assert "approximately" in AAL_NOTE
    # AAL3 leaves the whole-thalamus ids 81/82 empty: the nuclei are used instead.
    assert 81 not in AAL3_LABELS["thalamus"] and 121 in AAL3_LABELS["thalamus"]


def test_config_is_checked():
    with pytest.raises(InputError, match="unknown kit tasks"):
        KitConfig(tasks=("hippocampus",))
    with pytest.raises(InputError, match="num_subjects"):
        KitConfig(num_subjects=1)
