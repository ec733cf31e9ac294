"""The real-anatomy kit end to end, and ``evaluation/kit.py``, split into ``kit_config.py``,
``kit_deformation.py``, ``kit_build.py`` and ``kit_folder.py``, keeping its names."""

from __future__ import annotations

from medverse.evaluation import kit, kit_build, kit_config, kit_folder
from medverse.evaluation.baselines import context_mean, identity
from medverse.evaluation.kit_config import AAL_NOTE
from medverse.evaluation.protocol import evaluate
from medverse.evaluation.report import write_report


def test_end_to_end_on_the_kit(tiny_kit, tmp_path):
    results = evaluate(
        tiny_kit,
        {"context_mean": context_mean, "identity": identity},
        num_contexts=2,
        num_draws=1,
        tasks=["brain_mask", "putamen_aal", "denoise_gaussian"],
        progress=False,
    )
    assert not results.failed()
    assert results.config["dataset"]["not_for_training"] is True
    index = write_report(results, tmp_path / "report")
    summary = (index.parent / "summary.md").read_text(encoding="utf-8")
    rows = [line for line in summary.splitlines() if line.startswith("| putamen_aal |")]
    assert rows and all(AAL_NOTE in row for row in rows)
    assert AAL_NOTE in index.read_text(encoding="utf-8")


def test_the_names_of_the_split_kit_stay_importable_from_their_old_home() -> None:
    # kit.py was split into kit_config.py, kit_deformation.py, kit_build.py and kit_folder.py;
    # every public name it had stays importable from medverse.evaluation.kit for one release
    homes = {name: kit_config for name in kit_config.__all__}
    homes.update({name: kit_build for name in kit_build.__all__})
    homes.update({name: kit_folder for name in kit_folder.__all__})
    assert set(kit.__all__) <= set(homes)
    for name, module in homes.items():
        assert getattr(kit, name) is getattr(module, name), name
