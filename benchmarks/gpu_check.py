"""One-device readiness check (issue 14, item 3): conformance, bf16, timings, training steps.

Usage: python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--skip-training]

Made to finish in under 8 minutes on one GPU; prints one markdown table (check, result, limit,
pass/fail) with the device in its header. The checks, one row each:

1. Golden conformance in fp32 on the device, on the vendored reference cases of ``tests/golden``
   (see its README): ``forward_128`` with and without the autoregressive (AR) pair (one network
   call) and ``autoregressive_200`` (the whole coarse-to-fine driver, ``compat="released"``).
   Max |diff| over the stored voxels <= 1e-3; the CPU tests hold 1e-4, and a GPU's kernels and
   reduction order are allowed 10x that (the smallest implementation mistake the reference
   lists moves the output by 1e-3). TF32 is switched off for the whole run, so "fp32" is fp32.
2. bf16 autocast (``torch.autocast(device_type, dtype=torch.bfloat16)``) vs fp32 on the same
   inputs: max |diff| and Dice of the outputs thresholded at 0.5. Reported, no limit.
3. ``medverse-base`` (random weights) on one 128^3 window with 8 contexts + the AR pair, fp32
   and bf16: median of 5 calls after 2 warm-ups, the device synchronised around each call (paper:
   1.16 s on a V100; issue 14's goal: <= 0.15 s on an H100, checked on the bf16 row). Then
   ``medverse-small`` on a 256^3 whole volume with 8 contexts through
   :func:`medverse.inference.driver.run_inference`, fp32 and bf16 (median of 3 after 1 warm-up).
4. 100 steps of ``configs/train_small_gpu.yaml`` as written (data, model, batch, ``amp``) through
   :func:`medverse.training.loop.run` with ``stop_at`` (so no validation and no export; the run
   folder is temporary) and a time limit that keeps the script inside its 8 minutes: steps/s
   from the run's ``log.csv`` (the first step, a warm-up, left out) and peak memory.

Peak memory is ``torch.cuda.max_memory_allocated`` (CUDA only; the CPU benchmarks measure RSS
per process). The exit status is 1 when a row says FAIL, 0 otherwise; ``--device cuda``
without CUDA exits 2 with one line.

``--quick`` is the smoke test (about a minute on one CPU core): ``forward_128`` with the AR pair
only, 64^3 windows (the smallest edge the 5-stage architectures accept: 2^4 x 4 BAM patches), 2
contexts, one timed call without warm-up, a 64^3 volume, and 3 training steps on sources cut to
3 subjects of half the edge, no validation cases, batch 2, 2 contexts. bf16 runs once, on a 64^3
crop of ``forward_128`` (the bf16 timings are skipped): a CPU without native bf16 (no AVX512-BF16
or AMX) emulates bf16 convolutions with ``slow_conv3d``, 40x slower than fp32 (measured on a
2-core AVX2 machine: ``forward_128`` 5.5 s fp32, 226 s bf16, one thread).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import logging
import lzma
import math
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medverse.checkpoint.factory import load_model
from medverse.checkpoint.io import load_network, read_weights
from medverse.checkpoint.model_registry import get_spec
from medverse.evaluation.metrics import dice
from medverse.inference.driver import InferenceConfig, run_inference
from medverse.model.network import MedverseNet

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
GOLDEN_WEIGHTS = GOLDEN / "weights_seed0_c4-8-16-32-64_gain2.safetensors"
TRAIN_CONFIG = ROOT / "configs" / "train_small_gpu.yaml"
BUDGET_S = 480.0  # the whole script, on one GPU
GOLDEN_TOL = 1e-3
GOAL_WINDOW_S = 0.15  # issue 14: medverse-base, one 128^3 window, 8 contexts + AR, on an H100

log = logging.getLogger("gpu_check")


@dataclasses.dataclass
class Row:
    check: str
    result: str
    limit: str
    status: str  # pass | FAIL | info | skipped | n/a (...)


@dataclasses.dataclass(frozen=True)
class Sizes:
    window: int = 128
    contexts: int = 8
    volume: int = 256
    train_steps: int = 100
    window_runs: tuple[int, int] = (2, 5)  # (warm-up, timed)
    volume_runs: tuple[int, int] = (1, 3)


QUICK = Sizes(64, 2, 64, 3, (0, 1), (0, 1))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    call: Callable[[], object], device: torch.device, *, warmup: int, repeats: int
) -> float:
    """Median wall time of ``call`` over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def _precision(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _limit_status(value: float, limit: float) -> str:
    return "pass" if value <= limit else "FAIL"


# --------------------------------------------------------------------------------------------
# 1-2: golden cases, fp32 and bf16
# --------------------------------------------------------------------------------------------


def golden_arrays(name: str) -> dict[str, np.ndarray]:
    """A vendored golden file (``forward_128_inputs``...): an xz-compressed ``.npz``."""
    data = lzma.decompress((GOLDEN / f"{name}.npz.xz").read_bytes())
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return dict(npz)


def stored_max_diff(actual: torch.Tensor, expected: dict[str, np.ndarray], key: str) -> float:
    """max |actual - reference| over the voxels stored for ``key`` (``KEY.index``/``.value``)."""
    shape = tuple(int(n) for n in expected[f"{key}.shape"])
    values = actual.float().cpu().numpy()
    if values.shape != shape:
        raise ValueError(f"golden {key}: output shape {values.shape}, reference {shape}")
    picked = values.reshape(-1)[expected[f"{key}.index"].astype(np.int64)]
    return float(np.abs(picked - expected[f"{key}.value"]).max())


def _decode(raw: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Reference decoding (tests/golden/README.md): images u8 / 255, masks as they are."""

    def image(key: str) -> torch.Tensor:
        return torch.from_numpy(raw[key].astype(np.float32) / 255.0).to(device)

    out = {
        "target": image("target_in"),
        "context_in": image("context_in"),
        "context_out": torch.from_numpy(raw["context_out"].astype(np.float32)).to(device),
    }
    if "image_context_in" in raw:
        out["ar_in"], out["ar_out"] = image("image_context_in"), image("image_context_out")
    return out


class Golden:
    """The reference network and cases on one device; outputs kept (on the CPU) for reuse."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.outputs: dict[tuple[str, bool], torch.Tensor] = {}
        self.windows: list[int] = []

    @functools.cached_property
    def net(self) -> MedverseNet:
        return load_network(read_weights(GOLDEN_WEIGHTS)).to(self.device).eval()

    def close(self) -> None:
        """Free the network and the kept outputs (device memory for the timings)."""
        self.__dict__.pop("net", None)
        self.outputs.clear()

    def forward_128(self, *, with_ar: bool, bf16: bool, crop: int | None = None) -> torch.Tensor:
        """The ``forward_128`` case; ``crop`` keeps the first ``crop`` voxels of each spatial axis
        of every input (a cheaper case of the same network, for ``--quick``)."""
        key = (f"forward_128{'' if with_ar else '_no_ar'}{'' if crop is None else crop}", bf16)
        if key not in self.outputs:
            case = _decode(golden_arrays("forward_128_inputs"), self.device)
            if crop is not None:
                case = {name: t[..., :crop, :crop, :crop] for name, t in case.items()}
            ar = (case["ar_in"], case["ar_out"]) if with_ar else (None, None)
            with torch.inference_mode(), _precision(self.device, bf16):
                y = self.net(
                    case["target"],
                    case["context_in"],
                    case["context_out"],
                    *ar,
                    context_batch=1 if with_ar else 2,
                )
            self.outputs[key] = y.float().cpu()
        return self.outputs[key]

    def autoregressive_200(self, *, bf16: bool) -> tuple[torch.Tensor, list[int]]:
        key = ("autoregressive_200", bf16)
        if key not in self.outputs:
            case = _decode(golden_arrays("autoregressive_200_inputs"), self.device)
            res = run_inference(
                self.net,
                case["target"],
                case["context_in"],
                case["context_out"],
                InferenceConfig(compat="released", precision="bf16" if bf16 else "fp32"),
            )
            self.outputs[key] = res.output.float().cpu()
            self.windows = res.num_windows
        return self.outputs[key], self.windows


def check_forward_fp32(golden: Golden, *, with_ar: bool) -> tuple[str, str]:
    expected = golden_arrays("forward_128_expected")
    y = golden.forward_128(with_ar=with_ar, bf16=False)
    if with_ar:
        diff = stored_max_diff(y, expected, "y_with_ar")
    else:
        diff = stored_max_diff(y[..., ::2, ::2, ::2], expected, "y_without_ar_s2")
    return f"max \\|diff\\| {diff:.2e}", _limit_status(diff, GOLDEN_TOL)


def check_autoregressive_fp32(golden: Golden) -> tuple[str, str]:
    expected = golden_arrays("autoregressive_200_expected")
    y, windows = golden.autoregressive_200(bf16=False)
    vol = y[0, 0]
    diff = max(
        stored_max_diff(y[..., ::2, ::2, ::2], expected, "y_s2"),
        stored_max_diff(vol[100], expected, "y_slice_d_center"),
        stored_max_diff(vol[:, 90], expected, "y_slice_h_center"),
        stored_max_diff(vol[:, :, 80], expected, "y_slice_w_center"),
    )
    windows_text = "+".join(map(str, windows))
    return f"max \\|diff\\| {diff:.2e} (windows {windows_text})", _limit_status(diff, GOLDEN_TOL)


def _compare(fp32: torch.Tensor, bf16: torch.Tensor) -> str:
    diff = float((bf16 - fp32).abs().max())
    overlap = dice(bf16[0, 0] > 0.5, fp32[0, 0] > 0.5)
    share = float((fp32 > 0.5).float().mean())
    return (
        f"max \\|diff\\| {diff:.3g}, Dice(>0.5) {overlap:.4f} ({share:.1%} of voxels > 0.5 in fp32)"
    )


def check_bf16_forward(golden: Golden, crop: int | None = None) -> tuple[str, str]:
    fp32 = golden.forward_128(with_ar=True, bf16=False, crop=crop)
    return _compare(fp32, golden.forward_128(with_ar=True, bf16=True, crop=crop)), "info"


def check_bf16_autoregressive(golden: Golden) -> tuple[str, str]:
    fp32, _ = golden.autoregressive_200(bf16=False)
    return _compare(fp32, golden.autoregressive_200(bf16=True)[0]), "info"


# --------------------------------------------------------------------------------------------
# 3: timings
# --------------------------------------------------------------------------------------------


def _random_case(size: int, contexts: int, device: torch.device) -> list[torch.Tensor]:
    """Target, contexts (image, binary mask) and AR pair: ``(1, 1, n, n, n)``, ``(1, L, 1, ...)``."""
    generator = torch.Generator().manual_seed(0)
    n, L = size, contexts

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    tensors = [
        rand(1, 1, n, n, n),
        rand(1, L, 1, n, n, n),
        (rand(1, L, 1, n, n, n) > 0.5).float(),
        rand(1, 1, 1, n, n, n),
        rand(1, 1, 1, n, n, n),
    ]
    return [t.to(device) for t in tensors]


def time_window(device: torch.device, sizes: Sizes, *, bf16: bool) -> tuple[str, str]:
    net = load_model("medverse-base", pretrained=False, window=sizes.window, device=device)
    case = _random_case(sizes.window, sizes.contexts, device)
    context_batch = None if device.type == "cuda" else 2

    def call() -> None:
        with torch.inference_mode(), _precision(device, bf16):
            net(*case, context_batch=context_batch)

    _reset_peak(device)
    warmup, repeats = sizes.window_runs
    seconds = median_seconds(call, device, warmup=warmup, repeats=repeats)
    result = f"{seconds:.3f} s (median of {repeats}){_peak(device)}"
    if not bf16:
        status = "info"
    elif device.type != "cuda":
        status = "n/a (cpu)"
    else:
        status = _limit_status(seconds, GOAL_WINDOW_S)
    return result, status


def time_volume(device: torch.device, sizes: Sizes, *, bf16: bool) -> tuple[str, str]:
    spec = get_spec("medverse-small")
    net = load_model("medverse-small", pretrained=spec.weights is not None, device=device)
    target, context_in, context_out, _, _ = _random_case(sizes.volume, sizes.contexts, device)
    precision = "bf16" if bf16 else "fp32"
    cfg = (
        InferenceConfig(sw_batch_size=4, context_batch=None, precision=precision)
        if device.type == "cuda"
        else InferenceConfig(sw_batch_size=2, context_batch=2, precision=precision)
    )
    windows: list[int] = []

    def call() -> None:
        res = run_inference(net, target, context_in, context_out, cfg)
        windows[:] = res.num_windows

    _reset_peak(device)
    warmup, repeats = sizes.volume_runs
    seconds = median_seconds(call, device, warmup=warmup, repeats=repeats)
    return (
        f"{seconds:.2f} s (median of {repeats}), windows {'+'.join(map(str, windows))}, "
        f"sw_batch_size {cfg.sw_batch_size}, context_batch {cfg.context_batch}{_peak(device)}",
        "info",
    )


# --------------------------------------------------------------------------------------------
# 4: training
# --------------------------------------------------------------------------------------------


def run_training(
    device: torch.device, sizes: Sizes, *, quick: bool, seconds_left: float
) -> tuple[str, str]:
    """Steps of ``configs/train_small_gpu.yaml`` on ``device``; ``(result, status)``."""
    from medverse.training.config import TrainConfig
    from medverse.training.loop import run

    if seconds_left < 30:
        return f"not run: {seconds_left:.0f} s of the budget left", "FAIL"
    config = TrainConfig.from_file(TRAIN_CONFIG)
    if quick:
        data = tuple(
            dataclasses.replace(
                source,
                num_subjects=3,
                num_val_cases=0,
                num_templates=1,
                shape=tuple(n // 2 for n in source.shape),
            )
            for source in config.data
        )
        config = config.replace(data=data, batch_size=2, num_contexts=(2, 2))
    with tempfile.TemporaryDirectory(prefix="gpu_check_train_") as out_dir:
        config = config.replace(device=device.type, out_dir=out_dir, val_every=0)
        _reset_peak(device)
        result = run(config, stop_at=sizes.train_steps, time_limit=seconds_left)
        peak = _peak(device)
        with open(Path(out_dir) / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    step_seconds = [float(r["seconds"]) for r in rows if r.get("seconds")]
    timed = step_seconds[1:] or step_seconds
    rate = len(timed) / sum(timed) if timed else math.nan
    loss = result.last.get("loss", math.nan)
    text = (
        f"{result.step} steps, {rate:.2f} steps/s (steps 2..{result.step}), "
        f"{result.seconds:.0f} s with data building, last loss {loss:.3g}{peak}"
    )
    done = result.step == sizes.train_steps and math.isfinite(loss)
    return text, "pass" if done else "FAIL"


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def _device_line(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        )
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {torch.get_num_threads()} threads), torch {torch.__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a CPU smoke test")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"gpu_check: --device cuda, but torch {torch.__version__} sees no CUDA device; "
            "run it on a GPU machine, or pass --device cpu",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda":  # fp32 means fp32: no TF32 in convolutions or matmuls
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    sizes = QUICK if args.quick else Sizes()
    started = time.perf_counter()
    rows: list[Row] = []

    def row(check: str, limit: str, measure: Callable[[], tuple[str, str]] | None, skip: str = ""):
        if measure is None:
            rows.append(Row(check, f"skipped ({skip})", limit, "skipped"))
            return
        print(f"[{time.perf_counter() - started:5.0f} s] {check}", file=sys.stderr, flush=True)
        try:
            result, status = measure()
        except Exception as err:  # one failing check must not hide the others
            log.exception("%s failed", check)
            result, status = f"error: {type(err).__name__}: {str(err).splitlines()[0]}", "FAIL"
        rows.append(Row(check, result, limit, status))

    def full_only(measure: Callable[[], tuple[str, str]]) -> Callable[[], tuple[str, str]] | None:
        return None if args.quick else measure

    golden = Golden(device)
    tol = f"≤ {GOLDEN_TOL:g}"
    row(
        "golden forward_128 fp32, AR pair",
        tol,
        lambda: check_forward_fp32(golden, with_ar=True),
    )
    row(
        "golden forward_128 fp32, no AR",
        tol,
        full_only(lambda: check_forward_fp32(golden, with_ar=False)),
        "--quick",
    )
    row(
        "golden autoregressive_200 fp32, driver",
        tol,
        full_only(lambda: check_autoregressive_fp32(golden)),
        "--quick",
    )
    if args.quick:  # bf16 is emulated (~40x slower than fp32) on CPUs without native bf16
        w = sizes.window
        row(
            f"bf16 vs fp32 forward_128, {w}³ crop",
            "reported",
            lambda: check_bf16_forward(golden, crop=w),
        )
    else:
        row("bf16 vs fp32 forward_128", "reported", lambda: check_bf16_forward(golden))
    row(
        "bf16 vs fp32 autoregressive_200",
        "reported",
        full_only(lambda: check_bf16_autoregressive(golden)),
        "--quick",
    )
    golden.close()
    _reset_peak(device)

    w, L, n = sizes.window, sizes.contexts, sizes.volume
    for bf16, limit in (
        (False, "paper: 1.16 s on a V100"),
        (True, f"≤ {GOAL_WINDOW_S} s on an H100"),
    ):
        measure = functools.partial(time_window, device, sizes, bf16=bf16)
        row(
            f"medverse-base {w}³ window, {L} contexts + AR, {'bf16' if bf16 else 'fp32'}",
            limit,
            None if bf16 and args.quick else measure,
            "--quick",
        )
    for bf16 in (False, True):
        measure = functools.partial(time_volume, device, sizes, bf16=bf16)
        row(
            f"medverse-small {n}³ volume, {L} contexts, {'bf16' if bf16 else 'fp32'}",
            "reported",
            None if bf16 and args.quick else measure,
            "--quick",
        )

    train_check = f"training {TRAIN_CONFIG.name}, {sizes.train_steps} steps"
    train_limit = f"{sizes.train_steps} steps, finite loss"
    if args.skip_training:
        row(train_check, train_limit, None, "--skip-training")
    elif not TRAIN_CONFIG.is_file():
        row(train_check, train_limit, None, f"{TRAIN_CONFIG.relative_to(ROOT)} not found")
    else:
        row(
            train_check,
            train_limit,
            lambda: run_training(
                device,
                sizes,
                quick=args.quick,
                seconds_left=BUDGET_S - 20 - (time.perf_counter() - started),
            ),
        )

    total = time.perf_counter() - started
    rows.append(
        Row(
            "total wall time",
            f"{total:.0f} s",
            f"≤ {BUDGET_S:.0f} s",
            _limit_status(total, BUDGET_S),
        )
    )

    mode = "quick (smoke test)" if args.quick else "full"
    tf32 = "; fp32 = TF32 off" if device.type == "cuda" else ""
    print(f"\n### gpu_check on {_device_line(device)}; {mode}{tf32}\n")
    print("| check | result | limit | pass/fail |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r.check} | {r.result} | {r.limit} | {r.status} |")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
