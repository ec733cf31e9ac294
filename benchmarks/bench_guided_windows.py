"""Does the guided network beat the fusion on subjects it never saw? Window Dice, per weights.

Builds registration-guided training windows (the way ``guided_contexts: registered`` training
builds them: other subjects registered onto the target with ANTs affine + SyN, the fused
soft-warped masks as the prior) from *held-out* MNI training-construction subjects (seed 67,
never in a training config), with two label conventions (``tissue_threshold`` 0 and 0.5), and
scores each model's guided output and the fused prior against the target's mask: mean Dice over
the same windows. It is the quick check to run on a guided training run's checkpoints before
the evaluation kit; a model that does not beat the fusion here will not on the kit.

Prints one table (model, windows, network Dice, fusion Dice, difference). Registrations are
cached in the per-user registration cache (the first run registers 30 pairs, ~4 min).

Usage: python benchmarks/bench_guided_windows.py --config configs/train_small_conventions.yaml \
    [--windows 48] [--subjects 6] MODEL_OR_CHECKPOINT ...   ("init": the config's init weights)
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from medverse.checkpoint.io import load_network, read_weights
from medverse.evaluation.metrics import dice
from medverse.training.config import DataSource, TrainConfig
from medverse.training.model_setup import build_model
from medverse.training.sources import build_datasets
from medverse.training.steps import StepBuilder

HELD_OUT_SEED = 67  # no training config uses it


def held_out_batches(config: TrainConfig, windows: int, subjects: int) -> list[dict]:
    common = dict(
        kind="mni",
        num_subjects=subjects,
        num_val_cases=0,
        shape=(96, 112, 96),
        voxel_mm=(1.8, 2.6),
        deformation=0.08,
        seed=HELD_OUT_SEED,
    )
    data = [
        DataSource(name="held_out_argmax", **common),
        DataSource(name="held_out_half", tissue_threshold=0.5, **common),
    ]
    config = dataclasses.replace(config, data=data, seed=991, batch_size=2, guided_prob=1.0)
    datasets, _ = build_datasets(data)
    builder = StepBuilder(datasets, config)
    return [builder.build(step) for step in range((windows + 1) // 2)]


def score(model: torch.nn.Module, batches: list[dict]) -> tuple[float, float, int]:
    model.eval()
    net, fused = [], []
    with torch.no_grad():
        for batch in batches:
            out = model(
                batch["target"],
                batch["context_in"],
                batch["context_out"],
                batch["ar_in"],
                batch["ar_out"],
                guided=True,
            )
            for j in range(out.shape[0]):
                # every class of the window pooled (C stacked along the first axis)
                reference = _stack(batch["reference"][j])
                net.append(dice(_stack(out[j]), reference))
                fused.append(dice(_stack(batch["ar_out"][j]), reference))
    defined = ~np.isnan(net)  # NaN: a window without foreground
    return (
        float(np.mean(np.asarray(net)[defined])),
        float(np.mean(np.asarray(fused)[defined])),
        int(defined.sum()),
    )


def _stack(volume: torch.Tensor) -> torch.Tensor:
    return volume.reshape(-1, *volume.shape[-2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="weights, a training checkpoint, or 'init'")
    parser.add_argument("--config", required=True, help="the guided training config")
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig.from_file(args.config)
    batches = held_out_batches(config, args.windows, args.subjects)
    print("| model | windows | network Dice | fusion Dice | network - fusion | s |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        start = time.perf_counter()
        model = build_model(config) if name == "init" else load_network(read_weights(name))
        network, fusion, count = score(model, batches)
        seconds = time.perf_counter() - start
        print(
            f"| {name} | {count} | {network:.4f} | {fusion:.4f} | {network - fusion:+.4f} "
            f"| {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
