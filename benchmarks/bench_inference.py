"""Full-volume coarse-to-fine inference on CPU: seconds and peak memory per volume size.

Usage: python benchmarks/bench_inference.py [--model medverse-small] [--sizes 128 192 256]
    [--contexts 1 4 8] [--threads 2] [--refine all adaptive] [--scene random|ball]
    [--compare released|REV] [--repeats N] [--masks uint8|float32]

Each row runs in a fresh process: a cubic target and contexts (binary masks), the default
per-axis level plan, ``sw_batch_size`` 2, ``context_batch`` 2, ``--threads`` threads (default 2),
one row per ``--refine`` mode (default: all). Random weights when the model ships none (time and
memory do not depend on the weight values). ``--scene random``: uniform noise and random masks
(every window is uncertain); ``--scene ball``: a noisy bright ball of radius a quarter of the
volume in each image, its mask as the output, so the coarse prediction is certain far from the
ball and ``--refine adaptive`` has windows to skip. The windows column gives the windows run per
level, and in brackets those that adaptive refinement skipped.

``--compare`` adds, for every volume and context count, a baseline row measured in the same run
on the same inputs, and each row's time and peak-memory ratio to it, with the max |diff| of its
output against the baseline's: ``released`` = this code with ``compat="released"`` and every
window run; ``REV`` (a git revision, e.g. ``HEAD~5`` or a tag) = that revision's
``run_inference`` (``git archive`` into a temporary folder, put first on ``PYTHONPATH``) with its
own defaults. Speed claims are these ratios, not absolute seconds on a shared machine.
``--masks uint8`` (default) passes the context masks as uint8 0/1, as
``ModelInputs.from_arrays`` does; ``--masks float32`` as float32. A ``REV`` baseline always gets
float32 masks (revisions before uint8 masks could not resample them).
``--repeats N`` runs every row N times, the rows of a volume alternating (forwards, then
backwards, ...) so that a load that comes and goes on a shared machine falls on both; the
seconds are the median, the peak memory the largest.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from _measure import in_subprocess, volume_args

CODE = """
import time, torch, json
torch.set_num_threads({threads})
try:
    from medverse.checkpoint.factory import load_model
    from medverse.checkpoint.model_registry import get_spec
except ImportError:  # a revision from before the checkpoint room was split
    from medverse.checkpoint.registry import get_spec, load_model
from medverse.inference.driver import InferenceConfig, run_inference
spec = get_spec({model!r})
net = load_model({model!r}, pretrained=spec.weights is not None)
n, L = {size}, {contexts}
gen = torch.Generator().manual_seed(0)
if {scene!r} == "ball":
    axis = torch.linspace(-1, 1, n)
    radius = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).pow(2).sum(0).sqrt()
    def case(size):
        mask = (radius <= size).float()
        return 0.3 + 0.4 * mask + 0.05 * torch.randn(n, n, n, generator=gen), mask
    pairs = [case(0.45 + 0.1 * i / L) for i in range(L)]
    t = case(0.5)[0][None, None]
    ci = torch.stack([p[0] for p in pairs])[None, :, None]
    co = torch.stack([p[1] for p in pairs])[None, :, None]
else:
    t = torch.rand(1, 1, n, n, n, generator=gen); ci = torch.rand(1, L, 1, n, n, n, generator=gen)
    co = (torch.rand(1, L, 1, n, n, n, generator=gen) > 0.5).float()
if {masks!r} == "uint8" and {baseline!r} != "rev":  # as ModelInputs.from_arrays passes them
    co = co.to(torch.uint8)
if {baseline!r} == "rev":  # another revision: only the options every revision has
    cfg, extra = InferenceConfig(sw_batch_size=2, context_batch=2), dict()
else:
    compat = "released" if {baseline!r} == "released" else "medverse"
    cfg = InferenceConfig(sw_batch_size=2, context_batch=2, refine={refine!r}, compat=compat)
    extra = dict(segmentation=True)
start = time.perf_counter()
res = run_inference(net, t, ci, co, cfg, **extra)
sec = time.perf_counter() - start
torch.save(res.output, {output!r})
import medverse.inference.driver as driver
_result = json.dumps(dict(file=driver.__file__, seconds=sec, levels=res.plan.num_levels, windows=res.num_windows,
                          skipped=getattr(res, "num_skipped", [0] * len(res.num_windows))))
"""


def _options(parser) -> None:  # noqa: ANN001
    parser.add_argument("--refine", nargs="+", choices=["all", "adaptive"], default=["all"])
    parser.add_argument("--scene", choices=["random", "ball"], default="random")
    parser.add_argument(
        "--compare", default=None, metavar="released|REV", help="baseline row (module doc)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per row, alternated")
    parser.add_argument(
        "--masks", choices=["uint8", "float32"], default="uint8", help="context mask dtype"
    )


def _windows(run: list[int], skipped: list[int]) -> str:
    return "+".join(f"{r} ({s})" if s else str(r) for r, s in zip(run, skipped))


def _revision_source(rev: str, folder: Path) -> str:
    """``git archive`` of ``rev``'s ``src`` into ``folder``; returns its ``src`` path."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return str(folder / "src")


def main() -> None:
    args = volume_args(__doc__, sizes=[128, 192, 256], contexts=[1, 4, 8], extra=_options)
    print(f"scene {args.scene}, context masks {args.masks}"
          + (f", baseline {args.compare}" if args.compare else "")
          + f", {args.repeats} run(s) per row\n")  # fmt: skip
    print("| volume | contexts | code | levels | windows run per level (skipped) | seconds | "
          "peak RSS GiB | time / baseline | memory / baseline | max abs diff vs baseline |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = None
        if args.compare not in (None, "released"):
            source = _revision_source(args.compare, folder)
        for size in args.sizes:
            for num in args.contexts:
                rows = [(f"refine {refine}", refine, "") for refine in args.refine]
                if args.compare == "released":
                    rows.insert(0, ("released plan", "all", "released"))
                elif args.compare:
                    rows.insert(0, (f"rev {args.compare}", "all", "rev"))
                runs: dict[str, list[dict]] = {label: [] for label, _, _ in rows}
                for rep in range(args.repeats):
                    for label, refine, baseline in rows if rep % 2 == 0 else rows[::-1]:
                        output = str(folder / f"{label.replace(' ', '_')}.pt")
                        code = CODE.format(model=args.model, size=size, contexts=num,
                                           threads=args.threads, refine=refine, scene=args.scene,
                                           baseline=baseline, output=output,
                                           masks=args.masks)  # fmt: skip
                        res = in_subprocess(code, source=source if baseline == "rev" else None)
                        if baseline == "rev" and not res["file"].startswith(str(source)):
                            raise SystemExit(f"the revision's code was not used: {res['file']}")
                        res["output"] = _load(output)
                        runs[label].append(res)
                base = None
                for label, _, _ in rows:
                    res = dict(runs[label][-1])
                    res["seconds"] = statistics.median(r["seconds"] for r in runs[label])
                    res["peak_rss_gib"] = max(r["peak_rss_gib"] for r in runs[label])
                    ratios = "| | |"
                    if args.compare and base is None:
                        base = res
                    elif base is not None:
                        diff = float(np.abs(res["output"] - base["output"]).max())
                        ratios = (f"| {res['seconds'] / base['seconds']:.2f} | "
                                  f"{res['peak_rss_gib'] / base['peak_rss_gib']:.2f} | {diff:.2e}")  # fmt: skip
                    print(
                        f"| {size}^3 | {num} | {label} | {res['levels']} | "
                        f"{_windows(res['windows'], res['skipped'])} | {res['seconds']:.1f} | "
                        f"{res['peak_rss_gib']:.2f} {ratios} |",
                        flush=True,
                    )


def _load(path: str) -> np.ndarray:
    import torch

    return torch.load(path).numpy()


if __name__ == "__main__":
    main()
