"""medverse.registration: known transforms recovered, deformable beats affine, the disk cache,
and failures that name the moving volume. Small phantoms (<= 40^3), seconds each."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.io.volume import Volume
from medverse.registration import (
    ENGINES,
    REGISTRATION_KINDS,
    Registration,
    RegistrationCache,
    RegistrationSettings,
    default_cache_dir,
    register,
)

SIZE = 40
GRID = np.eye(4)
GRID[:3, 3] = -(SIZE - 1) / 2  # 1 mm voxels centred on the world origin


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def phantom(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image, organ mask) at world points (3, ...): a body with three inner structures."""
    x, y, z = points

    def inside(centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
        r = sum(((c - c0) / rr) ** 2 for c, c0, rr in zip((x, y, z), centre, radii))
        return 1.0 - np.sqrt(r)

    body = _sigmoid(6 * inside((0, 0, 0), (13, 11, 12)))
    organ = inside((4, -2, 2), (5, 6, 4))
    other = _sigmoid(6 * inside((-5, 4, -2), (3, 3, 4.5)))
    third = _sigmoid(6 * inside((2, 5, -5), (3, 2.5, 2.5)))
    image = 0.4 * body + 0.5 * _sigmoid(6 * organ) + 0.3 * other + 0.25 * third
    return image.astype(np.float32), (organ >= 0).astype(np.float32)


def world_points(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:4]).reshape(3, *shape)


def subject(
    affine: np.ndarray = GRID,
    shape: tuple[int, int, int] = (SIZE,) * 3,
    warp: object = None,
    name: str = "subject.nii.gz",
) -> tuple[Volume, np.ndarray]:
    """The phantom seen on a grid; ``warp`` maps that grid's world points to phantom points."""
    points = world_points(shape, affine)
    if warp is not None:
        points = warp(points)  # type: ignore[operator]
    image, mask = phantom(points)
    return Volume(image, affine, name=name), mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


def rotation(degrees: tuple[float, float, float]) -> np.ndarray:
    cx, cy, cz = np.cos(np.deg2rad(degrees))
    sx, sy, sz = np.sin(np.deg2rad(degrees))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def known_transform() -> np.ndarray:
    """Phantom world -> moving subject world: 6-8 degree rotations, 5 % scale, a shift."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation((6.0, -4.0, 8.0)) @ np.diag([1.05, 0.97, 1.0])
    matrix[:3, 3] = (3.0, -2.5, 1.5)
    return matrix


def smooth_deformation(points: np.ndarray) -> np.ndarray:
    """A smooth non-linear displacement (up to ~3 mm) of world points."""
    x, y, z = points
    bump = np.exp(-((x - 4) ** 2 + (y + 2) ** 2 + (z - 2) ** 2) / (2 * 6.0**2))
    return np.stack([x + 3.0 * bump, y - 2.5 * bump, z + 2.0 * np.sin(x / 8.0)])


@pytest.fixture(scope="module")
def fixed() -> tuple[Volume, np.ndarray]:
    return subject(name="target.nii.gz")


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("engine", ENGINES)
def test_a_known_affine_is_recovered(engine: str, fixed: tuple[Volume, np.ndarray]) -> None:
    target, target_mask = fixed
    truth = known_transform()
    # The moving subject is the phantom moved by `truth`, stored on another grid: 1.25 mm
    # voxels, x and y flipped (LPS), another origin and shape.
    moving_affine = np.diag([-1.25, -1.25, 1.25, 1.0])
    moving_affine[:3, 3] = (22.0, 21.0, -23.0)
    moving, moving_mask = subject(
        moving_affine,
        (36, 34, 38),
        warp=lambda p: (
            np.einsum("ij,j...->i...", np.linalg.inv(truth)[:3, :3], p)
            + np.linalg.inv(truth)[:3, 3].reshape(3, 1, 1, 1)
        ),
        name="moving.nii.gz",
    )

    reg = register(target, moving, kind="affine", engine=engine)

    assert isinstance(reg, Registration) and reg.kind == "affine" and reg.engine == engine
    # fixed world -> moving world is `truth` itself: compare where the anatomy is
    points = world_points(target.shape, target.affine)[:, target_mask > 0.5].reshape(3, -1)
    mapped = reg.world[:3, :3] @ points + reg.world[:3, 3:4]
    expected = truth[:3, :3] @ points + truth[:3, 3:4]
    assert np.abs(mapped - expected).max() < 1.0  # mm, over the organ
    warped = reg.warp(moving.array)
    assert warped.shape == target.shape and warped.dtype == np.float32
    assert np.corrcoef(warped.ravel(), target.array.ravel())[0, 1] > 0.98
    # a small organ (520 voxels) on another grid: sub-millimetre errors cost Dice
    assert dice(reg.warp(moving_mask, interpolation="nearest"), target_mask) > 0.8
    assert reg.seconds > 0 and not reg.cached
    assert "centre shift" in reg.describe() and "\n" not in reg.describe()


@pytest.mark.parametrize("engine", ENGINES)
def test_identical_subject_mask_comes_back(engine: str, fixed: tuple[Volume, np.ndarray]) -> None:
    target, target_mask = fixed
    same = Volume(target.array.copy(), target.affine, name="same.nii.gz")
    reg = register(target, same, kind="deformable", engine=engine)
    warped = reg.warp(target_mask, interpolation="nearest")
    assert set(np.unique(warped)) <= {0.0, 1.0}
    assert dice(warped, target_mask) > 0.98


@pytest.mark.parametrize("engine", ENGINES)
def test_deformable_beats_affine_on_a_deformed_phantom(
    engine: str, fixed: tuple[Volume, np.ndarray]
) -> None:
    target, target_mask = fixed
    moving, moving_mask = subject(warp=smooth_deformation, name="deformed.nii.gz")
    scores = {}
    for kind in REGISTRATION_KINDS:
        reg = register(target, moving, kind=kind, engine=engine)
        scores[kind] = dice(reg.warp(moving_mask, interpolation="nearest"), target_mask)
    assert scores["deformable"] > scores["affine"] + 0.02, scores
    assert scores["deformable"] > 0.85, scores  # ants ~0.875, sitk ~0.92 (affine ~0.82)


def test_registration_is_deterministic(fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    moving, _ = subject(warp=smooth_deformation, name="deformed.nii.gz")
    first = register(target, moving, kind="deformable", engine="ants")
    second = register(target, moving, kind="deformable", engine="ants")
    np.testing.assert_array_equal(first.world, second.world)
    assert first.field is not None and second.field is not None
    np.testing.assert_array_equal(first.field, second.field)


def test_a_large_offset_between_affines_is_bridged(fixed: tuple[Volume, np.ndarray]) -> None:
    target, target_mask = fixed
    far = GRID.copy()
    far[:3, 3] += (300.0, -200.0, 150.0)  # scanner coordinates far apart: no physical overlap
    moving = Volume(target.array, far, name="far.nii.gz")
    reg = register(target, moving, kind="affine", engine="ants")
    assert dice(reg.warp(target_mask, interpolation="nearest"), target_mask) > 0.95


# --------------------------------------------------------------------------------- cache


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


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("engine", ENGINES)
def test_a_constant_context_names_the_file(engine: str, fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    constant = Volume(np.full((20, 20, 20), 3.0), np.eye(4), name="ctx_007.nii.gz")
    with pytest.raises(InputError, match="constant image") as info:
        register(target, constant, engine=engine)
    assert "ctx_007.nii.gz" in str(info.value)
    spot = np.zeros((20, 20, 20), np.float32)
    spot[0, 0, 0] = 1.0
    with pytest.raises(InputError, match="almost constant") as info:
        register(target, Volume(spot, np.eye(4), name="spot.nii.gz"), engine=engine)
    assert "spot.nii.gz" in str(info.value)


def test_an_engine_failure_names_the_file(fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    tiny = Volume(np.random.default_rng(0).random((3, 3, 3)), np.eye(4), name="tiny.nii.gz")
    with pytest.raises(InputError, match="registration onto 'target.nii.gz' failed") as info:
        register(target, tiny, kind="affine", engine="sitk")
    assert "tiny.nii.gz" in str(info.value)


def test_no_overlap_after_registration_names_the_file(
    fixed: tuple[Volume, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registration that ends with the context outside the target grid is an error."""
    from medverse import registration

    target, _ = fixed
    moving, _ = subject(warp=smooth_deformation, name="lost.nii.gz")

    def diverged(fixed: Volume, moving: Volume, settings: RegistrationSettings) -> np.ndarray:
        world = np.eye(4)
        world[:3, 3] = (500.0, 0.0, 0.0)
        return world

    monkeypatch.setitem(registration._AFFINE, "ants", diverged)
    with pytest.raises(InputError, match="does not overlap") as info:
        register(target, moving, kind="affine", engine="ants")
    assert "lost.nii.gz" in str(info.value)


def test_bad_options_and_arrays_are_refused(fixed: tuple[Volume, np.ndarray]) -> None:
    target, _ = fixed
    with pytest.raises(InputError, match="kind must be one of 'affine', 'deformable'"):
        register(target, target, kind="rigid")
    with pytest.raises(InputError, match="engine must be one of 'ants', 'sitk'"):
        register(target, target, engine="elastix")
    reg = register(target, target, kind="affine", engine="sitk")
    with pytest.raises(InputError, match="expects the moving grid"):
        reg.warp(np.zeros((5, 5, 5)))
    with pytest.raises(InputError, match="interpolation must be one of"):
        reg.warp(target.array, interpolation="cubic")


def test_a_registration_that_shrinks_the_anatomy_is_doubted(
    fixed: tuple[Volume, np.ndarray],
) -> None:
    target, _ = fixed
    same = register(target, Volume(target.array.copy(), target.affine, name="same.nii.gz"))
    assert same.doubt() is None
    # the same phantom at 0.6 times the size: a registration that has to scale it by ~0.6
    small, _ = subject(target.affine, target.shape, warp=lambda p: p / 0.6, name="small.nii.gz")
    reg = register(target, small, kind="affine", engine="sitk")
    doubt = reg.doubt()
    assert doubt is not None and "'small.nii.gz'" in doubt
    low, high = (float(v) for v in re.search(r"scaled it by ([\d.]+)-([\d.]+)", doubt).groups())
    assert 0.5 < low <= high < 0.7
