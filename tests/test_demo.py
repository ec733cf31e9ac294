"""``demo.py``: the demo's settings, its multi-label map and its HTML page.

The whole demo (bundled model, files, figures, scores) runs in ``tests/cli/test_demo.py`` and
``tests/cli/test_quickstart.py``; here the pieces that decide what it builds and shows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from medverse.demo import DEMO_STRUCTURES, DemoConfig, DemoResult, _html_page, _label_map
from medverse.errors import InputError


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_contexts": True}, "num_contexts must be in 1..16, got True"),
        ({"num_contexts": 17}, "num_contexts must be in 1..16, got 17"),
        ({"spacing": math.nan}, "spacing must be in [1, 12] mm, got nan"),
        ({"spacing": 12.5}, "spacing must be in [1, 12] mm, got 12.5"),
        ({"spacing": 0.9}, "spacing must be in [1, 12] mm"),
        ({"device": "gpu"}, "device must be one of"),
    ],
)
def test_bad_settings_are_refused_with_the_value(changes, message) -> None:
    with pytest.raises(InputError) as info:
        DemoConfig(**changes)
    assert message in str(info.value)


def test_edge_settings_are_accepted_and_the_grid_follows_the_spacing() -> None:
    assert DemoConfig(num_contexts=1, spacing=12.0).num_contexts == 1
    assert DemoConfig(num_contexts=16, spacing=1.0, device="auto").device == "auto"
    assert DemoConfig().shape == (55, 64, 55)  # one 64^3 window of medverse-small at 3.5 mm
    assert DemoConfig(spacing=7.0).shape == (27, 32, 27)  # the same 192 x 224 x 192 mm head


def test_label_map_draws_later_structures_over_earlier_ones() -> None:
    shape = (4, 1, 1)
    masks = {"brain_mask": np.ones(shape)}
    for value, task in DEMO_STRUCTURES.items():
        masks[task] = np.zeros(shape)
        masks[task][: 5 - value] = 1  # structure v covers voxels 0..4-v
    # white matter everywhere in 0..3, thalamus over 0..2, putamen over 0..1, hippocampus over 0
    assert _label_map(masks).ravel().tolist() == [4, 3, 2, 1]
    assert _label_map(masks).dtype == np.uint8
    masks = {**masks, **{task: np.zeros(shape) for task in DEMO_STRUCTURES.values()}}
    assert not _label_map(masks).any()


def test_html_page_escapes_names_and_dashes_missing_scores() -> None:
    config = DemoConfig(model="weights/<mine>&co", num_contexts=2)
    result = DemoResult(
        out_dir=Path("out"),
        metrics={
            "thalamus": {"dice": 0.81234, "dice_context_mean": math.nan},
            "denoise_gaussian": {"psnr": 30.5, "psnr_identity": 25.0},
        },
        seconds={"build case": 1.0, "segmentation": 2.5},
        files=[],
    )
    page = _html_page(config, result, ["thalamus.png", "a<b>.png"])
    assert "<code>weights/&lt;mine&gt;&amp;co</code>" in page and "<mine>" not in page
    assert "<td>thalamus</td><td>0.812</td><td>-</td><td>-</td><td>-</td>" in page
    assert "<td>denoise_gaussian</td><td>-</td><td>-</td><td>30.500</td><td>25.000</td>" in page
    assert '<img src="thalamus.png"' in page and 'src="a&lt;b&gt;.png"' in page
    assert "2 context" in page and "grid (55, 64, 55)" in page and "Total 3.5 s" in page
