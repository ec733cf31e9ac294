"""Which context alignment works best on real anatomy? (chooses `--align`'s default)

Kit subjects (MNI152 2009 template, random smooth deformations) are re-acquired as if on other
scanners: each context subject gets its own field of view (random crop of 75-95 % per axis), its
own voxel size (1.6-2.6 mm, anisotropic) and a head position that differs from the target's by a
random shift (up to ±15 mm) and rotation (up to ±10°) written into its affine as the scanner
would. Each mode then brings the context mask onto the target grid; we report the Dice of the
aligned mask with the target's own mask (an upper bound for what in-context learning can use) and
the seconds per context. No network is involved.

Usage: python benchmarks/bench_alignment.py [--subjects 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from medverse.evaluation.kit import KitConfig, build_kit
from medverse.io.context import ContextPair, align_pair
from medverse.io.volume import Volume

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=5)
    args = parser.parse_args()
    kit = build_kit(KitConfig(num_subjects=args.subjects, tasks=TASKS))
    rng = np.random.default_rng(0)
    ids = kit.subject_ids
    scores = {m: {t: [] for t in TASKS} for m in ("physical", "fov", "affine")}
    seconds = {m: [] for m in scores}
    for i, target_id in enumerate(ids):
        context_id = ids[(i + 1) % len(ids)]
        tgt_case = {t: kit.load_case(target_id, t) for t in TASKS}
        ctx_case = {t: kit.load_case(context_id, t) for t in TASKS}
        target = Volume(tgt_case[TASKS[0]].image, kit.affine, name=target_id)
        img, masks, affine = reacquire(
            ctx_case[TASKS[0]].image, {t: ctx_case[t].output for t in TASKS}, kit.affine, rng
        )
        for mode in scores:
            for t in TASKS:
                pair = ContextPair(
                    Volume(img, affine, name=context_id),
                    Volume(masks[t], affine, name=f"{context_id}_{t}", kind="label"),
                )
                start = time.perf_counter()
                _, aligned, _ = align_pair(pair, target, mode=mode)
                seconds[mode].append(time.perf_counter() - start)
                scores[mode][t].append(dice(aligned, tgt_case[t].output))
    print(
        f"{len(ids)} target/context pairs, kit grid {kit.config.shape} at {kit.config.spacing} mm\n"
    )
    print("| mode | " + " | ".join(f"Dice {t}" for t in TASKS) + " | mean | s per context |")
    print("|---|" + "---|" * (len(TASKS) + 2))
    for mode, per_task in scores.items():
        means = [np.mean(v) for v in per_task.values()]
        print(
            f"| {mode} | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {np.mean(means):.3f} | {np.mean(seconds[mode]):.2f} |"
        )
    print("\nAAL structures (hippocampus, thalamus) only approximately fit the 2009 template.")


if __name__ == "__main__":
    main()
