"""In-context calibration of image-task outputs (ours; not in the released method).

The network maps min-max normalised volumes to a normalised output, which
:func:`output_range` puts back on an intensity scale. For enhancement the
output is close to the input, and a small network's output is smoother than both. The contexts
say how to combine the two: each context is predicted from the *other* contexts (leave one
out), and a least-squares fit over those predictions gives

    output ≈ a · prediction + b · input + c

in each subject's *input units* (``(v - min(input)) / (max(input) - min(input))``, so the
coefficients do not depend on a subject's intensity scale). The same coefficients are applied to
the target. Nothing of the target's reference is used: only the context pairs, which the user gave
as the task's definition. The fit has three numbers over every voxel of the contexts, so it does
not over-fit; a small ridge pulls it towards the uncalibrated ``(1, 0, 0)``.

Cost: one extra network run per calibrating context (at most ``max_contexts``), each with the
remaining contexts. Segmentation is never calibrated (its output is thresholded).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = [rng.random((8, 8, 8)).astype(np.float32) for _ in range(3)]
    >>> noisy = [c + 0.1 * rng.standard_normal(c.shape).astype(np.float32) for c in clean]
    >>> images = np.stack([(n - n.min()) / (n.max() - n.min()) for n in noisy])[:, None]
    >>> outputs = np.stack([(c - c.min()) / (c.max() - c.min()) for c in clean])[:, None]
    >>> bounds = [relative_bounds(n, c) for n, c in zip(noisy, clean)]
    >>> blur = lambda target, imgs, outs: np.full_like(target, 0.5)  # a "network" that knows nothing
    >>> cal = fit_calibration(blur, images, outputs, bounds)
    >>> round(cal.weights[1], 1)  # the fit keeps the input
    0.9
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Calibration",
    "fit_calibration",
    "image_output",
    "MAX_CONTEXTS",
    "mean_bounds",
    "output_range",
    "relative_bounds",
]

MAX_CONTEXTS = 4
"""Default number of contexts predicted leave-one-out (each costs one network run)."""

Predict = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``predict(target (1, X, Y, Z), images (L, 1, ...), outputs (L, 1, ...)) -> (1, X, Y, Z)``:
the network's normalised output for a normalised target and normalised context pairs."""


# -- the output-range arithmetic: where an image task's output lies in its input's units --


def output_range(
    target: np.ndarray, context_images: Sequence[np.ndarray], context_outputs: Sequence[np.ndarray]
) -> tuple[float, float]:
    """Intensity range ``(low, high)`` of an image task's output for ``target``, from the contexts.

    The network works on min-max normalised volumes, so its output must be mapped back to
    intensities. Each context says where its output's range lies relative to its input's range
    (``(output.min() - input.min()) / (input.max() - input.min())``, likewise for the maximum);
    the average of those relative bounds is applied to the target's range. For a denoising task
    the output range is narrower than the noisy input's; for skull stripping or bias correction
    it is about the same; a context set whose outputs are twice as bright as their inputs gives
    an output twice as bright as the target.

    Example:
        >>> noisy, clean = np.array([-0.2, 0.5, 1.2]), np.array([0.0, 0.5, 1.0])
        >>> output_range(np.array([-0.4, 2.4]), [noisy], [clean])
        (0.0, 2.0)
    """
    bounds = [relative_bounds(i, o) for i, o in zip(context_images, context_outputs, strict=True)]
    rel_low, rel_high = mean_bounds(bounds)
    low, high = float(np.min(target)), float(np.max(target))
    span = high - low
    return low + rel_low * span, low + rel_high * span


def relative_bounds(image: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """Where ``output``'s minimum and maximum lie in ``image``'s min-max units.

    Example:
        >>> [round(b, 3) for b in relative_bounds(np.array([-0.2, 1.2]), np.array([0.0, 1.0]))]
        [0.143, 0.857]
    """
    low, high = float(np.min(image)), float(np.max(image))
    span = max(high - low, 1e-8)
    return (float(np.min(output)) - low) / span, (float(np.max(output)) - low) / span


def mean_bounds(bounds: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The average of several contexts' :func:`relative_bounds` (what a target's output gets).

    Example:
        >>> mean_bounds([(0.0, 1.0), (0.2, 0.6)])
        (0.1, 0.8)
    """
    arr = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
    return float(arr[:, 0].mean()), float(arr[:, 1].mean())


@dataclass(frozen=True)
class Calibration:
    """``output_u = a * prediction_u + b * input_u + c`` (input units).

    Attributes:
        weights: ``(a, b, c)``.
        contexts: how many contexts were predicted leave-one-out for the fit.
        rmse_before, rmse_after: on those contexts, in input units, of the uncalibrated
            prediction and of the calibrated one.
    """

    weights: tuple[float, float, float]
    contexts: int
    rmse_before: float
    rmse_after: float

    def apply(
        self, raw: np.ndarray, target_normalised: np.ndarray, bounds: tuple[float, float]
    ) -> np.ndarray:
        """The calibrated output in the target's input units.

        Args:
            raw: the network's normalised output for the target.
            target_normalised: the target, min-max normalised (its input units).
            bounds: relative output bounds for the target (mean over the contexts).
        """
        a, b, c = self.weights
        prediction = bounds[0] + raw * (bounds[1] - bounds[0])
        return (a * prediction + b * target_normalised + c).astype(np.float32)

    def to_dict(self) -> dict[str, float | int | list[float]]:
        return {
            "weights": [round(w, 6) for w in self.weights],
            "contexts": self.contexts,
            "rmse_before": round(self.rmse_before, 6),
            "rmse_after": round(self.rmse_after, 6),
        }


def fit_calibration(
    predict: Predict,
    images: np.ndarray,
    outputs: np.ndarray,
    bounds: Sequence[tuple[float, float]],
    *,
    max_contexts: int = MAX_CONTEXTS,
    ridge: float = 1e-3,
) -> Calibration:
    """Fit the calibration on leave-one-out predictions of the contexts.

    Args:
        predict: runs the network (see :data:`Predict`).
        images: ``(L, 1, X, Y, Z)`` normalised context images on the target grid (``L >= 2``).
        outputs: ``(L, 1, X, Y, Z)`` normalised context outputs.
        bounds: per context, :func:`relative_bounds` of its raw image and output.
        max_contexts: predict at most this many contexts (the first ones).
        ridge: weight of the pull towards ``(1, 0, 0)``, relative to the mean squared design.

    Returns:
        The :class:`Calibration`.
    """
    num = images.shape[0]
    if num < 2:
        raise ValueError("calibration needs at least 2 contexts (one predicted from the others)")
    gram = np.zeros((3, 3))
    moment = np.zeros(3)
    truth_sq = 0.0
    count = 0
    used = min(num, max_contexts)
    for i in range(used):
        others = [j for j in range(num) if j != i]
        raw = predict(images[i], images[others], outputs[others])
        lo, hi = mean_bounds([bounds[j] for j in others])
        prediction = (lo + raw.astype(np.float64) * (hi - lo)).ravel()
        own_lo, own_hi = bounds[i]
        truth = (own_lo + outputs[i].astype(np.float64) * (own_hi - own_lo)).ravel()
        image = images[i].astype(np.float64).ravel()
        columns = (prediction, image, np.ones_like(image))
        gram += np.array([[u @ v for v in columns] for u in columns])
        moment += np.array([u @ truth for u in columns])
        truth_sq += float(truth @ truth)
        count += truth.size
    prior = np.array([1.0, 0.0, 0.0])
    lam = ridge * np.trace(gram) / 3.0
    weights = np.linalg.solve(gram + lam * np.eye(3), moment + lam * prior)

    def rmse(w: np.ndarray) -> float:  # ||A w - t||^2 from the normal equations
        return float(np.sqrt(max(w @ gram @ w - 2 * w @ moment + truth_sq, 0.0) / count))

    return Calibration(
        (float(weights[0]), float(weights[1]), float(weights[2])), used, rmse(prior), rmse(weights)
    )


def image_output(
    predict: Predict,
    raw: np.ndarray,
    target: np.ndarray,
    target_normalised: np.ndarray,
    images: np.ndarray,
    outputs: np.ndarray,
    bounds: Sequence[tuple[float, float]],
    *,
    calibrate: bool = True,
) -> tuple[np.ndarray, Calibration | None]:
    """An image task's output in the target's intensities.

    The network's normalised ``raw`` output goes to the contexts' mean relative range of the
    target; with ``calibrate`` and 2+ contexts, through :func:`fit_calibration` first.

    Args:
        predict: runs the network (see :data:`Predict`; used only to calibrate).
        raw: the network's normalised output for the target, ``(X, Y, Z)``.
        target: the target's intensities (its min and max set the scale).
        target_normalised: the target as the network saw it, ``(X, Y, Z)``.
        images, outputs: ``(L, 1, X, Y, Z)`` normalised context pairs on the target grid.
        bounds: per context, :func:`relative_bounds` of its raw pair.
        calibrate: fit and apply the calibration when there are 2+ contexts.

    Returns:
        ``(output float32, the Calibration or None)``.
    """
    target_bounds = mean_bounds(bounds)
    calibration = None
    if calibrate and len(bounds) >= 2:
        calibration = fit_calibration(predict, images, outputs, bounds)
        units = calibration.apply(raw, target_normalised, target_bounds)
    else:
        units = target_bounds[0] + raw * (target_bounds[1] - target_bounds[0])
    low, high = float(np.min(target)), float(np.max(target))
    return (low + units * (high - low)).astype(np.float32), calibration
