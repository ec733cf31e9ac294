"""``python -m medverse.predict ...``: ``medverse predict`` as a module, for ``torchrun``.

    torchrun --nproc_per_node 2 -m medverse.predict --targets-from DIR --output-dir OUT \\
        --context IMG SEG --context IMG SEG

Each process takes its rank's share of the targets (see :mod:`medverse.inference.cohort`);
rank 0 writes ``OUT/summary.csv`` once all ranks are done.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from medverse.cli.main import app

    args = sys.argv[1:] if argv is None else argv
    app(args=["predict", *args], prog_name="medverse")


if __name__ == "__main__":
    main()
