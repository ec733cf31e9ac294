"""``data/synthesis.py``, split into phantoms, degradations and noise, keeps its names."""

from __future__ import annotations

import medverse.data as data
import medverse.intensity as intensity
from medverse.data import degradations, noise, phantoms, synthesis


def test_the_names_of_the_split_synthesis_stay_importable_from_their_old_home() -> None:
    # data/synthesis.py was split into phantoms.py, degradations.py and noise.py; every name
    # it exported stays importable from medverse.data.synthesis for one release
    homes = {name: phantoms for name in phantoms.__all__}
    homes.update({name: degradations for name in degradations.__all__})
    homes.update({name: noise for name in noise.__all__})
    assert sorted(homes) == sorted(synthesis.__all__)
    for name, module in homes.items():
        assert getattr(synthesis, name) is getattr(module, name), name
        if name in data.__all__:
            assert getattr(data, name) is getattr(module, name), name
    # the private helpers other modules took from synthesis.py
    assert synthesis._minmax is intensity.minmax_scale  # now the one min-max of training data
    assert synthesis._RandomOp is degradations._RandomOp
    assert synthesis._down_up is degradations._down_up
    assert synthesis._range is degradations._range
