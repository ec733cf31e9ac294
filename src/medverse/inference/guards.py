"""Guard rails: warnings for targets far from what a model was trained on.

A model's weights may say what they were trained on (``trained_on`` in the bundled model's
metadata: voxel sizes and field of view in mm; :func:`medverse.load_model` puts it on the network
as ``net.trained_on``). :func:`target_warnings` compares a target with it and returns one line
per mismatch; nothing is refused, since a model can still be useful outside its training range,
but the user should know. ``medverse predict`` prints them as ``warning:`` lines.

Swapped context pairs are caught where pairs are read (:meth:`medverse.Context.from_files`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medverse.io.volume import Volume

__all__ = ["target_warnings", "SPACING_TOLERANCE", "FOV_TOLERANCE"]

# A voxel size within [low / 1.5, high * 1.5] of the trained range passes (3.5-4.5 mm: 2.33 to
# 6.75 mm); a field of view per axis within [0.5, 2] times the trained one (sorted axes) passes.
SPACING_TOLERANCE = 1.5
FOV_TOLERANCE = 2.0


def target_warnings(
    target: Volume, trained_on: Mapping[str, Any] | None, *, guided: bool = False
) -> list[str]:
    """Lines describing how ``target`` is far from the model's training data (may be empty).

    Args:
        target: the target volume (its affine gives voxel sizes and field of view).
        trained_on: the model's ``trained_on`` metadata (``voxel_size_mm: [low, high]``,
            ``field_of_view_mm: [x, y, z]``, optionally ``guided_voxel_size_mm: [low, high]``),
            or None (then nothing is checked).
        guided: the call is registration-guided segmentation; then ``guided_voxel_size_mm``
            (the range the guided call was trained and evaluated on), where given, replaces
            ``voxel_size_mm``.

    Example:
        >>> import numpy as np
        >>> vol = Volume(np.zeros((128, 150, 128)), np.diag([1.5, 1.5, 1.5, 1.0]), name="t1")
        >>> target_warnings(vol, {"voxel_size_mm": [3.5, 4.5]})[0][:40]
        "target 't1' has 1.5x1.5x1.5 mm voxels; t"
    """
    if not trained_on:
        return []
    lines: list[str] = []
    spacing = np.asarray(target.spacing, dtype=float)
    shown = "x".join(f"{s:.3g}" for s in spacing)
    voxel = trained_on.get("voxel_size_mm")
    guided = guided and bool(trained_on.get("guided_voxel_size_mm"))
    if guided:
        voxel = trained_on["guided_voxel_size_mm"]
    if voxel:
        low, high = float(min(voxel)), float(max(voxel))
        which = " for this registration-guided call" if guided else ""
        if spacing.min() < low / SPACING_TOLERANCE or spacing.max() > high * SPACING_TOLERANCE:
            lines.append(
                f"target '{target.name}' has {shown} mm voxels; the model was trained on "
                f"{low:g}-{high:g} mm voxels{which}, so expect worse results (resample the target and "
                "contexts to that voxel size, or use a model trained at this resolution)"
            )
    fov = trained_on.get("field_of_view_mm")
    if fov:
        extent = np.sort(spacing * np.asarray(target.shape, dtype=float))
        trained = np.sort(np.asarray(fov, dtype=float))
        ratio = extent / trained
        if ratio.min() < 1 / FOV_TOLERANCE or ratio.max() > FOV_TOLERANCE:
            extent_shown = "x".join(f"{e:.0f}" for e in spacing * np.asarray(target.shape))
            trained_shown = "x".join(f"{f:g}" for f in fov)
            lines.append(
                f"target '{target.name}' covers {extent_shown} mm; the model was trained on a "
                f"field of view of about {trained_shown} mm"
                + (f" ({trained_on['anatomy']})" if trained_on.get("anatomy") else "")
                + ", so expect worse results (crop or pad the target to a similar extent)"
            )
    return lines
