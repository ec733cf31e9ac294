"""Full-volume coarse-to-fine inference on CPU: seconds and peak memory per volume size.

Usage: python benchmarks/bench_inference.py [--model medverse-small] [--sizes 128 192 256]
    [--contexts 1 4 8] [--threads 2]

Each row runs in a fresh process: a random cubic target and contexts (binary masks), the default
per-axis level plan, ``sw_batch_size`` 2, ``context_batch`` 2, ``--threads`` threads (default 2). Random weights when the
model ships none (time and memory do not depend on the weight values).
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
t = torch.rand(1, 1, n, n, n); ci = torch.rand(1, L, 1, n, n, n); co = (torch.rand(1, L, 1, n, n, n) > 0.5).float()
start = time.perf_counter()
res = run_inference(net, t, ci, co, InferenceConfig(sw_batch_size=2, context_batch=2))
sec = time.perf_counter() - start
_result = json.dumps(dict(seconds=sec, levels=res.plan.num_levels, windows=res.num_windows))
"""


def main() -> None:
    args = volume_args(__doc__, sizes=[128, 192, 256], contexts=[1, 4, 8])
    print("| volume | contexts | levels | windows per level | seconds | peak RSS GiB |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        for num in args.contexts:
            res = in_subprocess(
                CODE.format(model=args.model, size=size, contexts=num, threads=args.threads)
            )
            print(
                f"| {size}^3 | {num} | {res['levels']} | {'+'.join(map(str, res['windows']))} | "
                f"{res['seconds']:.1f} | {res['peak_rss_gib']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
