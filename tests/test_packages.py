"""The package ``__init__`` files re-export lazily: importing one module does not load its siblings.

docs/architecture.md ranks the rooms by their import statements; these tests check that the arrows
also hold at run time, where importing ``medverse.evaluation.metrics`` runs
``medverse/evaluation/__init__.py`` first.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

PACKAGES = [
    "medverse.evaluation",
    "medverse.io",
    "medverse.data",
    "medverse.training",
    "medverse.registration",
]


def _loaded_after(statement: str) -> list[str]:
    """Modules in ``sys.modules`` after ``statement`` in a fresh interpreter."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_importing_the_metrics_loads_nothing_else_of_evaluation() -> None:
    loaded = _loaded_after("import medverse.evaluation.metrics")
    medverse = {name for name in loaded if name.split(".")[0] == "medverse"}
    assert medverse == {
        "medverse",
        "medverse.errors",
        "medverse.evaluation",
        "medverse.evaluation.metrics",
    }
    assert "medverse.evaluation.protocol" not in loaded  # named, for the reader of a failure


def test_importing_the_packages_loads_none_of_their_modules_and_no_torch() -> None:
    loaded = _loaded_after("import " + ", ".join(PACKAGES))
    assert {name for name in loaded if name.split(".")[0] == "medverse"} == {"medverse", *PACKAGES}
    assert "torch" not in loaded


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_resolves_to_its_module(package: str) -> None:
    module = importlib.import_module(package)
    assert sorted(module._LAZY) == sorted(module.__all__)
    for name, source in module._LAZY.items():
        assert getattr(module, name) is getattr(importlib.import_module(source), name), name
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)
    assert set(module.__all__) <= set(namespace)


def test_submodules_stay_reachable_as_attributes_and_unknown_names_fail() -> None:
    io = importlib.import_module("medverse.io")
    assert io.alignment is importlib.import_module("medverse.io.alignment")
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        _ = io.not_a_name
