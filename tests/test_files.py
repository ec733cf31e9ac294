"""Tests for medverse.files: the one atomic write."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medverse.files import atomic_path, atomic_write_bytes, atomic_write_text


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_temporary_is_hidden_beside_the_destination_and_keeps_the_extension(
    tmp_path: Path,
) -> None:
    destination = tmp_path / "out.nii.gz"
    with atomic_path(destination) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".tmp-") and temporary.name.endswith("-out.nii.gz")
        assert not temporary.exists() and not destination.exists()
        temporary.write_bytes(b"new")
        assert not destination.exists()  # nothing is visible before the body returns
    assert destination.read_bytes() == b"new"
    assert _listing(tmp_path) == ["out.nii.gz"]


def test_two_writes_use_different_temporaries(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a") as first, atomic_path(tmp_path / "a") as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert (tmp_path / "a").read_bytes() == b"1"  # the outer context exits last


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failure_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, error: BaseException
) -> None:
    destination = tmp_path / "table.csv"
    destination.write_text("old")
    with pytest.raises(type(error)), atomic_path(destination) as temporary:
        temporary.write_text("half")
        raise error
    assert destination.read_text() == "old"
    assert _listing(tmp_path) == ["table.csv"]


def test_a_body_that_writes_nothing_raises_and_keeps_the_old_file(tmp_path: Path) -> None:
    destination = tmp_path / "x.json"
    destination.write_text("old")
    with pytest.raises(FileNotFoundError), atomic_path(destination):
        pass
    assert destination.read_text() == "old"


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "absent" / "x.bin", b"1")
    assert _listing(tmp_path) == []


def test_text_is_utf8_without_newline_translation(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "s.md", "mean ± sd\r\nnext\n")
    assert (tmp_path / "s.md").read_bytes() == "mean ± sd\r\nnext\n".encode()
    atomic_write_text(tmp_path / "l.txt", "é", encoding="latin-1")
    assert (tmp_path / "l.txt").read_bytes() == b"\xe9"


def test_replaces_an_existing_file_and_numpy_keeps_the_name(tmp_path: Path) -> None:
    destination = tmp_path / "entry.npz"
    atomic_write_bytes(destination, b"old")
    with atomic_path(destination) as temporary:
        np.savez(temporary, x=np.arange(3))  # the name ends in .npz: numpy adds nothing
    with np.load(destination) as data:
        np.testing.assert_array_equal(data["x"], np.arange(3))
    assert _listing(tmp_path) == ["entry.npz"]
    assert os.access(destination, os.R_OK)


def test_a_move_that_fails_names_the_destination_not_the_temporary(tmp_path: Path) -> None:
    destination = tmp_path / "taken"
    destination.mkdir()
    with pytest.raises(IsADirectoryError) as caught, atomic_path(destination) as temporary:
        temporary.write_bytes(b"data")
    assert caught.value.filename == str(destination)
    assert ".tmp-" not in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
