"""Tests for medverse.training.coarse_to_fine: training windows built on the inference level plan.

The strongest checks run the real inference driver (:func:`run_inference`) with its sliding
window replaced by an identity network that records what each level is given: a training window
at level ``t`` must hold exactly the driver's level-``t`` tensors at its crop, AR pair included.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medverse.data.episodes import Episode
from medverse.errors import InputError
from medverse.inference import driver
from medverse.inference.driver import InferenceConfig, resize, run_inference
from medverse.inference.pyramid import Level, plan_levels
from medverse.training.coarse_to_fine import (
    TrainingWindow,
    choose_ar_mode,
    collate_windows,
    episode_to_window,
    level_run_shape,
)

from .conftest import fake_episode

WINDOW = 16
# Three levels under both rules, odd sizes, one axis that stays below the window at the coarse
# levels (zero-padded by the medverse rule, squashed by the released rule; released also
# end-pads to (48, 40, 24)).
THREE_LEVELS = (45, 38, 21)


def smooth(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A smooth random field in [0, 1] of shape ``(1, X, Y, Z)``, with no symmetry."""
    coarse = torch.rand(
        1, 1, *(max(2, n // 4) for n in shape), generator=torch.Generator().manual_seed(seed)
    )
    return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0].numpy()


def crop(x: torch.Tensor, start: tuple[int, int, int]) -> torch.Tensor:
    """The window at ``start`` of the last three axes, zero-padded past the end."""
    pads: list[int] = []
    for have, first in zip(reversed(x.shape[-3:]), reversed(start)):
        pads += [0, max(0, first + WINDOW - have)]
    x = F.pad(x, pads)
    sx, sy, sz = start
    return x[..., sx : sx + WINDOW, sy : sy + WINDOW, sz : sz + WINDOW]


def interpolate(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Trilinear, align_corners=True, written out here rather than taken from the module."""
    return F.interpolate(x[None], size=shape, mode="trilinear", align_corners=True)[0]


def windows_by_level(episode: Episode, rule: str = "medverse", **kwargs) -> dict[int, list]:
    """Fine windows of ``episode`` for seeds 0..29, grouped by level."""
    found: dict[int, list] = {}
    for seed in range(30):
        win = episode_to_window(
            episode, WINDOW, np.random.default_rng(seed), coarse=False, level_rule=rule, **kwargs
        )
        found.setdefault(win.level, []).append(win)
    return found


def driver_levels(
    episode: Episode, rule: str, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, torch.Tensor]]:
    """What the inference driver gives each level's sliding window for ``episode``'s target and
    contexts, with a network that returns its target (so a level's prediction is its target)."""
    levels: list[dict] = []

    def identity(net, target, context_in, context_out, ar, cfg, guided=False, adaptive=False):  # noqa: ANN001, ANN202
        levels.append({"target": target, "context_in": context_in, "ar": ar})
        return target.expand(-1, context_out.shape[2], -1, -1, -1).clone(), 1, 0

    monkeypatch.setattr(driver, "_sliding", identity)
    net = SimpleNamespace(config=SimpleNamespace(window=WINDOW))
    run_inference(
        net,  # type: ignore[arg-type]
        torch.from_numpy(episode.target)[None],
        torch.from_numpy(episode.context_in)[None],
        torch.from_numpy(episode.context_out)[None],
        InferenceConfig(compat=rule),
    )
    return levels


def identity_episode(shape=THREE_LEVELS, reference=None) -> Episode:
    """A transformation episode of smooth fields; the reference is the target unless given."""
    target = smooth(shape, 0)
    context = np.stack([smooth(shape, 1), smooth(shape, 2)])
    return Episode(
        target=target,
        target_reference=target if reference is None else reference(target),
        context_in=context,
        context_out=1 - context,
        task="transformation",
        family="transformation",
        seed=0,
    )


# -------------------------------------------------------------------------- level_run_shape


def test_level_run_shape_is_the_window_cube_only_for_a_squashed_level() -> None:
    assert level_run_shape(Level(1, (12, 10, 6), squashed=True), WINDOW) == (16, 16, 16)
    assert level_run_shape(Level(1, (12, 10, 6)), WINDOW) == (12, 10, 6)


# ------------------------------------------------------------------------- level and crops


@pytest.mark.parametrize("rule", ["medverse", "released"])
def test_levels_follow_the_inference_plan_and_crops_stay_inside_the_level(rule: str) -> None:
    episode = identity_episode()
    plan = plan_levels(THREE_LEVELS, WINDOW, level_rule=rule)
    assert plan.num_levels == 3
    coarse = episode_to_window(
        episode, WINDOW, np.random.default_rng(0), coarse=True, level_rule=rule
    )
    assert (coarse.level, coarse.num_levels, coarse.start, coarse.ar_mode) == (1, 3, None, None)
    found = windows_by_level(episode, rule)
    assert sorted(found) == [2, 3]  # every fine level is drawn, never level 1
    assert min(len(v) for v in found.values()) >= 8  # uniform: 30 draws, two levels
    for level, windows in found.items():
        run = level_run_shape(plan.levels[level - 1], WINDOW)
        for win in windows:
            assert win.num_levels == 3 and win.ar_mode == "degraded"
            assert win.target.shape == win.reference.shape == (1, WINDOW, WINDOW, WINDOW)
            assert all(0 <= s <= max(0, n - WINDOW) for s, n in zip(win.start, run)), (
                level,
                win.start,
            )


@pytest.mark.parametrize("rule", ["medverse", "released"])
def test_every_window_is_the_drivers_level_at_its_crop(
    rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Target, contexts and AR pair of a level-t window = what inference feeds level t there.

    The reference is the target, so the degraded AR output (ground truth down to level t-1 and
    back up) is what the driver's AR output is when each level predicts its target exactly.
    """
    episode = identity_episode()
    levels = driver_levels(episode, rule, monkeypatch)
    assert len(levels) == 3 and levels[0]["ar"] is None
    coarse = episode_to_window(
        episode, WINDOW, np.random.default_rng(0), coarse=True, level_rule=rule
    )
    # the level-1 pass: the whole level, zero-padded (medverse) or squashed (released) to W^3
    assert torch.equal(coarse.target, levels[0]["target"][0])
    assert torch.equal(coarse.context_in, levels[0]["context_in"][0])
    for level, windows in windows_by_level(episode, rule, foreground_crop_prob=0.5).items():
        seen = levels[level - 1]
        ar_in, ar_out = seen["ar"]
        for win in windows:
            torch.testing.assert_close(
                win.target, crop(seen["target"][0], win.start), rtol=0, atol=1e-6
            )
            torch.testing.assert_close(
                win.context_in, crop(seen["context_in"][0], win.start), rtol=0, atol=1e-6
            )
            torch.testing.assert_close(win.ar_in, crop(ar_in[0], win.start), rtol=0, atol=1e-6)
            torch.testing.assert_close(win.ar_out, crop(ar_out[0], win.start), rtol=0, atol=1e-6)


def test_ar_output_at_each_level_is_the_ground_truth_of_the_previous_level() -> None:
    """Down to level t-1, back up to level t (medverse rule: levels (12,10,11), (23,19,11),
    (45,38,21)); a window that took level 1's or the full-resolution reference would differ."""
    episode = fake_episode(shape=THREE_LEVELS, family="segmentation", seed=3)
    reference = torch.from_numpy(episode.target_reference)
    target = torch.from_numpy(episode.target)
    shapes = [(12, 10, 11), (23, 19, 11), (45, 38, 21)]
    assert [lv.shape for lv in plan_levels(THREE_LEVELS, WINDOW).levels] == shapes
    for level, windows in windows_by_level(episode, foreground_crop_prob=0.0).items():
        previous, current = shapes[level - 2], shapes[level - 1]
        expected_out = interpolate(interpolate(reference, previous), current).clamp(0, 1)
        expected_in = interpolate(interpolate(target, previous), current)
        for win in windows:
            torch.testing.assert_close(
                win.ar_out[0], crop(expected_out, win.start), rtol=0, atol=1e-6
            )
            torch.testing.assert_close(
                win.ar_in[0], crop(expected_in, win.start), rtol=0, atol=1e-6
            )
            torch.testing.assert_close(
                win.reference, crop(interpolate(reference, current), win.start), rtol=0, atol=1e-6
            )
            # a degraded mask is soft at the edges but never the mask itself
            assert not torch.equal(win.ar_out[0], win.reference)


def test_a_fine_window_crops_the_same_region_of_every_tensor() -> None:
    """Every volume of the episode is the same field: a crop taken elsewhere would differ."""
    field = smooth(THREE_LEVELS, 7)
    episode = Episode(
        target=field,
        target_reference=field,
        context_in=np.stack([field, field, field]),
        context_out=np.stack([field, field, field]),
        task="transformation",
        family="transformation",
        seed=0,
    )
    for windows in windows_by_level(episode, foreground_crop_prob=0.5).values():
        for win in windows:
            assert torch.equal(win.reference, win.target)
            for k in range(3):
                assert torch.equal(win.context_in[k], win.target)
                assert torch.equal(win.context_out[k], win.target)
            assert torch.equal(win.ar_out, win.ar_in)
    # and a crop at another start is not the same (the test above can fail)
    win = windows_by_level(episode)[3][0]
    level = torch.from_numpy(field)
    moved = tuple(s + 1 if s == 0 else s - 1 for s in win.start)
    assert not torch.equal(crop(level, moved), win.target)


def test_foreground_crops_hold_the_structure() -> None:
    """A 3-voxel cube in a corner of 48^3: centred crops always see it, random crops rarely."""
    shape = (48, 48, 48)
    mask = np.zeros((1, *shape), np.float32)
    mask[0, 40:43, 3:6, 40:43] = 1.0
    image = smooth(shape, 4)
    episode = Episode(
        target=image,
        target_reference=mask,
        context_in=np.stack([image, image]),
        context_out=np.stack([mask, mask]),
        task="segmentation",
        family="segmentation",
        seed=0,
    )
    centred = [w for ws in windows_by_level(episode, foreground_crop_prob=1.0).values() for w in ws]
    assert all(float(w.reference.max()) > 0.5 for w in centred)
    random = [w for ws in windows_by_level(episode, foreground_crop_prob=0.0).values() for w in ws]
    assert sum(float(w.reference.max()) > 0.5 for w in random) < len(random)


def test_a_window_is_a_pure_function_of_the_episode_and_the_generator() -> None:
    episode = fake_episode(shape=THREE_LEVELS)
    a = episode_to_window(episode, WINDOW, np.random.default_rng(11), coarse=False)
    b = episode_to_window(episode, WINDOW, np.random.default_rng(11), coarse=False)
    assert (a.level, a.start) == (b.level, b.start)
    for name in ("target", "reference", "context_in", "context_out", "ar_in", "ar_out"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    starts = {
        episode_to_window(episode, WINDOW, np.random.default_rng(s), coarse=False).start
        for s in range(5)
    }
    assert len(starts) > 1


# ---------------------------------------------------------------------------- the AR source


@pytest.mark.parametrize("rule", ["medverse", "released"])
def test_self_mode_is_the_drivers_ar_output_for_the_same_model(
    rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a model that returns its target, the self-made coarse output is the driver's AR
    output at every level: level 2 from the exact level-1 pass, level 3 from one coarse window
    around the fine window (the degraded ground truth elsewhere never reaches the crop)."""
    episode = identity_episode(reference=lambda target: 1 - target)  # degraded would differ
    levels = driver_levels(episode, rule, monkeypatch)
    calls = []

    def model(target, context_in, context_out, ar_in, ar_out):  # noqa: ANN001, ANN202
        calls.append(ar_in is None)
        return target

    found = windows_by_level(episode, rule, ar_mode="self", window_model=model)
    assert sorted(found) == [2, 3]
    assert len(calls) == sum(len(v) for v in found.values())  # one extra forward per window
    for level, windows in found.items():
        ar_out = levels[level - 1]["ar"][1]
        for win in windows:
            assert win.ar_mode == "self"
            torch.testing.assert_close(win.ar_out, crop(ar_out[0], win.start), rtol=0, atol=1e-6)
            assert (win.ar_out - win.reference).abs().max() > 0.1  # not the ground truth


def test_self_mode_uses_the_models_level1_prediction() -> None:
    episode = fake_episode()
    calls = []

    def window_model(target, context_in, context_out, ar_in, ar_out):
        calls.append((target.shape, context_in.shape, ar_in))
        return torch.full_like(target, 0.25)

    win = episode_to_window(
        episode,
        16,
        np.random.default_rng(2),
        coarse=False,
        ar_mode="self",
        window_model=window_model,
    )
    assert calls == [((1, 1, 16, 16, 16), (1, 2, 1, 16, 16, 16), None)]
    assert win.ar_mode == "self"
    assert torch.allclose(win.ar_out, torch.full_like(win.ar_out, 0.25))
    with pytest.raises(InputError, match="needs a window_model"):
        episode_to_window(episode, 16, np.random.default_rng(2), coarse=False, ar_mode="self")


def test_an_unknown_ar_mode_is_refused() -> None:
    with pytest.raises(InputError, match="'degraded' or 'self'"):
        episode_to_window(
            fake_episode(), WINDOW, np.random.default_rng(0), coarse=False, ar_mode="mixed"
        )


def test_choose_ar_mode_draws_self_with_its_probability() -> None:
    rng = np.random.default_rng(0)
    draws = [choose_ar_mode("mixed", 0.3, rng) for _ in range(2000)]
    assert set(draws) == {"self", "degraded"}
    assert abs(draws.count("self") / 2000 - 0.3) < 0.04  # 4 sd of a binomial(2000, 0.3)
    assert {choose_ar_mode("mixed", 0.0, rng) for _ in range(50)} == {"degraded"}
    assert {choose_ar_mode("mixed", 1.0, rng) for _ in range(50)} == {"self"}
    state = rng.bit_generator.state
    assert choose_ar_mode("self", 0.0, rng) == "self"
    assert choose_ar_mode("degraded", 1.0, rng) == "degraded"
    assert rng.bit_generator.state == state  # a fixed mode draws nothing
    with pytest.raises(InputError, match="'mixed'"):
        choose_ar_mode("both", 0.5, rng)


# ------------------------------------------------------------------------------ level 1 pass


def test_level1_window_is_the_whole_volume_without_ar() -> None:
    episode = fake_episode()
    window = episode_to_window(episode, 16, np.random.default_rng(0), coarse=True)
    assert window.ar_in is None and window.ar_out is None and window.level == 1
    assert window.num_levels == 2
    assert window.target.shape == (1, 16, 16, 16)
    assert window.context_in.shape == (2, 1, 16, 16, 16)
    # medverse rule: level 1 of 24^3 with a 16^3 window is 12^3, zero-padded at the end
    expected = resize(torch.from_numpy(episode.target)[None], (12, 12, 12))[0]
    assert torch.allclose(window.target[:, :12, :12, :12], expected)
    assert torch.all(window.target[:, 12:] == 0)


def test_released_level1_window_is_squashed_to_the_window() -> None:
    episode = fake_episode()
    window = episode_to_window(
        episode, 16, np.random.default_rng(0), coarse=True, level_rule="released"
    )
    expected = interpolate(torch.from_numpy(episode.target), (16, 16, 16))
    torch.testing.assert_close(window.target, expected, rtol=0, atol=1e-6)
    assert bool((window.target[:, 12:] != 0).any())  # stretched, not zero-padded


def test_fine_window_ar_pair_is_the_degraded_previous_level() -> None:
    episode = fake_episode(family="transformation")
    win = episode_to_window(
        episode, 16, np.random.default_rng(1), coarse=False, foreground_crop_prob=0.0
    )
    assert win.level == 2 and win.ar_mode == "degraded" and win.start is not None
    assert win.ar_in.shape == win.ar_out.shape == (1, 1, 16, 16, 16)
    sx, sy, sz = win.start
    region = (..., slice(sx, sx + 16), slice(sy, sy + 16), slice(sz, sz + 16))
    target = torch.from_numpy(episode.target)[None]
    reference = torch.from_numpy(episode.target_reference)[None]
    down_up = resize(resize(target, (12, 12, 12)), (24, 24, 24))
    assert torch.allclose(win.ar_in[0], down_up[0][region], atol=1e-6)
    assert torch.allclose(win.target, target[0][region])
    assert torch.allclose(win.reference, reference[0][region])
    expected_out = resize(resize(reference, (12, 12, 12)), (24, 24, 24)).clamp(0, 1)
    assert torch.allclose(win.ar_out[0], expected_out[0][region], atol=1e-6)


def test_single_level_volume_always_gives_a_level1_window() -> None:
    win = episode_to_window(
        fake_episode(shape=(16, 12, 16)), 16, np.random.default_rng(0), coarse=False
    )
    assert win.ar_in is None and win.level == 1 and win.target.shape == (1, 16, 16, 16)


# ----------------------------------------------------------------------------- guided windows


def test_guided_window_has_the_target_and_the_mean_context_mask_as_ar_pair() -> None:
    episode = fake_episode(num_contexts=3)
    win = episode_to_window(
        episode, 16, np.random.default_rng(4), coarse=True, guided=True, foreground_crop_prob=0.0
    )
    assert win.guided and win.ar_mode == "prior" and win.level == win.num_levels == 2
    sx, sy, sz = win.start
    region = (..., slice(sx, sx + 16), slice(sy, sy + 16), slice(sz, sz + 16))
    # the episode's own grid (no resampling), the target itself as AR image
    assert torch.equal(win.target, torch.from_numpy(episode.target)[region])
    assert torch.equal(win.ar_in[0], win.target)
    prior = torch.from_numpy(episode.context_out).mean(dim=0)
    assert torch.allclose(win.ar_out[0], prior[region])
    plain = episode_to_window(episode, 16, np.random.default_rng(4), coarse=False)
    with pytest.raises(InputError, match="guided"):
        collate_windows([win, plain])
    assert collate_windows([win, win])["guided"] is True


def test_guided_window_of_a_thin_volume_is_padded_and_its_crop_is_shared() -> None:
    """A guided window ignores ``coarse`` and the level draw; every tensor, the prior included,
    is the same zero-padded crop of the full-resolution grid."""
    episode = fake_episode(shape=(40, 20, 9), num_contexts=2, seed=5)
    target = torch.from_numpy(episode.target)
    reference = torch.from_numpy(episode.target_reference)
    prior = torch.from_numpy(episode.context_out).mean(dim=0)
    for seed in range(6):
        win = episode_to_window(
            episode, WINDOW, np.random.default_rng(seed), coarse=seed % 2 == 0, guided=True
        )
        assert win.start[2] == 0 and 0 <= win.start[0] <= 24 and 0 <= win.start[1] <= 4
        assert torch.equal(win.target, crop(target, win.start))
        assert torch.equal(win.reference, crop(reference, win.start))
        assert torch.equal(win.ar_out[0], crop(prior, win.start))
        assert torch.equal(
            win.context_out[1], crop(torch.from_numpy(episode.context_out[1]), win.start)
        )
        assert torch.all(win.target[..., 9:] == 0)  # past the 9 voxels of z: zero padding
        assert win.level == win.num_levels == plan_levels((40, 20, 9), WINDOW).num_levels


# ---------------------------------------------------------------------------- collate_windows


def _window(num_contexts: int, level: int, value: float, ar: bool = True) -> TrainingWindow:
    cube = (1, WINDOW, WINDOW, WINDOW)
    ar_pair = torch.full((1, *cube), value) if ar else None
    return TrainingWindow(
        target=torch.full(cube, value),
        reference=torch.full(cube, -value),
        context_in=torch.arange(num_contexts, dtype=torch.float32)
        .view(-1, 1, 1, 1, 1)
        .expand(-1, *cube)
        .clone()
        + value,
        context_out=torch.zeros(num_contexts, *cube),
        ar_in=ar_pair,
        ar_out=None if ar_pair is None else ar_pair + 1,
        family="segmentation" if level == 2 else "enhancement",
        level=level,
        num_levels=3,
        ar_mode="degraded" if ar else None,
    )


def test_collate_stacks_in_order_and_cuts_contexts_to_the_smallest_count() -> None:
    batch = collate_windows([_window(3, 2, 10.0), _window(2, 3, 20.0)])
    assert batch["target"].shape == batch["reference"].shape == (2, 1, WINDOW, WINDOW, WINDOW)
    assert batch["context_in"].shape == (2, 2, 1, WINDOW, WINDOW, WINDOW)
    assert batch["ar_in"].shape == batch["ar_out"].shape == (2, 1, 1, WINDOW, WINDOW, WINDOW)
    assert batch["target"][:, 0, 0, 0, 0].tolist() == [10.0, 20.0]
    assert batch["reference"][:, 0, 0, 0, 0].tolist() == [-10.0, -20.0]
    # the first contexts of each window are kept, in order
    assert batch["context_in"][:, :, 0, 0, 0, 0].tolist() == [[10.0, 11.0], [20.0, 21.0]]
    assert batch["ar_out"][:, 0, 0, 0, 0, 0].tolist() == [11.0, 21.0]
    assert batch["level"] == [2, 3] and batch["family"] == ["segmentation", "enhancement"]
    assert batch["guided"] is False
    level1 = collate_windows([_window(1, 1, 0.0, ar=False)] * 2)
    assert level1["ar_in"] is None and level1["ar_out"] is None


def test_collate_refuses_no_windows_and_mixed_passes() -> None:
    with pytest.raises(InputError, match="at least one window"):
        collate_windows([])
    rng = np.random.default_rng(0)
    a = episode_to_window(fake_episode(), 16, rng, coarse=True)
    b = episode_to_window(fake_episode(), 16, rng, coarse=False)
    with pytest.raises(InputError, match="mixes"):
        collate_windows([a, b])


def test_predictor_is_the_old_name_of_window_model() -> None:
    from medverse.training import coarse_to_fine

    assert coarse_to_fine.Predictor is coarse_to_fine.WindowModel

    def window_model(target, context_in, context_out, ar_in, ar_out):
        return torch.full_like(target, 0.25)

    args = (fake_episode(), 16, np.random.default_rng(2))
    new = episode_to_window(*args, coarse=False, ar_mode="self", window_model=window_model)
    args = (fake_episode(), 16, np.random.default_rng(2))
    with pytest.warns(DeprecationWarning, match="window_model"):
        old = episode_to_window(*args, coarse=False, ar_mode="self", predictor=window_model)
    assert torch.equal(new.ar_out, old.ar_out) and torch.equal(new.target, old.target)
