"""Registration-guided segmentation (ours; ``--align deformable``): fusion, network, stacking.

With every context deformably registered to the target, the in-context task becomes local label
fusion plus boundary refinement:

* **fusion**: the mean of the warped soft context masks (one map per label; ``> 0.5`` is a
  majority vote of soft masks).
* **network**: one full-resolution pass with the aligned contexts and the AR pair (target,
  fusion) (:func:`~medverse.inference.driver.run_inference` with ``prior=``); a network with a
  prior gate starts from the fusion and departs from it where its head reads better.
* **stacking** (in-context, like the calibration of image outputs): each of up to 4 contexts is
  predicted from the others (leave one out) by both, and a combination fitted on those held-out
  predictions against the contexts' own masks is applied to the target. It uses only the
  contexts. Two kinds (:data:`STACKINGS`):

  - ``"local"`` (default): a per-voxel logistic model (:class:`LocalStacking`) of the fusion,
    the network and the target's own intensities (:func:`local_features`), fitted where the
    contexts disagree; it learns from the contexts how this task's boundary sits on the image
    (where a tissue's partial-volume voxels belong, how far the warped masks overshoot).
    ``"local_fusion"`` is the same without the network's two features (to measure the network's
    part).
  - ``"blend"``: ``w * network + (1 - w) * fusion`` with ``w`` in :data:`STACK_WEIGHTS`
    whose thresholded output has the best mean Dice on the held-out contexts (:class:`Stacking`;
    ties go to the smaller weight, fusion).

Example:
    >>> import numpy as np
    >>> masks = np.zeros((3, 1, 8, 8, 8), np.float32); masks[:, :, 2:6, 2:6, 2:6] = 1
    >>> fuse(masks).shape
    (1, 8, 8, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from medverse.errors import InputError
from medverse.inference.driver import InferenceConfig, run_inference
from medverse.intensity import normalize_intensity
from medverse.io.volume import Volume
from medverse.model.network import MedverseNet
from medverse.registration.cache import RegistrationCache
from medverse.registration.driver import register
from medverse.validation import check_option

__all__ = [
    "STACKINGS",
    "STACK_WEIGHTS",
    "GuidedContext",
    "GuidedResult",
    "HeldOut",
    "LocalStacking",
    "Stacking",
    "align_contexts",
    "fit_local_stacking",
    "fit_stacking",
    "fuse",
    "guided_network",
    "guided_segmentation",
    "labels_from_raw",
    "leave_one_out",
    "local_features",
    "uncertain_box",
]

#: Network weights the stacking chooses from (0 = fusion only, 1 = network only).
STACK_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_STACKING_CONTEXTS = 4
#: Stacking kinds: the local logistic model with and without the network's features, the blend.
STACKINGS = ("local", "local_fusion", "blend")


def fuse(soft_masks: np.ndarray) -> np.ndarray:
    """Mean of ``(L, K, X, Y, Z)`` warped soft masks → ``(K, X, Y, Z)`` float32."""
    soft = np.asarray(soft_masks, dtype=np.float32)
    if soft.ndim != 5 or soft.shape[0] < 1:
        raise InputError(f"soft masks must be (L, K, X, Y, Z) with L >= 1, got {soft.shape}")
    return soft.mean(axis=0)


def uncertain_box(
    prior: np.ndarray, window: int, *, margin: int = 8, eps: float = 0.02
) -> tuple[slice, slice, slice] | None:
    """The box around every voxel where the prior is neither ~0 nor ~1, grown by ``margin``
    voxels and to at least one window per axis (clipped to the volume); None when the prior is
    certain everywhere.

    ``prior``: ``(K, X, Y, Z)``.
    """
    uncertain = ((prior > eps) & (prior < 1.0 - eps)).any(axis=0)
    if not uncertain.any():
        return None
    box = []
    for axis, n in enumerate(uncertain.shape):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(uncertain.any(axis=other))
        low, high = int(hit[0]) - margin, int(hit[-1]) + 1 + margin
        if high - low < window:  # grow to one window, centred
            grow = window - (high - low)
            low, high = low - grow // 2, high + grow - grow // 2
        low, high = max(low, 0), min(high, n)
        if high - low < min(window, n):  # clipped at a border: shift back inside
            low, high = (0, min(window, n)) if low == 0 else (max(n - window, 0), n)
        box.append(slice(low, high))
    return box[0], box[1], box[2]


def guided_network(
    net: MedverseNet,
    target: np.ndarray,
    images: np.ndarray,
    soft_masks: np.ndarray,
    config: InferenceConfig | None = None,
    *,
    prior: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    crop: bool = True,
) -> np.ndarray:
    """The network's guided output ``(K, X, Y, Z)``.

    Args:
        net: the network (eval mode).
        target: ``(X, Y, Z)`` normalised to [0, 1].
        images: ``(L, 1, X, Y, Z)`` aligned context images, normalised.
        soft_masks: ``(L, K, X, Y, Z)`` aligned soft context masks.
        config: driver settings.
        prior: ``(K, X, Y, Z)``; default :func:`fuse` of ``soft_masks``.
        device: where to run.
        crop: run only on :func:`uncertain_box` (where the contexts disagree, plus a margin);
            the output is the prior elsewhere (where every context says 0, or every one says 1).
            Small structures then cost one or two windows instead of the whole volume.
    """
    prior = fuse(soft_masks) if prior is None else np.asarray(prior, dtype=np.float32)
    box = (slice(None),) * 3
    if crop:
        found = uncertain_box(prior, net.config.window)
        if found is None:
            return prior.copy()
        box = found
    region = (Ellipsis, *box)
    tensors = [
        torch.from_numpy(np.ascontiguousarray(a[region], dtype=np.float32))[None].to(device)
        for a in (target[None], images, soft_masks, prior)
    ]
    result = run_inference(net, *tensors[:3], config, prior=tensors[3])
    output = prior.copy()
    output[region] = result.output[0].float().cpu().numpy()
    return output


def labels_from_raw(raw: np.ndarray, labels: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """``(K, X, Y, Z)`` raw maps → label map: argmax where the best exceeds ``threshold``."""
    lut = np.asarray(labels, dtype=np.int32)
    return np.where(raw.max(axis=0) > threshold, lut[raw.argmax(axis=0)], 0).astype(np.int32)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


@dataclass
class Stacking:
    """The chosen blend and what each candidate scored on the held-out contexts.

    Attributes:
        weight: the network's weight ``w`` (0 = fusion only).
        scores: candidate weight → mean leave-one-out Dice.
        contexts: how many contexts were held out.
    """

    weight: float
    scores: dict[float, float] = field(default_factory=dict)
    contexts: int = 0

    def apply(
        self, network: np.ndarray, fusion: np.ndarray, image: np.ndarray | None = None
    ) -> np.ndarray:
        """``w * network + (1 - w) * fusion`` (``image`` is not used)."""
        return (self.weight * network + (1.0 - self.weight) * fusion).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "network_weight": self.weight,
            "leave_one_out_dice": {str(w): round(s, 4) for w, s in self.scores.items()},
            "contexts": self.contexts,
        }

    def describe(self) -> str:
        scores = ", ".join(f"w={w:g}: {s:.3f}" for w, s in self.scores.items())
        return (
            f"stacked w={self.weight:g} * network + {1 - self.weight:g} * fusion "
            f"(leave-one-out Dice on {self.contexts} contexts: {scores})"
        )


#: Where the local stacking models a label: fusion strictly between these, grown by
#: :data:`LOCAL_MARGIN` voxels; elsewhere the output is the fusion.
LOCAL_BAND = (0.02, 0.98)
LOCAL_MARGIN = 2
#: At most this many held-out voxels fit one label's model (a fixed-seed subsample).
LOCAL_MAX_SAMPLES = 200_000


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-3, 1.0 - 1e-3)
    return np.log(q / (1.0 - q))


def local_features(
    image: np.ndarray, fusion: np.ndarray, network: np.ndarray | None, where: np.ndarray
) -> np.ndarray:
    """The local stacking's features at the voxels ``where``: ``(N, F)`` float64.

    Fusion and network (each as a logit, and low-passed with sigma 1 voxel), the image, its
    low-pass and gradient magnitude (sigma 1 voxel), and the image times the fusion's logit.
    ``network=None`` leaves the network's two out. Arrays are ``(X, Y, Z)`` for one label.
    """
    fused = _logit(fusion)
    columns = [fused, _logit(ndimage.gaussian_filter(fusion, 1.0))]
    if network is not None:
        columns += [_logit(network), _logit(ndimage.gaussian_filter(network, 1.0))]
    columns += [
        image,
        ndimage.gaussian_filter(image, 1.0),
        ndimage.gaussian_gradient_magnitude(image, 1.0),
        image * fused,
    ]
    return np.stack([np.asarray(c, dtype=np.float64)[where] for c in columns], axis=1)


def _local_region(fusion: np.ndarray) -> np.ndarray:
    low, high = LOCAL_BAND
    band = (fusion > low) & (fusion < high)
    if not band.any():
        return band
    return ndimage.binary_dilation(band, iterations=LOCAL_MARGIN)


@dataclass
class _LabelModel:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float


@dataclass
class LocalStacking:
    """A per-voxel logistic model per label, fitted on the held-out contexts (:func:`fit_local_stacking`).

    Attributes:
        use_network: the network's features are inputs (``"local"``) or not (``"local_fusion"``).
        models: one fitted model per label, or None where the held-out contexts gave nothing to
            fit (the output is the fusion there).
        samples: held-out voxels used per label.
        scores: held-out Dice of ``"fusion"`` and of the fitted model (``"local"``, in sample).
        contexts: how many contexts were held out.
    """

    use_network: bool
    models: list[_LabelModel | None]
    samples: list[int]
    scores: dict[str, float] = field(default_factory=dict)
    contexts: int = 0

    @property
    def name(self) -> str:
        return "local" if self.use_network else "local_fusion"

    def probability(self, network: np.ndarray, fusion: np.ndarray, image: np.ndarray) -> np.ndarray:
        """The model's output ``(K, X, Y, Z)``: its probability in each label's region, the
        fusion elsewhere."""
        out = np.array(fusion, dtype=np.float32, copy=True)
        for k, model in enumerate(self.models):
            if model is None:
                continue
            where = _local_region(fusion[k])
            if not where.any():
                continue
            x = local_features(image, fusion[k], network[k] if self.use_network else None, where)
            z = ((x - model.mean) / model.scale) @ model.coef + model.intercept
            out[k][where] = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
        return out

    def apply(
        self, network: np.ndarray, fusion: np.ndarray, image: np.ndarray | None = None
    ) -> np.ndarray:
        """The stacked output for the target (``image``: the target, normalised)."""
        if image is None:
            raise InputError("the local stacking needs the target image")
        return self.probability(network, fusion, image)

    def to_dict(self) -> dict:
        return {
            "kind": self.name,
            "samples": list(self.samples),
            "leave_one_out_dice": {k: round(v, 4) for k, v in self.scores.items()},
            "contexts": self.contexts,
        }

    def describe(self) -> str:
        inputs = "fusion, network and image" if self.use_network else "fusion and image"
        scores = ", ".join(f"{k} {v:.3f}" for k, v in self.scores.items())
        return (
            f"stacked: local logistic model of {inputs}, fitted on {sum(self.samples)} voxels "
            f"of {self.contexts} held-out contexts (held-out Dice: {scores})"
        )


def fit_local_stacking(
    held_out: Sequence[HeldOut], *, use_network: bool = True, seed: int = 0
) -> LocalStacking:
    """Fit :class:`LocalStacking` on leave-one-out predictions (each with its ``image``).

    Per label, the held-out voxels in the label's region (:data:`LOCAL_BAND`, grown by
    :data:`LOCAL_MARGIN`) fit a logistic regression (scikit-learn, L2, ``C = 1``) of
    :func:`local_features`, standardised, to the contexts' own masks; at most
    :data:`LOCAL_MAX_SAMPLES` voxels, drawn with ``seed``. A label whose region is empty or
    whose held-out voxels are all one class keeps the fusion.

    Raises:
        InputError: nothing held out, or an item without its image.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 (import cost)

    items = [_held_out(item) for item in held_out]
    if not items:
        raise InputError("stacking needs at least one held-out context (2 or more contexts)")
    if any(item.image is None for item in items):
        raise InputError("the local stacking needs each held-out context's image")
    rng = np.random.default_rng(seed)
    models: list[_LabelModel | None] = []
    samples = []
    for k in range(items[0].reference.shape[0]):
        xs, ys = [], []
        for item in items:
            where = _local_region(item.fusion[k])
            if where.any():
                net = item.network[k] if use_network else None
                xs.append(local_features(item.image, item.fusion[k], net, where))
                ys.append(item.reference[k][where] > 0.5)
        x = np.concatenate(xs) if xs else np.empty((0, 0))
        y = np.concatenate(ys) if ys else np.empty(0, bool)
        if len(y) > LOCAL_MAX_SAMPLES:
            keep = np.sort(rng.choice(len(y), LOCAL_MAX_SAMPLES, replace=False))
            x, y = x[keep], y[keep]
        samples.append(len(y))
        if len(y) == 0 or y.all() or not y.any():
            models.append(None)
            continue
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        fit = LogisticRegression(C=1.0, max_iter=500).fit((x - mean) / scale, y)
        models.append(_LabelModel(mean, scale, fit.coef_[0], float(fit.intercept_[0])))
    stacking = LocalStacking(use_network, models, samples, contexts=len(items))
    fusion_dice, local_dice = [], []
    for item in items:
        local = stacking.probability(item.network, item.fusion, item.image)
        for k in range(item.reference.shape[0]):
            reference = item.reference[k] > 0.5
            fusion_dice.append(_dice(item.fusion[k] > 0.5, reference))
            local_dice.append(_dice(local[k] > 0.5, reference))
    stacking.scores = {"fusion": float(np.mean(fusion_dice)), "local": float(np.mean(local_dice))}
    return stacking


@dataclass
class HeldOut:
    """One context predicted from the others (leave one out), all ``(K, X, Y, Z)`` on its grid.

    Attributes:
        network: the network's guided output.
        fusion: the mean of the other contexts' warped soft masks.
        reference: the context's own binary masks.
        image: ``(X, Y, Z)`` the context image, normalised as the network sees it (``None``:
            not kept; the local stacking needs it).
    """

    network: np.ndarray
    fusion: np.ndarray
    reference: np.ndarray
    image: np.ndarray | None = None


def _held_out(item: HeldOut | Sequence[np.ndarray]) -> HeldOut:
    return item if isinstance(item, HeldOut) else HeldOut(*item)


def fit_stacking(
    held_out: Sequence[HeldOut | tuple[np.ndarray, np.ndarray, np.ndarray]],
    weights: Sequence[float] = STACK_WEIGHTS,
) -> Stacking:
    """Choose the network weight from leave-one-out predictions.

    Args:
        held_out: per held-out context a :class:`HeldOut` or ``(network (K, ...), fusion (K, ...),
            reference (K, ...))`` with ``reference`` that context's own binary masks.
        weights: candidate network weights.

    Returns:
        :class:`Stacking` (ties: the smaller weight).

    Raises:
        InputError: nothing held out.
    """
    if not held_out:
        raise InputError("stacking needs at least one held-out context (2 or more contexts)")
    items = [_held_out(item) for item in held_out]
    scores = {}
    for w in weights:
        dice = []
        for item in items:
            blend = w * item.network + (1.0 - w) * item.fusion
            for k in range(item.reference.shape[0]):
                dice.append(_dice(blend[k] > 0.5, item.reference[k] > 0.5))
        scores[float(w)] = float(np.mean(dice))
    best = max(scores.values())
    weight = min(w for w, s in scores.items() if s >= best - 1e-12)
    return Stacking(weight=weight, scores=scores, contexts=len(held_out))


def leave_one_out(
    num_contexts: int,
    predict: Callable[[int], HeldOut | tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    max_contexts: int = MAX_STACKING_CONTEXTS,
    stacking: str = "blend",
) -> Stacking | LocalStacking:
    """Run ``predict(j)`` for the first ``min(num_contexts, max_contexts)`` contexts and fit.

    ``predict(j)`` returns a :class:`HeldOut` (or ``(network, fusion, reference)``) for context
    ``j`` predicted from the others (registered to it); ``stacking`` is one of
    :data:`STACKINGS`.
    """
    check_option(stacking, STACKINGS, "stacking")
    if num_contexts < 2:
        raise InputError(f"stacking needs 2 or more contexts, got {num_contexts}")
    held_out = [_held_out(predict(j)) for j in range(min(num_contexts, max_contexts))]
    if stacking == "blend":
        return fit_stacking(held_out)
    return fit_local_stacking(held_out, use_network=stacking == "local")


# -- registration-guided segmentation of volumes -------------------------------------------------


@dataclass
class GuidedContext:
    """One context of a guided call: its image and its binary masks, one per label.

    Attributes:
        image: the context image (any grid; it is registered to the target).
        masks: ``(K, X, Y, Z)`` 0/1 masks on the image's grid.
    """

    image: Volume
    masks: np.ndarray


@dataclass
class GuidedResult:
    """What a guided call produced, all ``(K, X, Y, Z)`` on the target grid.

    Attributes:
        raw: the chosen output (stacked, or the network's when stacking is off).
        network: the network's guided output.
        fusion: the mean warped soft masks.
        stacking: the fitted stacking, or None.
        notes: one line per context (the registration used), then a "warning:" line where
            the registration is doubtful (:meth:`~medverse.registration.Registration.doubt`).
        image: ``(X, Y, Z)`` the target as the network saw it (normalised).
        held_out: the leave-one-out predictions the stacking was fitted on (empty without
            stacking), to refit another stacking on the same call.
    """

    raw: np.ndarray
    network: np.ndarray
    fusion: np.ndarray
    stacking: Stacking | LocalStacking | None
    notes: list[str]
    image: np.ndarray | None = None
    held_out: list[HeldOut] = field(default_factory=list)


def align_contexts(
    fixed: Volume,
    contexts: Sequence[GuidedContext],
    *,
    engine: str = "ants",
    cache: RegistrationCache | None = None,
    clip_percentiles: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Register every context to ``fixed`` (affine, then deformable) and warp it.

    Returns:
        ``(images (L, 1, X, Y, Z)`` normalised, ``soft masks (L, K, X, Y, Z)`` (each binary
        mask warped linearly), notes (one per context, plus doubts) ``)``.
    """
    num_labels = contexts[0].masks.shape[0]
    images = np.empty((len(contexts), 1, *fixed.shape), np.float32)
    soft = np.empty((len(contexts), num_labels, *fixed.shape), np.float32)
    notes = []
    for i, context in enumerate(contexts):
        reg = register(fixed, context.image, kind="deformable", engine=engine, cache=cache)
        # image and every mask in one warp: the mapping is computed once per context
        warped = reg.warp(np.concatenate([context.image.array[None], context.masks]))
        images[i, 0] = normalize_intensity(
            warped[0], clip_percentiles=clip_percentiles, name=context.image.name
        )
        soft[i] = np.clip(warped[1:], 0.0, 1.0)
        notes.append(f"context '{context.image.name}': registered ({reg.describe()}), masks warped")
        doubt = reg.doubt()
        if doubt:
            notes.append(f"warning: {doubt}")
    return images, soft, notes


def guided_segmentation(
    net: MedverseNet,
    target: Volume,
    contexts: Sequence[GuidedContext],
    *,
    config: InferenceConfig | None = None,
    engine: str = "ants",
    cache: RegistrationCache | None = None,
    stack: bool = True,
    stacking: str = "local",
    clip_percentiles: tuple[float, float] | None = None,
    device: torch.device | str = "cpu",
) -> GuidedResult:
    """Registration-guided segmentation of ``target`` from ``contexts`` (see the module doc).

    Args:
        net: the network (eval mode); with a prior gate it starts from the fusion.
        target: the target image.
        contexts: images and binary masks (one per label, the same labels for every context).
        config: driver settings.
        engine: registration engine (:data:`medverse.registration.ENGINES`).
        cache: on-disk registration cache, or None.
        stack: fit the stacking on leave-one-out predictions of up to 4 contexts (needs 2 or
            more contexts; otherwise the network's output is returned).
        stacking: which (:data:`STACKINGS`; default ``"local"``).
        clip_percentiles: clip images before min-max normalisation (CT).
        device: where the network runs.

    Raises:
        InputError: no contexts, masks of different label counts, or a registration failed
            (the message names the context).
    """
    if not contexts:
        raise InputError("a guided call needs at least one context")
    if len({c.masks.shape[0] for c in contexts}) != 1:
        raise InputError("every context needs the same number of label masks")
    check_option(stacking, STACKINGS, "stacking")
    clip = clip_percentiles

    def predict(
        fixed: Volume, others: Sequence[GuidedContext]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        images, soft, notes = align_contexts(
            fixed, others, engine=engine, cache=cache, clip_percentiles=clip
        )
        fusion = fuse(soft)
        tgt = normalize_intensity(fixed.array, clip_percentiles=clip, name=fixed.name)
        network = guided_network(net, tgt, images, soft, config, prior=fusion, device=device)
        return network, fusion, tgt, notes

    network, fusion, image, notes = predict(target, contexts)
    fitted = None
    kept: list[HeldOut] = []
    if stack and len(contexts) >= 2:

        def held_out(j: int) -> HeldOut:
            others = [c for i, c in enumerate(contexts) if i != j]
            net_j, fusion_j, image_j, _ = predict(contexts[j].image, others)
            kept.append(HeldOut(net_j, fusion_j, contexts[j].masks, image_j))
            return kept[-1]

        fitted = leave_one_out(len(contexts), held_out, stacking=stacking)
    raw = fitted.apply(network, fusion, image) if fitted is not None else network
    return GuidedResult(raw, network, fusion, fitted, notes, image, kept)
