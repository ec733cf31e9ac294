"""Axis conventions and type aliases. No logic lives here.

Volumes are indexed in the file's voxel order ``(X, Y, Z)``; nothing is reoriented silently.
A target tensor is ``(B, 1, X, Y, Z)`` and contexts are ``(B, L, 1, X, Y, Z)``.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

__all__ = ["TASK_FAMILIES", "PathLike", "Shape3", "VolumeLike"]

PathLike = Union[str, "os.PathLike[str]"]  # noqa: UP007 - a runtime alias needs Union on 3.10
Shape3 = tuple[int, int, int]
VolumeLike = Union[np.ndarray, torch.Tensor]  # noqa: UP007 - runtime alias, Python 3.10

#: The three task families (METHOD.md): a label map, another image of the same anatomy, or a
#: better copy of the input. Training weights, episodes, evaluation tasks and methods name them.
TASK_FAMILIES = ("segmentation", "transformation", "enhancement")
