"""Run one measurement in a fresh process so its peak resident memory is its own."""

from __future__ import annotations

import json
import subprocess
import sys


def in_subprocess(code: str) -> dict:
    """Run ``code`` (which must print one JSON line last) in a new Python; add its peak RSS."""
    wrapper = (
        "import resource, json, sys\n" + code + "\nres = json.loads(_result)\n"
        "res['peak_rss_gib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2\n"
        "print(json.dumps(res))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
