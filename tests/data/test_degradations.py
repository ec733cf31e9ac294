"""The degradations of the enhancement tasks: deterministic operations and their random draws."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from medverse.data.degradations import (
    ENHANCEMENT_OPS,
    BiasField,
    GaussianNoise,
    Inpainting,
    RandomBiasField,
    RandomGaussianNoise,
    RandomInpainting,
    RandomSaltAndPepper,
    RandomSuperResolution,
    SaltAndPepper,
    SuperResolution,
    default_enhancements,
    enhancement_ops,
)
from medverse.data.phantoms import make_subject
from medverse.errors import InputError

SHAPE = (32, 32, 32)


def smooth_image(seed: int = 0) -> np.ndarray:
    """A synthetic image in [0, 1] with structure (so degradations have something to change)."""
    return make_subject(SHAPE, num_classes=5, num_modalities=1, seed=seed).images[0]


@pytest.mark.parametrize("name", sorted(ENHANCEMENT_OPS))
def test_random_op_draws_a_replayable_deterministic_op(name: str) -> None:
    image = smooth_image()
    random_op = default_enhancements()[name]
    degraded, op = random_op(image, np.random.default_rng(11))
    again, op_again = random_op(image, np.random.default_rng(11))
    assert op == op_again
    np.testing.assert_array_equal(degraded, again)
    replayed = ENHANCEMENT_OPS[name](**dataclasses.asdict(op))(image)
    np.testing.assert_array_equal(degraded, replayed)
    assert degraded.dtype == np.float32 and degraded.shape == SHAPE
    assert not np.allclose(degraded, image)
    json.dumps(dataclasses.asdict(op))  # parameters are plain numbers, recordable in episodes


def test_enhancement_ops_take_names_or_parameter_ranges() -> None:
    assert sorted(enhancement_ops(None)) == sorted(default_enhancements())
    assert list(enhancement_ops(["bias_field", "gaussian_noise"])) == [
        "bias_field",
        "gaussian_noise",
    ]
    ops = enhancement_ops({"gaussian_noise": {"std": [0.01, 0.02]}, "bias_field": None})
    assert ops["bias_field"].coefficients == default_enhancements()["bias_field"].coefficients
    rng = np.random.default_rng(0)
    stds = [ops["gaussian_noise"].draw(rng).std for _ in range(50)]
    assert 0.01 <= min(stds) and max(stds) <= 0.02  # the default range is 0.03-0.2
    assert enhancement_ops({"super_resolution": {"factor": 3, "axes": [2]}})[
        "super_resolution"
    ].draw(rng) == SuperResolution(axis=2, factor=3.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["denoise"], "unknown enhancement task 'denoise'"),
        ({"gaussian_noise": {"sigma": 0.1}}, r"unknown parameters \['sigma'\]; it takes \['std'\]"),
        ({"gaussian_noise": {"std": [0.2, 0.1]}}, "std must be"),
        ({"bias_field": {"coefficients": "strong"}}, "invalid parameters"),
        ([], "at least one"),
    ],
)
def test_enhancement_ops_reject_bad_specs(spec, message: str) -> None:
    with pytest.raises(InputError, match=message):
        enhancement_ops(spec)


@pytest.mark.parametrize("std", [0.05, 0.2])
def test_gaussian_noise_std_matches(std: float) -> None:
    image = smooth_image()
    residual = GaussianNoise(std=std, seed=0)(image) - image
    assert residual.std() == pytest.approx(std, rel=0.05)
    assert abs(residual.mean()) < 0.01
    assert not np.array_equal(GaussianNoise(std=std, seed=1)(image), image + residual)


def test_salt_and_pepper_fraction_and_values() -> None:
    image = smooth_image() * 0.8 + 0.1  # strictly inside (0.1, 0.9) ...
    image[0, 0, 0], image[-1, -1, -1] = 0.0, 1.0  # ... with known extremes
    degraded = SaltAndPepper(amount=0.1, seed=3, salt_ratio=0.25)(image)
    changed = degraded != image
    assert changed.mean() == pytest.approx(0.1, abs=0.01)
    assert set(np.unique(degraded[changed]).tolist()) <= {0.0, 1.0}
    assert (degraded[changed] == 1.0).mean() == pytest.approx(0.25, abs=0.03)


def test_bias_field_is_smooth_multiplicative_and_seeded() -> None:
    image = smooth_image()
    op = RandomBiasField(coefficients=0.5).draw(np.random.default_rng(0))
    assert len(op.coefficients) == 19  # (3+1)(3+2)(3+3)/6 - 1 Legendre terms of order 3
    field = op.field(SHAPE)
    assert field.min() > 0
    np.testing.assert_allclose(op(image), image * field, rtol=1e-6)
    assert np.abs(np.diff(np.log(field), axis=0)).max() < 0.5  # low frequency
    assert BiasField(coefficients=(0.0,) * 19)(image) == pytest.approx(image)
    with pytest.raises(InputError, match="coefficients"):
        BiasField(coefficients=(0.1,) * 3)(image)


def test_inpainting_blanks_the_requested_fraction() -> None:
    image = smooth_image() + 0.5
    op = Inpainting(fraction=0.2, seed=4, fill=0.0)
    mask = op.mask(SHAPE)
    assert mask.mean() == pytest.approx(0.2, abs=0.01)
    degraded = op(image)
    assert np.all(degraded[mask] == 0.0)
    np.testing.assert_array_equal(degraded[~mask], image[~mask])
    # the mask is made of blobs, not scattered voxels: most masked voxels have a masked neighbour
    assert (mask[1:] & mask[:-1]).sum() > 0.8 * mask[1:].sum()


def high_frequency_fraction(volume: np.ndarray, axis: int) -> float:
    """Share of the (mean-free) spectral energy along ``axis`` above half the Nyquist frequency."""
    spectrum = np.abs(np.fft.rfft(volume - volume.mean(), axis=axis)) ** 2
    cut = spectrum.shape[axis] // 2
    high = np.take(spectrum, range(cut, spectrum.shape[axis]), axis=axis).sum()
    return float(high / spectrum.sum())


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_low_resolution_removes_high_frequencies_along_its_axis(axis: int) -> None:
    image = np.random.default_rng(0).uniform(0, 1, SHAPE).astype(np.float32)  # white: flat spectrum
    degraded = SuperResolution(axis=axis, factor=3.0)(image)
    assert degraded.shape == image.shape
    assert high_frequency_fraction(image, axis) == pytest.approx(0.5, abs=0.05)
    assert high_frequency_fraction(degraded, axis) < 0.1
    other = (axis + 1) % 3  # the other axes keep a flat spectrum
    assert high_frequency_fraction(degraded, other) == pytest.approx(0.5, abs=0.05)
    assert abs(float(degraded.mean()) - float(image.mean())) < 0.01


def test_fix_strength_keeps_level_and_varies_realisation() -> None:
    rng = np.random.default_rng(0)
    noise = RandomGaussianNoise(std=(0.05, 0.2)).fix_strength(rng)
    a, b = noise.draw(rng), noise.draw(rng)
    assert a.std == b.std and a.seed != b.seed
    sr = RandomSuperResolution().fix_strength(rng)
    assert sr.draw(rng) == sr.draw(rng)
    sp = RandomSaltAndPepper().fix_strength(rng)
    assert sp.draw(rng).amount == sp.draw(rng).amount
    inpaint = RandomInpainting().fix_strength(rng)
    assert inpaint.draw(rng).fraction == inpaint.draw(rng).fraction


def test_random_op_ranges_are_checked() -> None:
    with pytest.raises(InputError, match="std"):
        RandomGaussianNoise(std=(0.3, 0.1))
    with pytest.raises(InputError, match="fraction"):
        RandomInpainting(fraction=(0.5, 1.2))
    with pytest.raises(InputError, match="axes"):
        RandomSuperResolution(axes=(3,))
    with pytest.raises(InputError, match="3-D"):
        GaussianNoise(std=0.1, seed=0)(np.zeros((4, 4)))


def test_each_operation_is_named_after_its_task() -> None:
    """Class name = ``name`` in CamelCase; ``LowResolution`` is the old name, kept for one release."""
    import medverse.data
    from medverse.data import degradations
    from medverse.data.degradations import RANDOM_ENHANCEMENTS

    for name, op in ENHANCEMENT_OPS.items():
        assert op.__name__ == "".join(part.title() for part in name.split("_")), name
        assert RANDOM_ENHANCEMENTS[name].__name__ == "Random" + op.__name__
    assert degradations.LowResolution is SuperResolution is medverse.data.SuperResolution
    assert degradations.RandomLowResolution is RandomSuperResolution
    assert medverse.data.LowResolution is SuperResolution
