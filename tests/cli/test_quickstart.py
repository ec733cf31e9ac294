"""The README's commands: the quick start's `medverse demo` and the bundled-example predict."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from medverse.checkpoint.model_registry import get_spec
from medverse.cli.main import app

ROOT = Path(__file__).parents[2]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(get_spec("medverse-small").weights is None, reason="no packaged weights"),
]


def _block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(rf"{title}\s+```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")


def _args(block: str, command: str) -> list[str]:
    line = re.search(rf"^medverse {command} (.*?)$", block, re.M).group(1)
    return shlex.split(line.split("#")[0])


def test_readme_quick_start_runs_the_demo(tmp_path) -> None:
    block = _block("## Quick start")
    assert 'pip install -e ".[dev]"' in block and "python -m pytest -q" in block
    args = _args(block, "demo")
    out_index = args.index("--output-dir") + 1
    args[out_index] = str(tmp_path / args[out_index])
    res = CliRunner().invoke(app, ["demo", *args])
    assert res.exit_code == 0, res.output
    summary = json.loads((Path(args[out_index]) / "metrics.json").read_text())
    assert summary["config"]["num_contexts"] == 4 and summary["config"]["shape"] == [55, 64, 55]
    assert (Path(args[out_index]) / "index.html").is_file()


def test_readme_bundled_example_predict(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    args = _args(_block("### Command line"), "predict")
    assert "examples/synthetic/target.nii.gz" in args
    out_index = args.index("--output") + 1
    args[out_index] = str(tmp_path / Path(args[out_index]).name)
    res = CliRunner().invoke(app, ["predict", "--no-progress", *args])
    assert res.exit_code == 0, res.output
    pred = nib.load(args[out_index])
    target = nib.load(ROOT / "examples/synthetic/target.nii.gz")
    assert pred.shape == target.shape
    assert np.allclose(pred.affine, target.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
