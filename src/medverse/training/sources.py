"""Where training subjects come from: the data sources of a run, made into datasets.

:func:`build_datasets` turns the ``data`` entries of a
:class:`~medverse.training.config.TrainConfig` (:class:`~medverse.training.config.DataSource`:
``synthetic`` phantoms, ``mni`` subjects on the packaged template, or an nnU-Net folder) into
the training datasets and the held-out validation datasets
(:class:`~medverse.data.datasets.DatasetMix` takes them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from medverse.errors import InputError
from medverse.training.config import DataSource

__all__ = ["build_datasets"]

log = logging.getLogger(__name__)


def _synthetic_cases(source: DataSource, template: int) -> list:
    """Subjects as :func:`~medverse.data.synthesis.write_synthetic_dataset` draws them, then warped."""
    from medverse.data.augment import SpatialAugmentation
    from medverse.data.cases import Case
    from medverse.data.synthesis import draw_anatomy, draw_intensity_table, make_subject

    seed = source.seed + template
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(source.num_classes, rng)
    tables = [
        draw_intensity_table(source.num_classes + 1, rng) for _ in range(source.num_modalities)
    ]
    label_names = {0: "background", 1: "body"}
    label_names.update({k: f"structure_{k}" for k in range(2, source.num_classes + 1)})
    channels = tuple(f"synth{m}" for m in range(source.num_modalities))
    cases = []
    for index in range(source.num_subjects + source.num_val_cases):
        subject_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        subject = make_subject(
            source.shape,
            source.num_classes,
            source.num_modalities,
            subject_seed,
            anatomy=anatomy,
            tables=tables,
        )
        images, labels = list(subject.images), subject.labels
        if source.deformation > 0:
            warp = SpatialAugmentation(
                elastic_seed=subject_seed,
                elastic_num_control_points=4,
                elastic_max_displacement=source.deformation * min(source.shape),
            )
            *images, labels = warp([*images, labels], is_mask=[False] * len(images) + [True])
        cases.append(
            Case(
                name=f"synth_{index:04d}",
                images=np.stack(images).astype(np.float32),
                labels=labels,
                channel_names=channels,
                label_names=label_names,
                spacing=(1.0, 1.0, 1.0),
            )
        )
    return cases


def _open_nnunet(source: DataSource, name: str | None, cases: list[str] | None) -> Any:
    """An :class:`~medverse.data.datasets.NnUNetDataset` for ``source`` (a subset of ``cases``)."""
    from medverse.data.nnunet_raw import NnUNetDataset
    from medverse.data.preprocess import PreprocessConfig

    assert source.path is not None  # DataSource checks it for kind "nnunet"
    return NnUNetDataset(
        source.path,
        name=name,
        cases=cases,
        weight=source.weight,
        preprocess=PreprocessConfig(spacing=source.spacing),
        cache_dir=source.cache_dir,
        labels=list(source.labels) if source.labels is not None else None,
        brain_mask_from_labels=source.brain_mask_from_labels,
        check_shapes=cases is None,
    )


def _add_mni(source: DataSource, train: list, val: list) -> None:
    """The two datasets (tissue, AAL3 regions) of a ``kind: mni`` source, training and held out."""
    from medverse.data.datasets import InMemoryDataset
    from medverse.data.mni import make_mni_cases

    name = source.name or f"mni{source.seed}"
    pairs = [
        make_mni_cases(
            index,
            seed=source.seed,
            base_shape=source.shape,
            voxel_mm=source.voxel_mm,
            deformation=source.deformation,
            tissue_threshold=source.tissue_threshold,
        )
        for index in range(source.num_subjects + source.num_val_cases)
    ]
    # thresholded tissue labels leave partial-volume brain voxels unlabelled: no brain mask
    covers_brain = source.tissue_threshold == 0
    for k, (kind, keep) in enumerate((("tissue", covers_brain), ("regions", False))):
        cases = [pair[k] for pair in pairs]
        options = dict(weight=source.weight / 2, brain_mask_from_labels=keep)
        train.append(
            InMemoryDataset(cases[: source.num_subjects], name=f"{name}_{kind}", **options)
        )
        if source.num_val_cases >= 2:
            val.append(
                InMemoryDataset(cases[source.num_subjects :], name=f"{name}_{kind}_val", **options)
            )


def build_datasets(sources: Sequence[DataSource]) -> tuple[list, list]:
    """Training and validation datasets of every source.

    Returns:
        ``(train, val)``: lists of datasets for :class:`~medverse.data.datasets.DatasetMix`;
        ``val`` holds the held-out cases (``num_val_cases``) and may be empty.

    Raises:
        InputError: an unreadable nnU-Net folder, or too few cases left for training.
    """
    from medverse.data.datasets import InMemoryDataset

    train, val = [], []
    for i, source in enumerate(sources):
        if source.kind == "synthetic":
            for template in range(source.num_templates):
                name = source.name or f"synthetic{source.seed}"
                if source.num_templates > 1:
                    name = f"{name}_{template}"
                cases = _synthetic_cases(source, template)
                weight = source.weight / source.num_templates
                keep = dict(brain_mask_from_labels=source.brain_mask_from_labels)
                train.append(
                    InMemoryDataset(cases[: source.num_subjects], name=name, weight=weight, **keep)
                )
                if source.num_val_cases:
                    val.append(
                        InMemoryDataset(
                            cases[source.num_subjects :], name=f"{name}_val", weight=weight, **keep
                        )
                    )
            continue
        if source.kind == "mni":
            _add_mni(source, train, val)
            continue
        full = _open_nnunet(source, source.name, None)
        names = list(full.case_names)
        keep = len(names) - source.num_val_cases
        if keep < 2:
            raise InputError(
                f"data[{i}] '{source.path}': {len(names)} cases, {source.num_val_cases} held out "
                "for validation leaves fewer than 2 for training; lower num_val_cases"
            )
        if not source.num_val_cases:
            train.append(full)
            continue
        train.append(_open_nnunet(source, full.name, names[:keep]))
        if source.num_val_cases >= 2:
            val.append(_open_nnunet(source, f"{full.name}_val", names[keep:]))
        else:
            log.warning(
                "data[%d] '%s': num_val_cases=1 cannot form an episode (needs >= 2); no validation",
                i,
                source.path,
            )
    return train, val
