"""Registered training contexts: other subjects registered onto the target, as at inference.

A registration-guided step (``guided_prob``) trains the call that ``--align deformable`` makes:
contexts deformably registered to the target, AR pair = (target, fused warped masks). With
``guided_contexts: registered`` the contexts of such a step are not the target under a
simulated residual warp but *other subjects*, registered onto the target by
:func:`medverse.registration.register` (ANTs affine + SyN, the inference's own settings), so
the network learns on the errors a real registration leaves between two real anatomies and
contrasts. :class:`ContextRegistrar` is the ``registrar`` of
:class:`~medverse.data.episodes.EpisodeSampler`.

Example:
    >>> registrar = ContextRegistrar(cache=RegistrationCache("/tmp/regs"))  # doctest: +SKIP
    >>> warped = registrar(target_case, context_case, np.stack([image, mask]))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence

import numpy as np

from medverse.data.datasets import Case
from medverse.io.volume import Volume
from medverse.registration.cache import RegistrationCache
from medverse.registration.driver import register
from medverse.registration.transform import Registration

__all__ = ["ContextRegistrar"]

logger = logging.getLogger(__name__)


class ContextRegistrar:
    """Registers a context case onto a target case and warps arrays with it.

    Each pair is registered once per process (kept in memory) and, with a ``cache``, once ever
    (the registration cache is keyed by content, and training subjects are deterministic).
    Registration runs on each case's first modality, whatever modality the episode uses: one
    registration per pair of subjects.

    Args:
        cache: the on-disk registration cache, or None (register in every new process).
        engine: registration engine (``"ants"`` or ``"sitk"``).
        kind: ``"deformable"`` (as ``--align deformable``) or ``"affine"``.
    """

    def __init__(
        self,
        cache: RegistrationCache | None = None,
        *,
        engine: str = "ants",
        kind: str = "deformable",
    ) -> None:
        self.cache = cache
        self.engine = engine
        self.kind = kind
        self._memory: dict[tuple, Registration] = {}

    def __repr__(self) -> str:
        return (
            f"ContextRegistrar(cache={self.cache!r}, engine={self.engine!r}, kind={self.kind!r}, "
            f"pairs in memory={len(self._memory)})"
        )

    def registration(self, target: Case, context: Case) -> Registration:
        """The registration of ``context`` onto ``target``."""
        key = (target.name, target.shape, context.name, context.shape)
        reg = self._memory.get(key)
        if reg is None:
            reg = register(
                _volume(target),
                _volume(context),
                kind=self.kind,
                engine=self.engine,
                cache=self.cache,
            )
            self._memory[key] = reg
        return reg

    def __call__(self, target: Case, context: Case, arrays: np.ndarray) -> np.ndarray:
        """``(N, *context.shape)`` arrays warped linearly onto ``target``'s grid."""
        return self.registration(target, context).warp(arrays)

    def prepare(self, cases: Sequence[Case]) -> int:
        """Register every ordered pair of ``cases`` now (fills the cache); returns the count."""
        count = 0
        for target, context in itertools.permutations(cases, 2):
            self.registration(target, context)
            count += 1
        logger.info("registered %d context/target pairs", count)
        return count


def _volume(case: Case) -> Volume:
    return Volume(np.asarray(case.images[0], dtype=np.float32), case.affine, name=case.name)
