"""``python -m medverse.training --config FILE.yaml [--resume]`` (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import logging
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
    from medverse.training.config import TrainConfig
    from medverse.training.distributed import cleanup, init_distributed
    from medverse.training.loop import run

    try:
        config = TrainConfig.from_file(args.config)
        changes = {}
        if args.steps is not None:
            changes["steps"] = args.steps
        if args.out_dir is not None:
            changes["out_dir"] = args.out_dir
        if changes:
            config = config.replace(**changes)
        info = init_distributed(config.device)
    except MedverseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(
        level=level if info.is_main else logging.ERROR,
        format=f"%(levelname)s [rank {info.rank}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = run(
            config,
            resume=args.resume,
            stop_at=args.stop_at,
            time_limit=None if args.time_limit is None else 60.0 * args.time_limit,
            progress=args.progress,
            info=info,
        )
    except MedverseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        cleanup(info)
    if info.is_main:
        where = result.weights or result.checkpoint
        print(f"step {result.step}/{config.steps} in {result.seconds:.1f} s; wrote {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
