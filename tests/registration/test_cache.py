"""``registration/cache.py``: the disk cache is hit, keyed by content, and survives a corrupt
entry."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from medverse.io.volume import Volume
from medverse.registration.cache import RegistrationCache, default_cache_dir
from medverse.registration.driver import register
from tests.registration.phantom import dice, smooth_deformation, subject


def test_the_disk_cache_is_hit_and_keyed_by_content(
    tmp_path: Path, fixed: tuple[Volume, np.ndarray]
) -> None:
    target, target_mask = fixed
    moving, moving_mask = subject(warp=smooth_deformation, name="deformed.nii.gz")
    cache = RegistrationCache(tmp_path / "cache")

    start = time.perf_counter()
    first = register(target, moving, kind="deformable", cache=cache)
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    second = register(target, moving, kind="deformable", cache=cache)
    second_seconds = time.perf_counter() - start

    assert not first.cached and first.seconds > 0
    assert second.cached and second.seconds == 0.0 and "cached" in second.describe()
    assert second_seconds < first_seconds / 2
    assert second.key == first.key and cache.path(first.key).is_file()
    np.testing.assert_array_equal(
        first.warp(moving_mask, interpolation="nearest"),
        second.warp(moving_mask, interpolation="nearest"),
    )
    # the affine stage was cached on its own, under another key
    assert len(list((tmp_path / "cache").glob("*/*.npz"))) == 2

    changed = moving.array.copy()
    changed[20, 20, 20] += 0.1
    third = register(target, Volume(changed, moving.affine, name="x"), kind="affine", cache=cache)
    assert not third.cached and third.key != first.key
    shifted = moving.affine.copy()
    shifted[0, 3] += 0.5
    fourth = register(target, Volume(moving.array, shifted, name="y"), kind="affine", cache=cache)
    assert not fourth.cached and fourth.key != third.key
    other_engine = register(target, moving, kind="affine", engine="sitk", cache=cache)
    assert not other_engine.cached
    # no temporary files left behind
    assert not list((tmp_path / "cache").glob("*/.tmp-*"))
    assert dice(second.warp(moving_mask, interpolation="nearest"), target_mask) > 0.85


def test_a_corrupt_cache_entry_is_recomputed(
    tmp_path: Path, fixed: tuple[Volume, np.ndarray]
) -> None:
    target, _ = fixed
    moving, _ = subject(warp=smooth_deformation, name="deformed.nii.gz")
    cache = RegistrationCache(tmp_path)
    first = register(target, moving, kind="affine", engine="sitk", cache=cache)
    cache.path(first.key).write_bytes(b"not an npz file")
    again = register(target, moving, kind="affine", engine="sitk", cache=cache)
    assert not again.cached
    np.testing.assert_array_equal(again.world, first.world)
    assert register(target, moving, kind="affine", engine="sitk", cache=cache).cached
    assert cache.clear() == 1


def test_default_cache_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MEDVERSE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "medverse" / "registrations"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "medverse" / "registrations"
    monkeypatch.setenv("MEDVERSE_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    assert RegistrationCache().directory == tmp_path / "mine"
