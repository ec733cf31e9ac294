"""One window of the network on CPU: seconds and peak resident memory vs number of contexts.

Usage: python benchmarks/bench_network.py [--models medverse-base medverse-small] [--contexts 1 4 8]

Each row runs in a fresh process (peak RSS is that process's own), random weights, with the
autoregressive context, ``context_batch`` contexts per mini-batch, 2 threads.
"""

from __future__ import annotations

import argparse
import platform

import torch
from _measure import in_subprocess

CODE = """
import time, torch, json
torch.set_num_threads({threads})
from medverse.checkpoint.registry import load_model
net = load_model({model!r}, pretrained=False)
w = net.config.window
L = {contexts}
t = torch.rand(1, 1, w, w, w); ci = torch.rand(1, L, 1, w, w, w); co = (torch.rand(1, L, 1, w, w, w) > 0.5).float()
ai, ao = torch.rand(1, 1, 1, w, w, w), torch.rand(1, 1, 1, w, w, w)
with torch.inference_mode():
    start = time.perf_counter()
    net(t, ci, co, ai, ao, context_batch={context_batch})
    sec = time.perf_counter() - start
_result = json.dumps(dict(seconds=sec, window=w, params=sum(p.numel() for p in net.state_dict().values())))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["medverse-small", "medverse-base"])
    parser.add_argument("--contexts", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--context-batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, device cpu ({platform.processor() or platform.machine()}), "
        f"{args.threads} threads, context_batch {args.context_batch}\n"
    )
    print("| model | params | window | contexts (+AR) | seconds | peak RSS GiB |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        for num in args.contexts:
            res = in_subprocess(
                CODE.format(
                    model=model,
                    contexts=num,
                    context_batch=args.context_batch,
                    threads=args.threads,
                )
            )
            print(
                f"| {model} | {res['params'] / 1e6:.2f} M | {res['window']}^3 | {num} | "
                f"{res['seconds']:.1f} | {res['peak_rss_gib']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
