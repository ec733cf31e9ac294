"""The repository stands alone: documentation links resolve inside it, golden data is vendored."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [
    ROOT / "README.md",
    ROOT / "docs" / "method.md",
    ROOT / "docs" / "evaluation.md",
    ROOT / "docs" / "architecture.md",
    ROOT / "tests" / "golden" / "README.md",
    ROOT / "src" / "medverse" / "weights" / "MODEL_CARD.md",
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_stay_inside_the_repository(doc) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "shared/docs" not in text and "shared/reference" not in text
    assert "METHOD.md" not in text
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT.resolve()), (doc, target)
        assert path.exists(), (doc, target)


def test_licence_and_citation() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "@inproceedings{hu2026medverse" in readme and "2509.09232" in readme
    assert "@software{medverse_package" in readme


def test_golden_data_is_vendored_and_small() -> None:
    golden = ROOT / "tests" / "golden"
    files = [p for p in golden.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 10 * 1024 * 1024
    for name in (
        "weights_seed0_c4-8-16-32-64_gain2.safetensors",
        "forward_128_inputs.npz.xz",
        "forward_128_expected.npz.xz",
        "autoregressive_200_inputs.npz.xz",
        "autoregressive_200_expected.npz.xz",
        "medverse_official_state_dict.json",
        "cases.json",
    ):
        assert (golden / name).is_file(), name


# -- import layering (docs/architecture.md) ------------------------------------------------------

SOURCE = ROOT / "src"
# Room -> rank, as in docs/architecture.md. A module may import its own room and rooms of a lower
# rank only; rooms of equal rank do not import each other. A module belongs to the longest room
# name that prefixes it; "medverse" is the package __init__ alone.
ROOMS = {
    "medverse": 0,
    "medverse.errors": 0,
    "medverse.types": 0,
    "medverse.files": 0,
    "medverse.validation": 1,
    "medverse.intensity": 2,
    "medverse.model": 2,
    "medverse.io.volume": 2,
    "medverse.io.dataset_json": 2,
    "medverse.registration": 3,
    "medverse.data": 3,
    "medverse.checkpoint": 3,
    "medverse.io.context": 3,
    "medverse.io": 4,
    "medverse.inference": 5,
    "medverse.evaluation": 6,
    "medverse.training": 7,
    "medverse.cli": 8,
    "medverse.demo": 8,
    "medverse.__main__": 8,
    "medverse.predict": 8,
}
APPLICATION = {"medverse.cli", "medverse.demo", "medverse.__main__", "medverse.predict"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((SOURCE / "medverse").rglob("*.py"))}


def _imports(name: str) -> dict[str, int]:
    """medverse modules ``name`` imports -> first line number.

    Every import statement counts, wherever it stands: top level, inside functions and methods,
    and under ``if TYPE_CHECKING``. ``from a.b import c`` is an edge to ``a.b.c`` when that is a
    module, else to ``a.b``. The parent packages an import runs implicitly (their ``__init__``)
    are not edges.
    """
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target in MODULES and target != name:
                found.setdefault(target, node.lineno)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _room(name: str) -> str:
    if name == "medverse":
        return name
    rooms = [room for room in ROOMS if room != "medverse" and f"{name}.".startswith(f"{room}.")]
    assert rooms, f"{name} is in no room: add it to docs/architecture.md and ROOMS here"
    return max(rooms, key=len)


def test_the_import_graph_is_parsed() -> None:
    # guards the checks below against an empty graph: known edges must be found
    assert "medverse.checkpoint.model_registry" in GRAPH["medverse.checkpoint.io"]
    # a function-level one
    assert "medverse.evaluation.metrics" in GRAPH["medverse.training.scoring"]
    assert "medverse.io.volume" in GRAPH["medverse.registration.sitk_engine"]


def test_no_import_circles_between_medverse_modules() -> None:
    # depth-first search; a back edge closes a circle, reported with its line numbers
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for target in GRAPH[name]:
            if state.get(target) == "open":
                circle = [*path[path.index(target) :], target]
                steps = [f"{a} (line {GRAPH[a][b]})" for a, b in zip(circle, circle[1:])]
                raise AssertionError("import circle: " + " -> ".join([*steps, target]))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in GRAPH:
        if name not in state:
            visit(name)


def test_imports_go_down_the_rooms_of_docs_architecture() -> None:
    upward = []
    for name, targets in GRAPH.items():
        room = _room(name)
        for target, line in targets.items():
            target_room = _room(target)
            same_room = target_room == room or {room, target_room} <= APPLICATION
            if not same_room and ROOMS[target_room] >= ROOMS[room]:
                upward.append(f"{name}:{line} imports {target} ({room} -> {target_room})")
    assert not upward, "\n".join(upward)
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [room for room in ROOMS if f"`{room}" not in text]
    assert not missing, f"rooms not described in docs/architecture.md: {missing}"


def test_training_uses_only_the_metrics_of_evaluation() -> None:
    used = {
        target
        for name, targets in GRAPH.items()
        if _room(name) == "medverse.training"
        for target in targets
        if _room(target) == "medverse.evaluation"
    }
    assert used == {"medverse.evaluation.metrics"}
    # and the metrics stand alone, so that arrow stays cheap
    assert set(GRAPH["medverse.evaluation.metrics"]) <= {"medverse.errors"}


def test_the_network_runs_on_arrays_through_one_pipeline() -> None:
    # issue 16 item 1: only inference/pipeline.py (and the registration-guided pass of
    # inference/guided.py) call the driver; evaluation reaches inference only in model_method
    # and imports nothing of model
    callers = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and any(
                alias.name == "run_inference" for alias in node.names
            ):
                callers.add(name)
    assert callers == {"medverse.inference.pipeline", "medverse.inference.guided"}
    reaching = {
        (name, _room(target))
        for name, targets in GRAPH.items()
        if _room(name) == "medverse.evaluation"
        for target in targets
        if _room(target) in {"medverse.model", "medverse.inference"}
    }
    assert reaching == {("medverse.evaluation.model_method", "medverse.inference")}
