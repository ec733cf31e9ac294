"""``registration.py``, split into the modules of the package ``medverse.registration``, keeps
every name it had: the public ones for good, the private ones for one release."""

from __future__ import annotations

import importlib

import medverse.registration as registration

# Every top-level name of the former single module registration.py (but its logger) -> its module.
FORMER = {
    "settings": ["ENGINES", "REGISTRATION_KINDS", "RegistrationSettings"],
    "transform": [
        "Registration",
        "resample_to_grid",
        "_PLAUSIBLE_SCALE",
        "_WARP_CHUNK",
        "_METHOD_NAMES",
        "_warp_with_field",
    ],
    "images": [
        "_LPS_TO_RAS",
        "_CLIP",
        "_spacing",
        "_block_average",
        "_registration_grids",
        "_lps_world_to_ras",
        "_overlap_mask",
    ],
    "sitk_engine": [
        "_SITK_SEED",
        "_SITK_MAX_SIZE",
        "_to_sitk",
        "_from_sitk_array",
        "_sitk_affine",
        "_sitk_registration_image",
        "_sitk_optimise",
        "_sitk_demons",
    ],
    "ants_engine": [
        "_ANTS_LOCK",
        "_THREADS_VARIABLE",
        "_import_ants",
        "_ants_session",
        "_ants_image",
        "_ants_affine",
        "_ants_syn",
    ],
    "cache": [
        "RegistrationCache",
        "default_cache_dir",
        "registration_key",
        "_FORMAT",
        "_check_entry",
        "_engine_version",
    ],
    "driver": [
        "register",
        "_SCALE_RANGE",
        "_AFFINE",
        "_DEFORMABLE",
        "_result",
        "_from_entry",
        "_check_image",
        "_guard",
        "_check_result",
    ],
}


def test_every_name_of_the_former_module_resolves_to_its_new_module() -> None:
    # 47 top-level names, less _normalise (replaced by medverse.intensity.normalize_intensity)
    assert sum(len(names) for names in FORMER.values()) == 46
    for module_name, names in FORMER.items():
        module = importlib.import_module(f"medverse.registration.{module_name}")
        for name in names:
            assert getattr(registration, name) is getattr(module, name), name
    namespace: dict[str, object] = {}
    exec("from medverse.registration import _import_ants, _AFFINE, registration_key", namespace)
    assert namespace["_AFFINE"] is registration.driver._AFFINE
