"""Training speed of medverse-small on CPU: optimiser steps per second and peak memory.

Usage: python benchmarks/bench_training.py [--contexts 1 3 8] [--batch-size 2] [--threads 1]

Each row runs in a fresh process (peak RSS is that process's own): random weights, a batch of
fine-level windows (target, ``L`` contexts and the autoregressive pair, 64^3), the segmentation
loss, AdamW and gradient clipping, i.e. :func:`medverse.training.steps.train_step`; one warm-up
step, then ``--steps`` timed steps. Episode sampling is not included (it overlaps with compute
in a real run only with DataLoader workers; see ``seconds`` in a run's ``log.csv``).
"""

from __future__ import annotations

import argparse
import platform

import torch
from _measure import in_subprocess

CODE = """
import time, torch, json
torch.set_num_threads({threads})
torch.manual_seed(0)
from medverse.checkpoint.factory import load_model
from medverse.training.steps import train_step
net = load_model({model!r}, pretrained=False).train()
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
w, B, L = net.config.window, {batch}, {contexts}
batch = dict(
    target=torch.rand(B, 1, w, w, w),
    reference=(torch.rand(B, 1, w, w, w) > 0.5).float(),
    context_in=torch.rand(B, L, 1, w, w, w),
    context_out=(torch.rand(B, L, 1, w, w, w) > 0.5).float(),
    ar_in=torch.rand(B, 1, 1, w, w, w),
    ar_out=torch.rand(B, 1, 1, w, w, w),
    family=["segmentation"] * B,
)
train_step(net, opt, batch)
start = time.perf_counter()
for _ in range({steps}):
    train_step(net, opt, batch)
sec = (time.perf_counter() - start) / {steps}
_result = json.dumps(dict(seconds=sec, window=w, params=sum(p.numel() for p in net.parameters())))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="medverse-small")
    parser.add_argument("--contexts", nargs="+", type=int, default=[1, 3, 8])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, device cpu ({platform.processor() or platform.machine()}), "
        f"{args.threads} thread(s), batch {args.batch_size}, {args.steps} timed steps\n"
    )
    print("| model | params | window | contexts (+AR) | s / step | steps / s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for num in args.contexts:
        res = in_subprocess(
            CODE.format(
                model=args.model,
                contexts=num,
                batch=args.batch_size,
                steps=args.steps,
                threads=args.threads,
            )
        )
        print(
            f"| {args.model} | {res['params'] / 1e6:.2f} M | {res['window']}^3 | {num} | "
            f"{res['seconds']:.1f} | {1 / res['seconds']:.3f} | {res['peak_rss_gib']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
