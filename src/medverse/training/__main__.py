"""``python -m medverse.training --config FILE.yaml [--resume]`` (also under ``torchrun``).

The same options and messages as ``medverse train`` (both go through
:mod:`medverse.training.command`); this entry point exists because ``torchrun -m`` wants a
module. Usage errors exit with 2, bad input with one ``error:`` line and 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medverse.training",
        description="Train a Medverse network from a YAML/JSON TrainConfig "
        "(torchrun --nproc_per_node N -m medverse.training ... for several processes).",
    )
    parser.add_argument("--config", required=True, help="TrainConfig file (.yaml or .json).")
    parser.add_argument(
        "--resume", action="store_true", help="Continue from out_dir's newest checkpoint."
    )
    parser.add_argument("--steps", type=int, default=None, help="Override the config's steps.")
    parser.add_argument("--out-dir", default=None, help="Override the config's out_dir.")
    parser.add_argument(
        "--stop-at", type=int, default=None, help="Stop after this step (checkpointed)."
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="Minutes of wall time (time-boxed run): then checkpoint and stop.",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    from medverse.errors import MedverseError
    from medverse.training.command import run_from_options, summary_lines

    rank = int(os.environ.get("RANK", "0"))  # set by torchrun; the process group comes later
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(
        level=level if rank == 0 else logging.ERROR,
        format=f"%(levelname)s [rank {rank}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config, result = run_from_options(
            args.config,
            resume=args.resume,
            steps=args.steps,
            out_dir=args.out_dir,
            stop_at=args.stop_at,
            time_limit=args.time_limit,
            progress=args.progress,
        )
    except MedverseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    if rank == 0:
        print("\n".join(summary_lines(config, result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
