"""Cost of the in-context calibration of image outputs: seconds and peak memory, on and off.

Usage: python benchmarks/bench_calibration.py [--model medverse-small] [--sizes 64 128]
    [--contexts 2 4 8] [--threads 2]

Each row runs in a fresh process: ``Predictor.predict`` on a random image task (target and
contexts on one grid, ``align="physical"``) with ``calibrate`` off, then on. Calibration predicts
up to 4 contexts from the others, so it costs up to 4 extra coarse-to-fine runs, each with one
context fewer than the target's run.
"""

from __future__ import annotations

from _measure import in_subprocess, volume_args

CODE = """
import time, json, numpy as np, torch
torch.set_num_threads({threads})
from medverse.checkpoint.factory import load_model
from medverse.checkpoint.model_registry import get_spec
from medverse.inference.predictor import Predictor
from medverse.io.context import Context, ContextPair
from medverse.io.volume import Volume
spec = get_spec({model!r})
net = load_model({model!r}, pretrained=spec.weights is not None)
rng = np.random.default_rng(0)
shape = ({size},) * 3
vol = lambda: Volume(rng.random(shape, dtype=np.float32), np.eye(4))
target = vol()
context = Context([ContextPair(vol(), vol(), output_kind="image") for _ in range({contexts})], "image")
predictor = Predictor(net)
start = time.perf_counter()
predictor.predict(target, context, align="physical", calibrate={calibrate})
_result = json.dumps(dict(seconds=time.perf_counter() - start))
"""


def main() -> None:
    args = volume_args(__doc__, sizes=[64, 128], contexts=[2, 4, 8])
    print("| volume | contexts | off: s | on: s | ratio | off: peak RSS GiB | on: peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for num in args.contexts:
            off, on = (
                in_subprocess(
                    CODE.format(
                        model=args.model,
                        size=size,
                        contexts=num,
                        threads=args.threads,
                        calibrate=flag,
                    )
                )
                for flag in (False, True)
            )
            print(
                f"| {size}^3 | {num} | {off['seconds']:.1f} | {on['seconds']:.1f} | "
                f"{on['seconds'] / off['seconds']:.2f} | {off['peak_rss_gib']:.2f} | "
                f"{on['peak_rss_gib']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
