"""The README quick start: `medverse predict` with the packaged model on the bundled example."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from medverse.checkpoint.registry import get_spec
from medverse.cli.main import predict

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


def _readme_predict_args() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start\s+```bash\n(.*?)```", text, re.S).group(1)
    command = re.search(r"medverse predict(.*?)\n(?!\s)", block.replace("\\\n", " "), re.S).group(1)
    return shlex.split(command)


@pytest.mark.skipif(get_spec("medverse-small").weights is None, reason="no packaged weights")
def test_readme_quick_start(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    args = _readme_predict_args()
    out_index = args.index("--output") + 1
    args[out_index] = str(tmp_path / Path(args[out_index]).name)
    res = CliRunner().invoke(predict, ["--no-progress", *args])
    assert res.exit_code == 0, res.output
    pred = nib.load(args[out_index])
    target = nib.load(ROOT / "examples/synthetic/target.nii.gz")
    assert pred.shape == target.shape
    assert np.allclose(pred.affine, target.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}
