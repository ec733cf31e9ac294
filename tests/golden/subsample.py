"""Rebuild this folder from the full conformance reference (how the vendored files were made).

    python tests/golden/subsample.py /path/to/reference/golden tests/golden

The weights, ``cases.json`` and the default-model manifest are copied unchanged. Inputs are
stored whole, as an xz-compressed ``.npz`` (uint8, 16 grey levels: xz is ~40 % smaller than the
original deflate). Each expected output array is stored as a fixed random subset of its voxels:
``KEY.index`` (sorted flat C-order indices into the full array, uint32), ``KEY.value`` (the
float32 values at those indices, exact) and ``KEY.shape``; arrays of at most ``KEEP_WHOLE``
voxels keep every voxel. The subset is drawn once with numpy's PCG64 (seed 0) and stored, so
tests never depend on the generator. Values are float32 as in the reference: float16 would be
off by up to ~2e-4 at these magnitudes, above the 1e-4 tolerance.
"""

from __future__ import annotations

import io
import lzma
import shutil
import sys
from pathlib import Path

import numpy as np

FRACTION = {  # share of voxels kept per expected array (the rest of each array is checked by
    # the cases' mean/std statistics, which the tests compare on the full output)
    "y_with_ar": 1 / 16,
    "y_without_ar_s2": 1 / 8,
    "y_default_init_with_ar_s2": 1 / 8,
    "y_default_init_without_ar_s2": 1 / 8,
    "y_s2": 1 / 8,
    "level1_out_s4": 1 / 8,
}
KEEP_WHOLE = 40_000
COPY = (
    "weights_seed0_c4-8-16-32-64_gain2.safetensors",
    "cases.json",
)


def write_xz_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def subsample(expected: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, array in expected.items():
        flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        if flat.size <= KEEP_WHOLE:
            index = np.arange(flat.size)
        else:
            count = round(flat.size * FRACTION[key])
            index = np.sort(rng.choice(flat.size, size=count, replace=False))
        out[f"{key}.index"] = index.astype(np.uint32)
        out[f"{key}.value"] = flat[index]
        out[f"{key}.shape"] = np.asarray(array.shape, dtype=np.int64)
    return out


def main(source: Path, dest: Path) -> None:
    rng = np.random.default_rng(0)
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        shutil.copyfile(source / name, dest / name)
    shutil.copyfile(
        source.parent / "medverse_official_state_dict.json",
        dest / "medverse_official_state_dict.json",
    )
    for case in ("forward_128", "autoregressive_200"):
        inputs = dict(np.load(source / f"{case}_inputs.npz"))
        write_xz_npz(dest / f"{case}_inputs.npz.xz", inputs)
        expected = dict(np.load(source / f"{case}_expected.npz"))
        write_xz_npz(dest / f"{case}_expected.npz.xz", subsample(expected, rng))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
