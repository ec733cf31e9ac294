"""The repository stands alone: documentation links resolve inside it, golden data is vendored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [
    ROOT / "README.md",
    ROOT / "docs" / "method.md",
    ROOT / "docs" / "evaluation.md",
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
