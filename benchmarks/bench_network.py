"""One window of the network on CPU: seconds and peak resident memory vs number of contexts.

Usage: python benchmarks/bench_network.py [--models medverse-base medverse-small] [--contexts 1 4 8]
    [--flops]

Each row runs in a fresh process (peak RSS is that process's own), random weights, with the
autoregressive context, ``context_batch`` contexts per mini-batch, 2 threads.

``--flops`` adds what the window should cost on this machine (issue 14): the forward's FLOP count
(``torch.utils.flop_counter``, multiply-add = 2 FLOPs, counted in a second forward), this
machine's 3-D convolution throughput measured in the same process (a 3x3x3 convolution,
32 -> 32 channels, batch 2, 64^3, best of 3), the lower bound FLOPs / throughput, and the
measured seconds over that bound.
"""

from __future__ import annotations

import argparse
import platform

import torch
from _measure import in_subprocess

CODE = """
import time, torch, json
torch.set_num_threads({threads})
from medverse.checkpoint.factory import load_model
net = load_model({model!r}, pretrained=False)
w = net.config.window
L = {contexts}
t = torch.rand(1, 1, w, w, w); ci = torch.rand(1, L, 1, w, w, w); co = (torch.rand(1, L, 1, w, w, w) > 0.5).float()
ai, ao = torch.rand(1, 1, 1, w, w, w), torch.rand(1, 1, 1, w, w, w)
with torch.inference_mode():
    start = time.perf_counter()
    net(t, ci, co, ai, ao, context_batch={context_batch})
    sec = time.perf_counter() - start
res = dict(seconds=sec, window=w, params=sum(p.numel() for p in net.state_dict().values()))
if {flops}:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(t, ci, co, ai, ao, context_batch={context_batch})
    res["gflop"] = counter.get_total_flops() / 1e9
    conv = torch.nn.Conv3d(32, 32, 3, padding=1)
    x = torch.rand(2, 32, 64, 64, 64)
    conv_gflop = 2 * 27 * 32 * 32 * 2 * 64**3 / 1e9
    with torch.inference_mode():
        conv(x)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    res["conv_gflops"] = conv_gflop / min(times)
_result = json.dumps(res)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["medverse-small", "medverse-base"])
    parser.add_argument("--contexts", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--context-batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--flops", action="store_true", help="FLOPs, conv throughput, bound")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, device cpu ({platform.processor() or platform.machine()}), "
        f"{args.threads} threads, context_batch {args.context_batch}\n"
    )
    extra = " GFLOP | conv GFLOP/s | bound s | seconds / bound |" if args.flops else ""
    print("| model | params | window | contexts (+AR) | seconds | peak RSS GiB |" + extra)
    print("|---|---|---|---|---|---|" + ("---|---|---|---|" if args.flops else ""))
    for model in args.models:
        for num in args.contexts:
            res = in_subprocess(
                CODE.format(
                    model=model,
                    contexts=num,
                    context_batch=args.context_batch,
                    threads=args.threads,
                    flops=args.flops,
                )
            )
            row = (
                f"| {model} | {res['params'] / 1e6:.2f} M | {res['window']}^3 | {num} | "
                f"{res['seconds']:.2f} | {res['peak_rss_gib']:.2f} |"
            )
            if args.flops:
                bound = res["gflop"] / res["conv_gflops"]
                row += (
                    f" {res['gflop']:.1f} | {res['conv_gflops']:.1f} | {bound:.2f} | "
                    f"{res['seconds'] / bound:.2f} |"
                )
            print(row, flush=True)


if __name__ == "__main__":
    main()
