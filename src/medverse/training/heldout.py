"""Held-out episodes: a model against the model-free baselines on subjects it never saw.

``python -m medverse.training.heldout --model medverse-small --seed 9000 [--episodes 32]``
``python -m medverse.training.heldout --source mni --seed 9000 [--voxel-mm 3.5 4.5]``

``--source synthetic`` (default): anatomies, intensity tables and subjects are drawn from
``--seed``. ``--source mni``: training-construction subjects of the packaged template
(:func:`medverse.data.mni.make_mni_cases`, never the evaluation kit's) from ``--seed``. Pick a
seed no training config used (the packaged configs use 0-3, 100-102 and 200). Episodes come from
the validation sampler (no augmentation; ``--enhancements`` restricts the enhancement tasks,
``--config`` takes them and their parameter ranges from a training config), and
every target is predicted with the full coarse-to-fine driver. Printed per family: the model's
mean Dice or PSNR, and the baseline's (segmentation: the context-mask mean; image tasks: the
target input itself, clamped to [0, 1]).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["heldout_scores", "main"]


def heldout_scores(net: torch.nn.Module, episodes: Sequence) -> dict[str, dict[str, float]]:
    """Family -> ``{"n", "model", "baseline"}`` (Dice for segmentation, PSNR dB otherwise).

    The model's output comes from the array pipeline
    (:func:`~medverse.inference.pipeline.predict_arrays`, default driver settings): the label
    map of a segmentation, the output clamped to [0, 1] otherwise; scores from
    :mod:`medverse.evaluation.metrics`.
    """
    from medverse.evaluation.metrics import dice, psnr
    from medverse.inference.driver import InferenceConfig
    from medverse.inference.pipeline import ModelInputs, predict_arrays

    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    net.eval()
    for episode in episodes:
        segmentation = episode.family == "segmentation"
        inputs = ModelInputs.from_normalised(
            episode.target, episode.context_in, episode.context_out, segmentation=segmentation
        )
        output = predict_arrays(net, inputs, InferenceConfig()).array
        reference = np.asarray(episode.target_reference, dtype=np.float32)[0]
        if segmentation:
            model = dice(output, reference)
            baseline = dice(np.asarray(episode.context_out)[:, 0].mean(axis=0), reference)
        else:
            model = psnr(output, reference, 1.0)
            baseline = psnr(np.asarray(episode.target)[0], reference, 1.0)
        if not (math.isnan(model) or math.isnan(baseline)):
            scores[episode.family]["model"].append(model)
            scores[episode.family]["baseline"].append(baseline)
    return {
        family: {
            "n": float(len(values["model"])),
            "model": float(np.mean(values["model"])),
            "baseline": float(np.mean(values["baseline"])),
        }
        for family, values in sorted(scores.items())
    }


def _enhancements(config_path: str | None, names: Sequence[str] | None):
    """Enhancement spec for the episodes: a config's (ranges included), restricted to names."""
    from medverse.errors import InputError
    from medverse.training.config import TrainConfig

    spec = TrainConfig.from_file(config_path).enhancements if config_path else None
    if not names:
        return spec
    if isinstance(spec, dict):
        missing = sorted(set(names) - set(spec))
        if missing:
            raise InputError(f"{config_path}: enhancements has no {missing}; it has {sorted(spec)}")
        return {name: spec[name] for name in names}
    return tuple(names)


def main(argv: Sequence[str] | None = None) -> None:
    from medverse.checkpoint.factory import load_model
    from medverse.training.config import DataSource, TrainConfig
    from medverse.training.sources import build_datasets
    from medverse.training.steps import validation_episodes

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="medverse-small")
    parser.add_argument("--source", choices=("synthetic", "mni"), default="synthetic")
    parser.add_argument("--voxel-mm", type=float, nargs=2, default=[3.5, 4.5])
    parser.add_argument("--enhancements", nargs="+", default=None)
    parser.add_argument(
        "--families", nargs="+", default=None, help="only these task families (equal weights)"
    )
    parser.add_argument("--config", default=None, help="take enhancements from this train config")
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.source == "mni":  # the whole head; at 3.5 mm one 64^3 window
        shape = tuple(args.shape or (55, 64, 55))
        options = dict(voxel_mm=tuple(args.voxel_mm), deformation=0.08)
    else:
        shape = tuple(args.shape or (64, 64, 64))
        options = dict(num_templates=3, deformation=0.15)
    source = DataSource(
        kind=args.source,
        num_subjects=2,
        num_val_cases=args.contexts + 1,
        shape=shape,
        seed=args.seed,
        **options,
    )
    _, held_out = build_datasets([source])
    config = TrainConfig(
        data=(source,),
        num_val_episodes=args.episodes,
        val_num_contexts=args.contexts,
        max_classes=3,
        **({"task_weights": dict.fromkeys(args.families, 1.0)} if args.families else {}),
        enhancements=_enhancements(args.config, args.enhancements),
        seed=args.seed,
    )
    episodes = validation_episodes(held_out, config)
    net = load_model(args.model)
    scores = heldout_scores(net, episodes)
    print(
        f"model {args.model} ({net.source}); {args.source} seed {args.seed}, shape {list(shape)}, "
        f"{args.contexts} contexts, {len(episodes)} episodes\n"
    )
    print("| family | episodes | metric | model | baseline |")
    print("|---|---|---|---|---|")
    for family, row in scores.items():
        metric, baseline = (
            ("Dice", "context-mask mean") if family == "segmentation" else ("PSNR dB", "input")
        )
        print(
            f"| {family} | {int(row['n'])} | {metric} | {row['model']:.3f} | "
            f"{row['baseline']:.3f} ({baseline}) |"
        )


if __name__ == "__main__":
    main()
