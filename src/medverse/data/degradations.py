"""The degradations of the enhancement tasks: deterministic operations and their random draws.

As in TorchIO, randomness is kept apart from the operation (METHOD.md §4): a ``Random*`` object
draws parameters from a :class:`numpy.random.Generator` and returns a frozen, deterministic
operation (:class:`GaussianNoise`, :class:`SaltAndPepper`, :class:`BiasField`,
:class:`Inpainting`, :class:`SuperResolution`) whose fields are plain numbers, so
``ENHANCEMENT_OPS[name](**dataclasses.asdict(op))`` replays it. :func:`enhancement_ops` builds the
``Random*`` objects of training from names and parameter ranges.

Each operation makes the input of one enhancement task and is named after that task: its class
name is its ``name`` in CamelCase (``SuperResolution.name == "super_resolution"``: it down-samples,
and the task is to undo it). ``LowResolution`` and ``RandomLowResolution``, the old names of
:class:`SuperResolution` and :class:`RandomSuperResolution`, are kept for one release.

Enhancement operations expect a single 3-D volume ``(X, Y, Z)`` already scaled to ``[0, 1]``
(noise standard deviations and fill values are on that scale) and return ``float32``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torchio as tio

from medverse.data.noise import perlin_noise
from medverse.errors import InputError

__all__ = [
    "ENHANCEMENT_OPS",
    "RANDOM_ENHANCEMENTS",
    "BiasField",
    "GaussianNoise",
    "Inpainting",
    "LowResolution",
    "RandomBiasField",
    "RandomGaussianNoise",
    "RandomInpainting",
    "RandomLowResolution",
    "RandomSaltAndPepper",
    "RandomSuperResolution",
    "SaltAndPepper",
    "SuperResolution",
    "default_enhancements",
    "enhancement_ops",
]


# --------------------------------------------------------------------------------------------
# Enhancement tasks: deterministic operations ...
# --------------------------------------------------------------------------------------------


def _check_volume(image: np.ndarray, op: str) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise InputError(f"{op} expects a 3-D volume (X, Y, Z), got shape {image.shape}")
    return image


def _to_tio(image: np.ndarray) -> tio.ScalarImage:
    return tio.ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(image)[None]))


@dataclass(frozen=True)
class GaussianNoise:
    """Add Gaussian noise ``N(mean, std**2)`` (TorchIO ``Noise``; seeded, so replayable)."""

    name: ClassVar[str] = "gaussian_noise"
    std: float
    seed: int
    mean: float = 0.0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name)
        noise = tio.Noise(mean=self.mean, std=self.std, seed=self.seed)
        return noise(_to_tio(image)).data[0].numpy().astype(np.float32)


@dataclass(frozen=True)
class SaltAndPepper:
    """Set a fraction ``amount`` of voxels to the image maximum (salt) or minimum (pepper).

    Each corrupted voxel is salt with probability ``salt_ratio``. Neither TorchIO nor MONAI has
    this operation.
    """

    name: ClassVar[str] = "salt_and_pepper"
    amount: float
    seed: int
    salt_ratio: float = 0.5

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name).copy()
        rng = np.random.default_rng(self.seed)
        corrupt = rng.random(image.shape) < self.amount
        salt = rng.random(image.shape) < self.salt_ratio
        low, high = float(image.min()), float(image.max())
        image[corrupt & salt] = high
        image[corrupt & ~salt] = low
        return image


@dataclass(frozen=True)
class BiasField:
    """Multiply by ``exp(field)``, ``field`` a sum of Legendre polynomials up to ``order``.

    Same basis and coefficient order as MONAI's ``RandBiasField`` (``(order+1)(order+2)(order+3)/6
    - 1`` coefficients; the constant term is left out). We call numpy's ``leggrid3d`` directly so
    the coefficients are explicit; TorchIO's ``BiasField`` takes 0.9 s per 128³ volume, this 0.1 s.
    """

    name: ClassVar[str] = "bias_field"
    coefficients: tuple[float, ...]
    order: int = 3

    def field(self, shape: Sequence[int]) -> np.ndarray:
        """The multiplicative field ``exp(sum c_ijk P_i(x) P_j(y) P_k(z))`` on ``shape``."""
        powers = _bias_terms(self.order)
        if len(self.coefficients) != len(powers):
            raise InputError(
                f"bias field of order {self.order} needs {len(powers)} coefficients, "
                f"got {len(self.coefficients)}"
            )
        matrix = np.zeros((self.order + 1,) * 3)
        for (i, j, k), value in zip(powers, self.coefficients, strict=True):
            matrix[i, j, k] = value
        coords = [np.linspace(-1.0, 1.0, n) for n in shape]
        return np.exp(np.polynomial.legendre.leggrid3d(*coords, matrix)).astype(np.float32)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name)
        return (image * self.field(image.shape)).astype(np.float32)


def _bias_terms(order: int) -> list[tuple[int, int, int]]:
    terms = [
        (i, j, k)
        for i in range(order + 1)
        for j in range(order + 1 - i)
        for k in range(order + 1 - i - j)
    ]
    return terms[1:] if len(terms) > 1 else terms


@dataclass(frozen=True)
class Inpainting:
    """Blank out a Perlin-noise-shaped region covering a fraction ``fraction`` of the volume.

    The mask is ``noise > quantile(noise, 1 - fraction)`` of :func:`~medverse.data.noise.perlin_noise` drawn from
    ``seed`` with ``cells`` and ``octaves``; masked voxels are set to ``fill`` (``None``: the image
    minimum).
    """

    name: ClassVar[str] = "inpainting"
    fraction: float
    seed: int
    cells: int = 3
    octaves: int = 3
    fill: float | None = None

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        """Boolean mask of the voxels to blank out."""
        noise = perlin_noise(
            shape, cells=self.cells, octaves=self.octaves, rng=np.random.default_rng(self.seed)
        )
        return noise > np.quantile(noise, 1 - self.fraction)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name).copy()
        image[self.mask(image.shape)] = image.min() if self.fill is None else self.fill
        return image


@dataclass(frozen=True)
class SuperResolution:
    """Down-sample one axis by ``factor`` (area averaging, like a thick slice) and back (trilinear).

    The input of the super-resolution task (was ``LowResolution``, kept as an alias).

    Uses MONAI ``Resize``; TorchIO's ``RandomAnisotropy`` does the same with SimpleITK
    (nearest-neighbour down-sampling) ten times slower at 128³.
    """

    name: ClassVar[str] = "super_resolution"
    axis: int
    factor: float

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = _check_volume(image, self.name)
        return _down_up(image[None], self.axis, self.factor, is_mask=False)[0]


def _down_up(volumes: np.ndarray, axis: int, factor: float, *, is_mask: bool) -> np.ndarray:
    """Down-sample ``(C, X, Y, Z)`` along spatial ``axis`` by ``factor`` and resize back."""
    if axis not in (0, 1, 2) or factor < 1:
        raise InputError(
            f"down-sampling needs axis in (0, 1, 2) and factor >= 1, got {axis}, {factor}"
        )
    from monai.transforms import Resize  # lazy: importing MONAI costs seconds

    shape = volumes.shape[1:]
    low = list(shape)
    low[axis] = max(1, round(shape[axis] / factor))
    down_mode, up_mode = ("nearest", "nearest") if is_mask else ("area", "trilinear")
    down = Resize(tuple(low), mode=down_mode)(torch.from_numpy(np.ascontiguousarray(volumes)))
    up = Resize(tuple(shape), mode=up_mode)(down)
    return torch.as_tensor(up).cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------------------------
# ... and the Random* objects that draw their parameters
# --------------------------------------------------------------------------------------------


def _range(value: float | Sequence[float], name: str, *, low: float = 0.0) -> tuple[float, float]:
    pair = (float(value), float(value)) if np.isscalar(value) else tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1] or pair[0] < low:
        raise InputError(f"{name} must be a number or a (min, max) pair >= {low}, got {value!r}")
    return pair[0], pair[1]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


class _RandomOp:
    """Shared behaviour: ``__call__(image, rng)`` draws an operation and applies it."""

    def draw(self, rng: np.random.Generator):  # pragma: no cover - overridden
        raise NotImplementedError

    def fix_strength(self, rng: np.random.Generator) -> _RandomOp:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, image: np.ndarray, rng: np.random.Generator):
        op = self.draw(rng)
        return op(image), op

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class RandomGaussianNoise(_RandomOp):
    """Draw :class:`GaussianNoise` with ``std ~ U(*std)`` and a random seed."""

    def __init__(self, std: float | Sequence[float] = (0.03, 0.2)):
        self.std = _range(std, "std")

    def draw(self, rng: np.random.Generator) -> GaussianNoise:
        return GaussianNoise(std=float(rng.uniform(*self.std)), seed=_seed(rng))

    def fix_strength(self, rng: np.random.Generator) -> RandomGaussianNoise:
        """Same noise level for every member of an episode, a fresh seed each."""
        return RandomGaussianNoise(std=float(rng.uniform(*self.std)))


class RandomSaltAndPepper(_RandomOp):
    """Draw :class:`SaltAndPepper` with ``amount ~ U(*amount)``, ``salt_ratio ~ U(*salt_ratio)``."""

    def __init__(
        self,
        amount: float | Sequence[float] = (0.01, 0.1),
        salt_ratio: float | Sequence[float] = (0.3, 0.7),
    ):
        self.amount = _range(amount, "amount")
        self.salt_ratio = _range(salt_ratio, "salt_ratio")

    def draw(self, rng: np.random.Generator) -> SaltAndPepper:
        return SaltAndPepper(
            amount=float(rng.uniform(*self.amount)),
            seed=_seed(rng),
            salt_ratio=float(rng.uniform(*self.salt_ratio)),
        )

    def fix_strength(self, rng: np.random.Generator) -> RandomSaltAndPepper:
        return RandomSaltAndPepper(
            amount=float(rng.uniform(*self.amount)), salt_ratio=float(rng.uniform(*self.salt_ratio))
        )


class RandomBiasField(_RandomOp):
    """Draw :class:`BiasField`: magnitude ``n ~ U(*coefficients)``, each coefficient ``~ U(-n, n)``.

    A single number ``c`` means ``n = c`` (TorchIO's ``RandomBiasField(coefficients=c)`` law).
    """

    def __init__(self, coefficients: float | Sequence[float] = (0.2, 0.6), order: int = 3):
        self.coefficients = _range(coefficients, "coefficients")
        if order < 1:
            raise InputError(f"bias field order must be >= 1, got {order}")
        self.order = int(order)

    def draw(self, rng: np.random.Generator) -> BiasField:
        magnitude = rng.uniform(*self.coefficients)
        values = rng.uniform(-magnitude, magnitude, len(_bias_terms(self.order)))
        return BiasField(coefficients=tuple(float(v) for v in values), order=self.order)

    def fix_strength(self, rng: np.random.Generator) -> RandomBiasField:
        return RandomBiasField(
            coefficients=float(rng.uniform(*self.coefficients)), order=self.order
        )


class RandomInpainting(_RandomOp):
    """Draw :class:`Inpainting` with ``fraction ~ U(*fraction)``, ``cells`` an integer in range."""

    def __init__(
        self,
        fraction: float | Sequence[float] = (0.05, 0.3),
        cells: int | Sequence[int] = (2, 5),
        octaves: int = 3,
    ):
        self.fraction = _range(fraction, "fraction")
        if self.fraction[1] >= 1:
            raise InputError(f"inpainting fraction must be < 1, got {fraction!r}")
        low, high = _range(cells, "cells", low=1)
        self.cells = (int(low), int(high))
        self.octaves = int(octaves)

    def draw(self, rng: np.random.Generator) -> Inpainting:
        return Inpainting(
            fraction=float(rng.uniform(*self.fraction)),
            seed=_seed(rng),
            cells=int(rng.integers(self.cells[0], self.cells[1] + 1)),
            octaves=self.octaves,
        )

    def fix_strength(self, rng: np.random.Generator) -> RandomInpainting:
        return RandomInpainting(
            fraction=float(rng.uniform(*self.fraction)), cells=self.cells, octaves=self.octaves
        )


class RandomSuperResolution(_RandomOp):
    """Draw :class:`SuperResolution`: one axis of ``axes``, ``factor ~ U(*factor)`` (default 2-4x)."""

    def __init__(
        self, factor: float | Sequence[float] = (2.0, 4.0), axes: Sequence[int] = (0, 1, 2)
    ):
        self.factor = _range(factor, "factor", low=1.0)
        self.axes = tuple(int(a) for a in axes)
        if not self.axes or any(a not in (0, 1, 2) for a in self.axes):
            raise InputError(f"axes must be a non-empty subset of (0, 1, 2), got {axes!r}")

    def draw(self, rng: np.random.Generator) -> SuperResolution:
        axis = self.axes[int(rng.integers(len(self.axes)))]
        return SuperResolution(axis=axis, factor=float(rng.uniform(*self.factor)))

    def fix_strength(self, rng: np.random.Generator) -> RandomSuperResolution:
        """Same axis and factor for every member (the task is 'undo this down-sampling')."""
        op = self.draw(rng)
        return RandomSuperResolution(factor=op.factor, axes=(op.axis,))


#: Old names of :class:`SuperResolution` and :class:`RandomSuperResolution`, for one release.
LowResolution = SuperResolution
RandomLowResolution = RandomSuperResolution


#: Deterministic operation class per enhancement task name; ``ENHANCEMENT_OPS[name](**params)``.
ENHANCEMENT_OPS: dict[str, type] = {
    op.name: op for op in (GaussianNoise, SaltAndPepper, BiasField, Inpainting, SuperResolution)
}


#: The enhancement tasks of training: name -> ``Random*`` class (keyword arguments = its ranges).
RANDOM_ENHANCEMENTS: dict[str, type[_RandomOp]] = {
    "gaussian_noise": RandomGaussianNoise,
    "salt_and_pepper": RandomSaltAndPepper,
    "bias_field": RandomBiasField,
    "inpainting": RandomInpainting,
    "super_resolution": RandomSuperResolution,
}


def default_enhancements() -> dict[str, _RandomOp]:
    """The enhancement tasks of training with their default parameter ranges."""
    return {name: cls() for name, cls in RANDOM_ENHANCEMENTS.items()}


def enhancement_ops(
    spec: Mapping[str, Mapping[str, Any] | None] | Sequence[str] | None,
) -> dict[str, _RandomOp]:
    """``Random*`` operations from names, or from names with parameter ranges.

    Args:
        spec: ``None`` (all five, default ranges); a list of names; or a mapping name ->
            keyword arguments of its ``Random*`` class (``None`` or ``{}`` = defaults), e.g.
            ``{"gaussian_noise": {"std": [0.01, 0.1]}, "bias_field": {"coefficients": 0.1}}``.

    Raises:
        InputError: an unknown name or parameter, or an invalid range.
    """
    if spec is None:
        return default_enhancements()
    if isinstance(spec, str):
        spec = [spec]
    items = spec.items() if isinstance(spec, Mapping) else ((name, None) for name in spec)
    ops: dict[str, _RandomOp] = {}
    for name, params in items:
        if name not in RANDOM_ENHANCEMENTS:
            raise InputError(
                f"unknown enhancement task {name!r}; choose from {sorted(RANDOM_ENHANCEMENTS)}"
            )
        if params is not None and not isinstance(params, Mapping):
            raise InputError(
                f"enhancements[{name!r}] must be a mapping of parameter ranges, got {params!r}"
            )
        cls = RANDOM_ENHANCEMENTS[name]
        params = dict(params or {})
        allowed = sorted(inspect.signature(cls).parameters)
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise InputError(
                f"enhancement {name!r}: unknown parameters {unknown}; it takes {allowed}"
            )
        try:
            ops[name] = cls(**params)
        except (TypeError, ValueError) as error:
            raise InputError(
                f"enhancement {name!r}: invalid parameters {params}: {error}"
            ) from error
    if not ops:
        raise InputError("enhancements must name at least one task")
    return ops
