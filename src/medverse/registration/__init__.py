"""Register one volume onto another (affine or deformable) and warp arrays with the result.

One package for every registration in medverse: context alignment (``--align affine`` /
``deformable`` in :mod:`medverse.io.alignment`) and the multi-atlas baselines
(:mod:`medverse.evaluation.baselines`). Its modules, in import order:
:mod:`~medverse.registration.settings` (engines, kinds, :class:`RegistrationSettings`),
:mod:`~medverse.registration.transform` (:class:`Registration` and its warp,
:func:`resample_to_grid`), :mod:`~medverse.registration.images` (the copies the engines
register), :mod:`~medverse.registration.sitk_engine` and
:mod:`~medverse.registration.ants_engine`, :mod:`~medverse.registration.cache` (the on-disk
:class:`RegistrationCache`) and :mod:`~medverse.registration.driver` (:func:`register`). This
``__init__`` re-exports their public names lazily, and for one release every other name of the
former single module ``registration.py`` (``_import_ants``, ``_AFFINE``, ...).

Two engines:

* ``"ants"`` (antspyx): ``"affine"`` is ANTs' ``Affine`` (global correlation, centre-of-mass
  initialisation); ``"deformable"`` adds SyN (local cross-correlation, radius 1) on top of that
  affine, restricted to where the moving volume has data. Both run on block-averaged copies of
  the images with at most :attr:`RegistrationSettings.grid_voxels` voxels (2 mm 96x112x96 ->
  4 mm, 1 mm 181x217x181 -> 4 mm) with a fixed random seed; the transform is then applied at
  full resolution. Both metrics give the same result on any number of threads (Mattes MI does
  not). ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process: it is set to 2
  before antspyx is first used, unless already set.
* ``"sitk"`` (SimpleITK): ``"affine"`` is rigid then affine, Mattes mutual information, on images
  block-averaged to at most 48 voxels per axis, one thread, fixed sampling seed (the historical
  ``--align affine``); ``"deformable"`` adds fast symmetric-forces demons after histogram matching.

Every result is the same object whatever the engine: a world-space affine (``world``: fixed world
point -> moving world point, RAS mm) and, for deformable registrations, a displacement field
``u`` (RAS mm, defined on the fixed side) so that a fixed point ``x`` maps to
``world @ (x + u(x))``. :meth:`Registration.warp` resamples any array on the moving grid onto the
fixed grid with it (numpy/scipy, no engine needed), so a cached result is all that is needed.

Example:
    >>> import numpy as np
    >>> from medverse.io import Volume
    >>> from medverse.registration import RegistrationCache, register
    >>> grid = np.indices((40, 40, 40)).astype(np.float32)
    >>> fixed = Volume(np.exp(-((grid - 20) ** 2).sum(0) / 60), np.eye(4), name="fixed")
    >>> moving = Volume(np.exp(-((grid - 23) ** 2).sum(0) / 60), np.eye(4), name="moving")
    >>> reg = register(fixed, moving, kind="affine", engine="sitk")  # doctest: +SKIP
    >>> reg.warp(moving.array).shape  # doctest: +SKIP
    (40, 40, 40)
"""

from __future__ import annotations

from medverse import lazy_getattr

__all__ = [
    "ENGINES",
    "REGISTRATION_KINDS",
    "Registration",
    "RegistrationCache",
    "RegistrationSettings",
    "default_cache_dir",
    "register",
    "resample_to_grid",
]

_LAZY = {
    "ENGINES": "medverse.registration.settings",
    "REGISTRATION_KINDS": "medverse.registration.settings",
    "RegistrationSettings": "medverse.registration.settings",
    "Registration": "medverse.registration.transform",
    "resample_to_grid": "medverse.registration.transform",
    "RegistrationCache": "medverse.registration.cache",
    "default_cache_dir": "medverse.registration.cache",
    "register": "medverse.registration.driver",
}

# The other names of the former single module registration.py, for one release (baselines.py
# took _import_ants, a test _AFFINE; registration_key is public in cache.py).
_FORMER = {
    "_PLAUSIBLE_SCALE": "medverse.registration.transform",
    "_WARP_CHUNK": "medverse.registration.transform",
    "_METHOD_NAMES": "medverse.registration.transform",
    "_warp_with_field": "medverse.registration.transform",
    "_LPS_TO_RAS": "medverse.registration.images",
    "_CLIP": "medverse.registration.images",
    "_spacing": "medverse.registration.images",
    "_block_average": "medverse.registration.images",
    "_registration_grids": "medverse.registration.images",
    "_lps_world_to_ras": "medverse.registration.images",
    "_overlap_mask": "medverse.registration.images",
    "_SITK_SEED": "medverse.registration.sitk_engine",
    "_SITK_MAX_SIZE": "medverse.registration.sitk_engine",
    "_to_sitk": "medverse.registration.sitk_engine",
    "_from_sitk_array": "medverse.registration.sitk_engine",
    "_sitk_affine": "medverse.registration.sitk_engine",
    "_sitk_registration_image": "medverse.registration.sitk_engine",
    "_sitk_optimise": "medverse.registration.sitk_engine",
    "_sitk_demons": "medverse.registration.sitk_engine",
    "_ANTS_LOCK": "medverse.registration.ants_engine",
    "_THREADS_VARIABLE": "medverse.registration.ants_engine",
    "_import_ants": "medverse.registration.ants_engine",
    "_ants_session": "medverse.registration.ants_engine",
    "_ants_image": "medverse.registration.ants_engine",
    "_ants_affine": "medverse.registration.ants_engine",
    "_ants_syn": "medverse.registration.ants_engine",
    "_FORMAT": "medverse.registration.cache",
    "_check_entry": "medverse.registration.cache",
    "registration_key": "medverse.registration.cache",
    "_engine_version": "medverse.registration.cache",
    "_SCALE_RANGE": "medverse.registration.driver",
    "_AFFINE": "medverse.registration.driver",
    "_DEFORMABLE": "medverse.registration.driver",
    "_result": "medverse.registration.driver",
    "_from_entry": "medverse.registration.driver",
    "_check_image": "medverse.registration.driver",
    "_guard": "medverse.registration.driver",
    "_check_result": "medverse.registration.driver",
}

__getattr__ = lazy_getattr(__name__, {**_LAZY, **_FORMER})
