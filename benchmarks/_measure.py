"""Run one measurement in a fresh process so its peak resident memory is its own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable


def in_subprocess(code: str, *, source: str | None = None) -> dict:
    """Run ``code`` (which must print one JSON line last) in a new Python; add its peak RSS.

    ``source``: a ``src`` folder put first on ``PYTHONPATH`` (another revision of medverse)."""
    wrapper = (
        "import resource, json, sys\n" + code + "\nres = json.loads(_result)\n"
        "res['peak_rss_gib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2\n"
        "print(json.dumps(res))\n"
    )
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", wrapper], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def volume_args(
    doc: str,
    *,
    sizes: list[int],
    contexts: list[int],
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """``--model --sizes --contexts --threads`` of the whole-volume benchmarks (plus what
    ``extra`` adds to the parser); prints the header."""
    import torch

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--model", default="medverse-small")
    parser.add_argument("--sizes", nargs="+", type=int, default=sizes)
    parser.add_argument("--contexts", nargs="+", type=int, default=contexts)
    parser.add_argument("--threads", type=int, default=2)
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, cpu, {args.threads} threads, model {args.model}\n")
    return args
