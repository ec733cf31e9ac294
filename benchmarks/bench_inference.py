"""Full-volume coarse-to-fine inference on CPU: seconds and peak memory per volume size.

Usage: python benchmarks/bench_inference.py [--model medverse-small] [--sizes 128 192 256]
    [--contexts 1 4 8] [--threads 2] [--refine all adaptive] [--scene random|ball]

Each row runs in a fresh process: a cubic target and contexts (binary masks), the default
per-axis level plan, ``sw_batch_size`` 2, ``context_batch`` 2, ``--threads`` threads (default 2),
one row per ``--refine`` mode (default: all). Random weights when the model ships none (time and
memory do not depend on the weight values). ``--scene random``: uniform noise and random masks
(every window is uncertain); ``--scene ball``: a noisy bright ball of radius a quarter of the
volume in each image, its mask as the output, so the coarse prediction is certain far from the
ball and ``--refine adaptive`` has windows to skip. The windows column gives the windows run per
level, and in brackets those that adaptive refinement skipped.
"""

from __future__ import annotations

from _measure import in_subprocess, volume_args

CODE = """
import time, torch, json
torch.set_num_threads({threads})
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
cfg = InferenceConfig(sw_batch_size=2, context_batch=2, refine={refine!r})
start = time.perf_counter()
res = run_inference(net, t, ci, co, cfg, segmentation=True)
sec = time.perf_counter() - start
_result = json.dumps(dict(seconds=sec, levels=res.plan.num_levels, windows=res.num_windows,
                          skipped=res.num_skipped))
"""


def _options(parser) -> None:  # noqa: ANN001
    parser.add_argument("--refine", nargs="+", choices=["all", "adaptive"], default=["all"])
    parser.add_argument("--scene", choices=["random", "ball"], default="random")


def _windows(run: list[int], skipped: list[int]) -> str:
    return "+".join(f"{r} ({s})" if s else str(r) for r, s in zip(run, skipped))


def main() -> None:
    args = volume_args(__doc__, sizes=[128, 192, 256], contexts=[1, 4, 8], extra=_options)
    print(f"scene {args.scene}\n")
    print("| volume | contexts | refine | levels | windows run per level (skipped) | seconds | "
          "peak RSS GiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for num in args.contexts:
            for refine in args.refine:
                res = in_subprocess(
                    CODE.format(model=args.model, size=size, contexts=num, threads=args.threads,
                                refine=refine, scene=args.scene)
                )  # fmt: skip
                print(
                    f"| {size}^3 | {num} | {refine} | {res['levels']} | "
                    f"{_windows(res['windows'], res['skipped'])} | {res['seconds']:.1f} | "
                    f"{res['peak_rss_gib']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
