"""The record of one preprocessed training case (``data/cases.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medverse.data.cases import Case


def _case(**changes) -> Case:
    fields = dict(
        name="liver_007",
        images=np.zeros((2, 5, 6, 7), np.float32),
        labels=np.zeros((5, 6, 7), np.uint8),
        channel_names=("CT", "PET"),
        label_names={0: "background", 1: "liver"},
        spacing=(1.5, 1.5, 3.0),
    )
    fields.update(changes)
    return Case(**fields)


def test_shape_is_the_spatial_shape_without_the_channel_axis() -> None:
    case = _case()
    assert case.shape == (5, 6, 7)  # images are (M, X, Y, Z): two channels here
    assert _case(images=np.zeros((1, 9, 8, 7), np.float32), labels=None).shape == (9, 8, 7)


def test_a_case_is_frozen_and_compared_by_identity() -> None:
    case = _case()
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.name = "other"  # type: ignore[misc]
    # eq=False: comparing two cases never compares their arrays (which would be ambiguous),
    # and a case can be a dict key or a set member
    twin = _case()
    assert case != twin and case == case
    assert len({case, twin}) == 2


def test_defaults_are_an_identity_affine_of_its_own_and_no_dataset() -> None:
    first, second = _case(), _case()
    np.testing.assert_array_equal(first.affine, np.eye(4))
    assert first.affine is not second.affine  # one matrix per case, not a shared default
    assert first.dataset == ""
