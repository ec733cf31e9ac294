"""Does the network add to the fusion? Every fixed blend of a registration-guided call, per structure.

A registration-guided segmentation (``--align deformable``, the default for ``medverse-small``)
produces two maps: the *fusion* (mean of the soft-warped context masks) and the *network*'s
output, and the in-context stacking applies ``w * network + (1 - w) * fusion`` with ``w`` chosen
per call on held-out contexts. This script runs the paper protocol of ``medverse evaluate`` on the
evaluation kit and scores, beside the stacked output, every fixed ``w`` of ``--weights`` on the
same calls (one guided computation per call, shared): if no fixed ``w > 0`` beats ``w = 0``,
the network's departure from the fusion does not help on this data, whatever the stacking picks.

Prints one table (mean Dice per structure and method, then the mean over structures) and writes
the per-case rows to ``--out`` (CSV). Registrations are cached as for ``medverse evaluate``.

Usage: python benchmarks/bench_guided_blend.py [--spacing 2] [--draws 1] [--subjects 8]
    [--tasks brain_mask,grey_matter,...] [--weights 0 0.25 0.5 0.75 1] [--out blend.csv]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from medverse.checkpoint.factory import load_model
from medverse.evaluation.kit_build import build_kit
from medverse.evaluation.kit_config import KitConfig, kit_shape
from medverse.evaluation.model_method import ModelMethod
from medverse.evaluation.protocol import evaluate
from medverse.registration import RegistrationCache, default_cache_dir

STRUCTURES = (
    "brain_mask,grey_matter,white_matter,caudate_aal,putamen_aal,hippocampus_aal,thalamus_aal"
)


def blend(network: ModelMethod, fusion: ModelMethod, weight: float):  # noqa: ANN201
    """A method returning ``weight * network + (1 - weight) * fusion`` of the same guided call."""

    def method(target, images, outputs, *, spacing=None, task_family="segmentation"):  # noqa: ANN001, ANN202
        kwargs = {"spacing": spacing, "task_family": task_family}
        net = network(target, images, outputs, **kwargs)
        return weight * net + (1.0 - weight) * fusion(target, images, outputs, **kwargs)

    method.task_families = ("segmentation",)  # type: ignore[attr-defined]
    return method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="medverse-small")
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--tasks", default=STRUCTURES)
    parser.add_argument("--weights", nargs="+", type=float, default=[0, 0.25, 0.5, 0.75, 1])
    parser.add_argument("--out", default=None, help="per-case CSV")
    args = parser.parse_args()

    stacked = ModelMethod(
        load_model(args.model), align="deformable", cache=RegistrationCache(default_cache_dir())
    )
    stacked.task_families = ("segmentation",)  # type: ignore[misc]
    network, fusion = stacked.variant("network"), stacked.variant("fusion")
    methods = {"stacked": stacked}
    methods.update({f"w={w:g}": blend(network, fusion, w) for w in args.weights})
    kit = build_kit(
        KitConfig(num_subjects=args.subjects, spacing=args.spacing, shape=kit_shape(args.spacing))
    )
    start = time.perf_counter()
    results = evaluate(
        kit,
        methods,
        num_contexts=args.contexts,
        num_draws=args.draws,
        tasks=args.tasks.split(","),
        progress=False,
    )
    rows = pd.DataFrame([record.as_row() for record in results.records])
    if args.out:
        rows.to_csv(args.out, index=False)
    print(
        f"kit {args.spacing:g} mm, {args.subjects} subjects, k={args.contexts} n={args.draws}, "
        f"{args.model}; w = network weight (0: fusion only); "
        f"{time.perf_counter() - start:.0f} s"
    )
    table = rows.pivot_table(index="task", columns="method", values="dice")[list(methods)]
    table.loc["mean"] = table.mean()
    print("| structure | " + " | ".join(table.columns) + " |")
    print("|---" * (len(table.columns) + 1) + "|")
    for name, row in table.iterrows():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + " |")


if __name__ == "__main__":
    main()
