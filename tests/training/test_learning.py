"""A tiny Medverse learns in-context segmentation on synthetic data in a few CPU minutes.

Setting (chosen to fit ~3 minutes on 2 shared cores, and documented rather than tuned away):
channels (4, 8, 16), 16^3 windows, 32^3 synthetic subjects (two levels: a level-1 pass at 16^3
and fine windows with an AR pair), one anatomy template with a body and STRUCTURES foreground
labels, each subject warped by its own elastic field (``deformation``) so subjects are not
voxel-aligned, segmentation episodes of one label with 2-4 contexts. Held-out subjects are scored
with the full coarse-to-fine inference driver; the baseline thresholds the mean of the context
masks at 0.5 (what a model that ignores the target image could do at best by averaging).

Measured on the development machine (2 shared cores, 1 thread, ~0.25 s per step):
MEASURED documents it; the assertions leave room for machine-to-machine float differences.
"""

from __future__ import annotations

import time

import pytest

from medverse.training.loop import run

STRUCTURES = 1
STEPS = 500
MEASURED = {"step0_dice": 0.0, "final_dice": None, "context_mean_dice": None, "seconds": None}


@pytest.mark.slow
def test_tiny_model_beats_the_context_mean_baseline(make_config) -> None:
    config = make_config(
        "learn",
        data=[
            {
                "kind": "synthetic",
                "shape": [32, 32, 32],
                "num_classes": STRUCTURES + 1,
                "num_subjects": 16,
                "num_val_cases": 6,
                "deformation": 0.25,
                "seed": 0,
            }
        ],
        task_weights={"segmentation": 1.0},
        max_classes=1,
        num_contexts=[2, 4],
        augment=False,
        ar_source="mixed",
        steps=STEPS,
        lr=2e-3,
        warmup_steps=20,
        checkpoint_every=STEPS,
        val_every=STEPS,
        num_val_episodes=16,
        val_num_contexts=3,
        seed=0,
    )
    start = time.perf_counter()
    result = run(config)
    seconds = time.perf_counter() - start
    (first_step, first), (last_step, last) = result.validation[0], result.validation[-1]
    import csv

    with open(result.out_dir / "log.csv", newline="") as fh:
        baseline = float(next(csv.DictReader(fh))["val_dice_baseline"])
    print(
        f"\nheld-out Dice: step {first_step} {first['dice']:.3f}, step {last_step} {last['dice']:.3f}; "
        f"context-mean baseline {baseline:.3f}; {seconds:.0f} s"
    )
    assert first_step == 0 and last_step == STEPS
    assert last["dice"] > first["dice"] + 0.3  # far above step 0
    assert last["dice"] > baseline  # uses the target image, not only the contexts
