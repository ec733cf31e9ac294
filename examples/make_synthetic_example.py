"""Regenerate examples/synthetic: one target and three context subjects (synthetic anatomy).

Usage: python examples/make_synthetic_example.py
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medverse.data.phantoms import draw_anatomy, draw_intensity_table, make_subject

ROOT = Path(__file__).parent / "synthetic"
SHAPE = (80, 80, 64)
AFFINE = np.diag([1.2, 1.2, 1.5, 1.0])


def save(path: Path, array: np.ndarray, dtype: type) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array.astype(dtype), AFFINE)
    img.set_qform(AFFINE, code=1)
    nib.save(img, path)


def main() -> None:
    rng = np.random.default_rng(7)
    anatomy = draw_anatomy(4, rng)
    table = draw_intensity_table(5, rng)
    for i in range(4):
        subject = make_subject(SHAPE, 4, 1, seed=100 + i, anatomy=anatomy, tables=[table])
        image = np.round(subject.images[0] * 255)
        # two foreground classes: structure 2 -> 1, structure 4 -> 2 (body and the rest -> 0)
        labels = np.select([subject.labels == 2, subject.labels == 4], [1, 2], 0)
        if i == 0:
            save(ROOT / "target.nii.gz", image, np.uint8)
            save(ROOT / "target_reference.nii.gz", labels, np.uint8)
        else:
            save(ROOT / "contexts" / "imagesTr" / f"case_{i:03d}_0000.nii.gz", image, np.uint8)
            save(ROOT / "contexts" / "labelsTr" / f"case_{i:03d}.nii.gz", labels, np.uint8)


if __name__ == "__main__":
    main()
