"""Which context alignment works best on real anatomy? (chooses `--align`'s default)

Kit subjects (MNI152 2009 template, random smooth deformations) are re-acquired as if on other
scanners: each context subject gets its own field of view (random crop of 75-95 % per axis), its
own voxel size (1.6-2.6 mm, anisotropic) and a head position that differs from the target's by a
random shift (up to ±15 mm) and rotation (up to ±10°) written into its affine as the scanner
would. Each method then brings the context mask onto the target grid (2 mm kit, 96x112x96); we
report the Dice of the aligned mask with the target's own mask (an upper bound for what in-context
learning and multi-atlas fusion can use) and the seconds per context (registration, if any, plus
warping the image and one mask). Methods: the modes physical and fov, then every registration
engine (ants, sitk) and kind (affine, deformable) of medverse.registration. No network is involved.

Then one 1 mm timing: the ANTs deformable path on a 181x217x181 kit subject (the MNI grid).

Then (``--simulated N``) the same Dice for the *simulated* registered contexts the guided training
uses (``EpisodeSampler(aligned_prob=1)`` on the sources of configs/train_small_guided.yaml: the
target under a residual deformation of ``residual_voxels``), so the simulation can be compared
with what real registration leaves.

Usage: python benchmarks/bench_alignment.py [--subjects 5] [--no-1mm] [--simulated 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from scipy import ndimage

from medverse.evaluation.kit_build import build_kit
from medverse.evaluation.kit_config import KitConfig
from medverse.io.alignment import align_pair
from medverse.io.context import ContextPair
from medverse.io.volume import Volume
from medverse.registration import RegistrationCache, register

TASKS = ("brain_mask", "white_matter", "hippocampus_aal", "thalamus_aal")


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def reacquire(image, masks, affine, rng):  # noqa: ANN001, ANN201
    """Crop, resample to another voxel size, and move the head in scanner coordinates."""
    shape = np.array(image.shape)
    keep = (shape * rng.uniform(0.75, 0.95, 3)).astype(int)
    start = ((shape - keep) * rng.uniform(0, 1, 3)).astype(int)
    sl = tuple(slice(s, s + k) for s, k in zip(start, keep))
    spacing_old = np.linalg.norm(affine[:3, :3], axis=0)
    spacing_new = rng.uniform(1.6, 2.6, 3)
    zoom = spacing_old / spacing_new
    img = ndimage.zoom(image[sl], zoom, order=1)
    out_masks = {k: ndimage.zoom(m[sl].astype(np.float32), zoom, order=0) for k, m in masks.items()}
    crop = affine.copy()
    crop[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    crop[:3, :3] = affine[:3, :3] / spacing_old * spacing_new
    motion = np.eye(4)
    motion[:3, :3] = _rotation(np.deg2rad(rng.uniform(-10, 10, 3)))
    motion[:3, 3] = rng.uniform(-15, 15, 3)
    return img, out_masks, motion @ crop


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return 2 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


# (label, align mode, engine)
METHODS = (
    ("physical", "physical", None),
    ("fov", "fov", None),
    ("sitk affine (--align affine)", "affine", "sitk"),
    ("ants affine", "affine", "ants"),
    ("sitk deformable (affine + demons)", "deformable", "sitk"),
    ("ants deformable (affine + SyN)", "deformable", "ants"),
)


def kit_table(subjects: int) -> None:
    kit = build_kit(KitConfig(num_subjects=subjects, tasks=TASKS))
    rng = np.random.default_rng(0)
    ids = kit.subject_ids
    scores = {m[0]: {t: [] for t in TASKS} for m in METHODS}
    seconds = {m[0]: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as folder:
        # one cache per method: later tasks of a pair reuse the first task's registration, and a
        # deformable method does not inherit the affine method's result (its time includes both)
        caches = {
            m[0]: RegistrationCache(os.path.join(folder, str(n))) for n, m in enumerate(METHODS)
        }
        for i, target_id in enumerate(ids):
            context_id = ids[(i + 1) % len(ids)]
            tgt_case = {t: kit.load_case(target_id, t) for t in TASKS}
            ctx_case = {t: kit.load_case(context_id, t) for t in TASKS}
            target = Volume(tgt_case[TASKS[0]].image, kit.affine, name=target_id)
            img, masks, affine = reacquire(
                ctx_case[TASKS[0]].image, {t: ctx_case[t].output for t in TASKS}, kit.affine, rng
            )
            for label, mode, engine in METHODS:
                extra = {"engine": engine, "cache": caches[label]} if engine else {}
                for index, t in enumerate(TASKS):
                    pair = ContextPair(
                        Volume(img, affine, name=context_id),
                        Volume(masks[t], affine, name=f"{context_id}_{t}", kind="label"),
                    )
                    start = time.perf_counter()
                    _, aligned, _ = align_pair(pair, target, mode=mode, **extra)
                    if index == 0:  # the first task pays for the registration
                        seconds[label].append(time.perf_counter() - start)
                    scores[label][t].append(dice(aligned, tgt_case[t].output))
    print(
        f"{len(ids)} target/context pairs, kit grid {kit.config.shape} at {kit.config.spacing} mm, "
        f"{os.cpu_count()} CPU cores\n"
    )
    print("| method | " + " | ".join(f"Dice {t}" for t in TASKS) + " | mean | s per context |")
    print("|---|" + "---|" * (len(TASKS) + 2))
    for label, per_task in scores.items():
        means = [np.mean(v) for v in per_task.values()]
        print(
            f"| {label} | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {np.mean(means):.3f} | {np.mean(seconds[label]):.2f} |"
        )
    print("\nAAL structures (hippocampus, thalamus) only approximately fit the 2009 template.")


def one_mm_timing() -> None:
    """ANTs deformable on 1 mm 181x217x181 subjects (same grid): seconds and Dice."""
    start = time.perf_counter()
    kit = build_kit(
        KitConfig(
            num_subjects=2, spacing=1.0, shape=(181, 217, 181), tasks=("brain_mask", "white_matter")
        )
    )
    built = time.perf_counter() - start
    target_id, context_id = kit.subject_ids
    rows = []
    for kind in ("affine", "deformable"):
        target_case = kit.load_case(target_id, "white_matter")
        context_case = kit.load_case(context_id, "white_matter")
        target = Volume(target_case.image, kit.affine, name=target_id)
        context = Volume(context_case.image, kit.affine, name=context_id)
        start = time.perf_counter()
        reg = register(target, context, kind=kind, engine="ants")
        registered = time.perf_counter() - start
        start = time.perf_counter()
        reg.warp(context.array)
        warped = reg.warp(context_case.output, interpolation="nearest")
        warp_seconds = time.perf_counter() - start
        rows.append((kind, registered, warp_seconds, dice(warped, target_case.output)))
    print(f"\n1 mm, grid (181, 217, 181), one context (kit built in {built:.0f} s)\n")
    print("| ants kind | register s | warp image + mask s | total s | Dice white_matter |")
    print("|---|---|---|---|---|")
    for kind, registered, warp_seconds, score in rows:
        print(
            f"| {kind} | {registered:.1f} | {warp_seconds:.1f} | "
            f"{registered + warp_seconds:.1f} | {score:.3f} |"
        )


def simulated_table(episodes: int, config_path: str) -> None:
    """Dice of each simulated registered context's mask with its target's, by structure size."""
    from medverse.data.episodes import EpisodeSampler
    from medverse.training.config import TrainConfig
    from medverse.training.sources import build_datasets

    with open(config_path, encoding="utf-8") as handle:
        config = TrainConfig.from_yaml(handle.read())
    train, _ = build_datasets([s for s in config.data if s.kind == "mni"])
    sampler = EpisodeSampler(
        train,
        num_contexts=4,
        window=None,
        task_weights={"segmentation": 1.0},
        max_classes=config.max_classes,
        aligned_prob=1.0,
        residual_voxels=config.residual_voxels,
        seed=2024,
    )
    groups: dict[str, list[float]] = {"< 2k voxels": [], "2k-20k voxels": [], ">= 20k voxels": []}
    residuals = []
    for index in range(episodes):
        episode = sampler.sample(index)
        target = np.asarray(episode.target_reference[0])
        size = int((target > 0.5).sum())
        group = list(groups)[0 if size < 2000 else 1 if size < 20000 else 2]
        for context in np.asarray(episode.context_out[:, 0]):
            groups[group].append(dice(context, target))
        residuals += [r["max_displacement"] for r in episode.params.get("residuals", [])]
    print(
        f"\nSimulated registered contexts ({config_path}, residual_voxels "
        f"{config.residual_voxels}, {episodes} MNI episodes, mean largest residual "
        f"{np.mean(residuals):.2f} voxels)\n"
    )
    print("| target structure size | contexts | mean Dice context mask vs target |")
    print("|---|---|---|")
    for name, values in groups.items():
        if values:
            print(f"| {name} | {len(values)} | {np.mean(values):.3f} |")
    everything = [v for values in groups.values() for v in values]
    print(f"| all | {len(everything)} | {np.mean(everything):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=5)
    parser.add_argument("--no-1mm", dest="one_mm", action="store_false")
    parser.add_argument("--no-kit", dest="kit", action="store_false")
    parser.add_argument("--simulated", type=int, default=0, metavar="EPISODES")
    parser.add_argument("--config", default="configs/train_small_guided.yaml")
    args = parser.parse_args()
    if args.kit:
        kit_table(args.subjects)
    if args.one_mm:
        one_mm_timing()
    if args.simulated:
        simulated_table(args.simulated, args.config)


if __name__ == "__main__":
    main()
