"""Tests for medverse.io.context: ContextPair (one example), Context (the set of one query) and its
task guessing."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medverse.errors import InputError
from medverse.io import ContextPair, Volume, write_volume
from medverse.io.context import (
    Context,
    dataset_label_names,
    looks_like_labels,
    swapped_pair,
)

SHAPE = (8, 8, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32)


def _mask(*values: int) -> np.ndarray:
    """A cube of each label value in turn along the first axis; zero elsewhere."""
    mask = np.zeros(SHAPE, dtype=np.float32)
    for i, value in enumerate(values):
        mask[2 * i : 2 * i + 2, 2:6, 2:6] = value
    return mask


def _pair(output: np.ndarray, kind: str = "label", seed: int = 0) -> ContextPair:
    return ContextPair(
        Volume(_image(seed), AFFINE, name=f"image_{seed}"),
        Volume(output, AFFINE, name=f"output_{seed}", kind=kind),
        output_kind=kind,
    )


def _write(folder: Path, name: str, array: np.ndarray) -> Path:
    path = folder / name
    write_volume(path, array, AFFINE)
    return path


def _affine(diagonal: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.diag([*diagonal, 1.0])
    affine[:3, 3] = origin
    return affine


# ------------------------------------------------------------------------------ ContextPair


def test_from_files_reads_a_pair(tmp_path: Path, make_sphere: Callable[..., np.ndarray]) -> None:
    affine = _affine((-0.8, -1.2, 2.5), (10.0, 20.0, -30.0))
    image = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    mask = make_sphere((20, 24, 16), affine, (3.0, -5.0, -12.0), 6.0)
    assert mask.sum() > 0
    write_volume(tmp_path / "img.nii.gz", image, affine)
    write_volume(tmp_path / "seg.nrrd", mask, affine, dtype="uint8")

    pair = ContextPair.from_files(tmp_path / "img.nii.gz", tmp_path / "seg.nrrd")

    assert pair.output_kind == "label"
    assert pair.output.kind == "label"
    assert pair.name == str(tmp_path / "img.nii.gz")
    np.testing.assert_array_equal(pair.image.array, image)
    np.testing.assert_array_equal(pair.output.array, mask)


def test_from_files_refuses_different_grids_naming_both(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((20, 24, 16))
    write_volume(tmp_path / "img.nii.gz", image, np.eye(4))
    write_volume(tmp_path / "seg.nii.gz", image[:, :, :15] > 0.5, np.eye(4))

    with pytest.raises(InputError, match="not on the same voxel grid") as info:
        ContextPair.from_files(tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz")

    assert str(tmp_path / "img.nii.gz") in str(info.value)
    assert str(tmp_path / "seg.nii.gz") in str(info.value)
    assert "(20,24,16)" in str(info.value) and "(20,24,15)" in str(info.value)
    # within a pair resampling is no cure: the hint is not the --no-resample one
    assert "must share one voxel grid" in str(info.value) and "resample" not in str(info.value)


def test_from_files_refuses_a_shifted_grid(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((20, 24, 16))
    write_volume(tmp_path / "img.mha", image, np.eye(4))
    write_volume(tmp_path / "seg.mha", image > 0.5, _affine((1.0, 1.0, 1.0), (0.0, 0.0, 1.0)))
    with pytest.raises(InputError, match="affine differs"):
        ContextPair.from_files(tmp_path / "img.mha", tmp_path / "seg.mha")


def test_empty_mask_names_the_mask_file(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((20, 24, 16))
    write_volume(tmp_path / "img.nii.gz", image, np.eye(4))
    write_volume(tmp_path / "empty_seg.nii.gz", np.zeros((20, 24, 16), np.uint8), np.eye(4))
    with pytest.raises(InputError, match="no foreground voxel") as info:
        ContextPair.from_files(tmp_path / "img.nii.gz", tmp_path / "empty_seg.nii.gz")
    assert str(tmp_path / "empty_seg.nii.gz") in str(info.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(np.nan, "1 NaN and 0 Inf"), (np.inf, "0 NaN and 1 Inf")],
)
def test_non_finite_image_names_the_file(tmp_path: Path, bad: float, message: str) -> None:
    image = np.random.default_rng(0).random((20, 24, 16))
    image[3, 4, 5] = bad
    write_volume(tmp_path / "img.nii.gz", image, np.eye(4))
    write_volume(tmp_path / "seg.nii.gz", image > 0.5, np.eye(4))
    with pytest.raises(InputError, match=message) as info:
        ContextPair.from_files(tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz")
    assert str(tmp_path / "img.nii.gz") in str(info.value)


def test_constant_output_image_is_refused(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((20, 24, 16))
    write_volume(tmp_path / "t1.nii.gz", image, np.eye(4))
    write_volume(tmp_path / "t2.nii.gz", np.ones_like(image), np.eye(4))
    with pytest.raises(InputError, match="constant image") as info:
        ContextPair.from_files(tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz", output_kind="image")
    assert str(tmp_path / "t2.nii.gz") in str(info.value)
    with pytest.raises(InputError, match="output_kind must be one of 'label', 'image'"):
        ContextPair.from_files(tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz", output_kind="mask")


# ----------------------------------------------------------------------- looks_like_labels


def test_looks_like_labels() -> None:
    assert looks_like_labels(_mask(1, 2, 3))
    assert looks_like_labels(np.arange(128.0))  # 127 labels + background
    assert not looks_like_labels(np.arange(129.0))  # 128 labels: an integer image
    assert not looks_like_labels(_mask(1) + 0.5)  # not integer valued
    assert not looks_like_labels(_mask(1) - 1.0)  # negative values
    assert not looks_like_labels(np.zeros((0, 4, 4)))


# ---------------------------------------------------------------------------- swapped_pair


def test_swapped_pair_counts_the_values_of_an_integer_image_beside_a_continuous_output() -> None:
    assert swapped_pair(_mask(1, 2), _image()) == 3  # 0, 1, 2
    assert swapped_pair(_image(), _mask(1, 2)) == 0  # the right order
    assert swapped_pair(_mask(1, 2), _mask(1)) == 0  # both integer: nothing to say
    assert swapped_pair(np.arange(18.0), np.linspace(0, 1, 18)) == 0  # 18 values: an image
    assert swapped_pair(np.arange(17.0), np.linspace(0, 1, 17)) == 17
    assert swapped_pair(np.zeros(0), np.zeros(0)) == 0


# --------------------------------------------------------------------- dataset_label_names


def test_dataset_label_names_reads_v1_and_v2_and_skips_regions() -> None:
    v2 = {"labels": {"liver": 2, "background": 0, "region": [1, 2], "flag": True}}
    assert dataset_label_names(v2) == {0: "background", 2: "liver"}
    assert list(dataset_label_names(v2)) == [0, 2]  # sorted by value
    v1 = {"labels": {"1": "liver", "0": "background", "x": "ignored"}}
    assert dataset_label_names(v1) == {0: "background", 1: "liver"}
    assert dataset_label_names({}) == {}
    assert dataset_label_names({"labels": ["background", "liver"]}) == {}


# ---------------------------------------------------------------------------------- Context


def test_context_needs_a_pair() -> None:
    with pytest.raises(InputError, match="no context pairs given.*--context IMAGE OUTPUT"):
        Context([])


def test_context_refuses_an_unknown_task_listing_the_choices() -> None:
    with pytest.raises(InputError, match="task must be one of 'segmentation', 'image'; got 'auto'"):
        Context([_pair(_mask(1))], task="auto")
    with pytest.raises(ValueError, match="'segmentaton'"):  # InputError is a ValueError
        Context([_pair(_mask(1))], task="segmentaton")


def test_context_collects_the_labels_of_every_output() -> None:
    context = Context([_pair(_mask(3), seed=0), _pair(_mask(1, 5), seed=1)])
    assert context.labels == (1, 3, 5)
    assert len(context) == 2
    assert [pair.image.name for pair in context] == ["image_0", "image_1"]


def test_context_keeps_given_labels_and_finds_none_for_images() -> None:
    assert Context([_pair(_mask(1, 2))], labels=(2,)).labels == (2,)
    image = Context([_pair(_image(5), kind="image")], task="image")
    assert image.labels == ()


def test_subset_keeps_task_labels_and_a_copy_of_the_names() -> None:
    pairs = [_pair(_mask(1), seed=0), _pair(_mask(1, 2), seed=1), _pair(_mask(2), seed=2)]
    context = Context(pairs, label_names={1: "liver", 2: "tumour"})
    subset = context.subset([2, 0])
    assert [pair.image.name for pair in subset] == ["image_2", "image_0"]
    assert subset.task == "segmentation"
    assert subset.labels == (1, 2)  # pair 2 holds label 2, pair 0 label 1
    subset.label_names[1] = "changed"
    assert context.label_names == {1: "liver", 2: "tumour"}


def test_subset_drops_the_labels_and_names_its_pairs_do_not_hold() -> None:
    pairs = [_pair(_mask(1), seed=0), _pair(_mask(1, 2), seed=1), _pair(_mask(2), seed=2)]
    names = {0: "background", 1: "liver", 2: "tumour", 7: "unused"}
    context = Context(pairs, label_names=names)
    only_liver = context.subset([0])
    assert only_liver.labels == (1,)
    # the name of the dropped label goes; background and names that were never labels stay
    assert only_liver.label_names == {0: "background", 1: "liver", 7: "unused"}
    assert context.subset([2, 1]).label_names == names
    assert context.label_names == names and context.labels == (1, 2)


def test_subset_keeps_a_given_label_restriction() -> None:
    pairs = [_pair(_mask(1), seed=0), _pair(_mask(1, 2), seed=1)]
    context = Context(pairs, labels=(2,), label_names={1: "liver", 2: "tumour"})
    assert context.subset([1]).labels == (2,)  # label 1 is in the pair but was not asked for
    with pytest.raises(InputError, match=r"hold none of the labels \(2,\)"):
        context.subset([0])


def test_subset_of_an_image_task_keeps_no_labels() -> None:
    context = Context([_pair(_image(5), "image", 0), _pair(_image(6), "image", 1)], task="image")
    subset = context.subset([1])
    assert subset.task == "image" and subset.labels == () and subset.label_names == {}
    assert [pair.image.name for pair in subset] == ["image_1"]


# ------------------------------------------------------------------------------- from_files


def test_from_files_detects_the_task(tmp_path: Path) -> None:
    image = _write(tmp_path, "img.nii.gz", _image())
    mask = _write(tmp_path, "mask.nii.gz", _mask(1, 2))
    smooth = _write(tmp_path, "smooth.nii.gz", _image(1) * 2.0 + 0.5)

    segmentation = Context.from_files([(image, mask)])
    assert segmentation.task == "segmentation" and segmentation.labels == (1, 2)
    assert segmentation.pairs[0].output.kind == "label"
    assert segmentation.pairs[0].output_kind == "label"

    # one continuous output makes the whole set an image task
    mixed = Context.from_files([(image, mask), (image, smooth)])
    assert mixed.task == "image" and mixed.labels == ()
    assert {pair.output.kind for pair in mixed} == {"image"}

    forced = Context.from_files([(image, mask)], task="image")
    assert forced.task == "image" and forced.pairs[0].output_kind == "image"


@pytest.mark.parametrize(
    ("values", "task", "what"),
    [
        ((1.0, 0.8), "segmentation", "non-integer"),
        ((1.0, -3.0), "segmentation", "negative"),
        ((1.0, 1e30), "auto", "above 2,147,483,647"),  # integer-valued, so auto says labels
    ],
)
def test_from_files_refuses_a_mask_that_is_no_label_map(
    tmp_path: Path, values: tuple[float, ...], task: str, what: str
) -> None:
    image = _write(tmp_path, "img.nii.gz", _image())
    mask = _write(tmp_path, "mask.nii.gz", _mask(*values))
    with pytest.raises(InputError, match="mask.nii.gz': a segmentation mask holds") as info:
        Context.from_files([(image, mask)], task=task)
    assert what in str(info.value) and "--task image" in str(info.value)


def test_from_files_does_not_modify_the_volumes_it_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The volumes a reader hands over (a cache, a caller's own) keep their kind: the context
    holds label copies of the outputs, not the same objects relabelled."""
    given = {
        "img.nii.gz": Volume(_image(), AFFINE, name="img"),
        "mask.nii.gz": Volume(_mask(1, 2), AFFINE, name="mask"),
    }
    monkeypatch.setattr("medverse.io.context.read_volume", lambda path: given[Path(path).name])
    context = Context.from_files([(tmp_path / "img.nii.gz", tmp_path / "mask.nii.gz")])
    assert context.task == "segmentation" and context.pairs[0].output.kind == "label"
    assert given["mask.nii.gz"].kind == "image" and given["img.nii.gz"].kind == "image"
    output = context.pairs[0].output
    assert output is not given["mask.nii.gz"] and output.name == "mask"
    np.testing.assert_array_equal(output.array, given["mask.nii.gz"].array)
    np.testing.assert_array_equal(output.affine, AFFINE)
    assert context.pairs[0].image is given["img.nii.gz"]  # images are not changed, not copied


def test_from_files_refuses_a_bad_task_before_reading(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="task must be one of 'auto', 'segmentation', 'image'"):
        Context.from_files([(tmp_path / "missing.nii.gz", tmp_path / "gone.nii.gz")], task="seg")


def test_from_files_refuses_a_pair_that_is_not_two_paths(tmp_path: Path) -> None:
    image = _write(tmp_path, "img.nii.gz", _image())
    with pytest.raises(InputError, match="context 1: expected IMAGE OUTPUT, got"):
        Context.from_files([(image, image, image)])  # type: ignore[list-item]


def test_from_files_names_an_option_taken_for_the_output(tmp_path: Path) -> None:
    image = _write(tmp_path, "img.nii.gz", _image())
    with pytest.raises(InputError, match=r"'img.nii.gz' has no OUTPUT .*'--task'"):
        Context.from_files([("img.nii.gz", "--task")])
    assert image.is_file()


def test_from_files_refuses_a_swapped_pair_when_guessing(tmp_path: Path) -> None:
    mask = _write(tmp_path, "mask.nii.gz", _mask(1, 2))
    image = _write(tmp_path, "img.nii.gz", _image())
    with pytest.raises(InputError) as info:
        Context.from_files([(mask, image)])
    message = str(info.value)
    assert "holds 3 integer values" in message and "looks swapped" in message
    assert "mask.nii.gz" in message and "img.nii.gz" in message
    assert "--task image" in message


def test_from_files_only_warns_about_a_swapped_pair_for_a_given_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mask = _write(tmp_path, "mask.nii.gz", _mask(1, 2))
    image = _write(tmp_path, "img.nii.gz", _image())
    with caplog.at_level(logging.WARNING, logger="medverse.io.context"):
        context = Context.from_files([(mask, image)], task="image")
    assert context.task == "image"
    assert any("looks swapped" in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------------------ from_nnunet


def _nnunet(root: Path, cases: dict[str, np.ndarray], channels: int = 1) -> Path:
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for i, (case, mask) in enumerate(cases.items()):
        for channel in range(channels):
            _write(root / "imagesTr", f"{case}_{channel:04d}.nii.gz", _image(10 * i + channel))
        _write(root / "labelsTr", f"{case}.nii.gz", mask)
    return root


def test_from_nnunet_reads_every_case_in_order_with_the_chosen_channel(tmp_path: Path) -> None:
    root = _nnunet(tmp_path, {"b": _mask(2), "a": _mask(1)}, channels=2)
    context = Context.from_nnunet(root, channel=1)
    assert [pair.image.path.name for pair in context] == ["a_0001.nii.gz", "b_0001.nii.gz"]
    np.testing.assert_allclose(context.pairs[0].image.array, _image(11), rtol=1e-6)
    assert context.task == "segmentation" and context.labels == (1, 2)
    assert context.label_names == {}


def test_from_nnunet_honours_the_file_ending(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    write_volume(root / "imagesTr" / "a_0000.nii", _image(), AFFINE)
    write_volume(root / "labelsTr" / "a.nii", _mask(1), AFFINE)
    (root / "dataset.json").write_text(json.dumps({"file_ending": ".nii"}))
    assert len(Context.from_nnunet(root)) == 1


def test_from_nnunet_errors_name_the_folder_or_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="expected an nnU-Net raw folder with imagesTr/"):
        Context.from_nnunet(tmp_path)

    root = _nnunet(tmp_path / "empty", {})
    with pytest.raises(InputError, match=r"labelsTr': no label files ending in \.nii\.gz"):
        Context.from_nnunet(root)

    root = _nnunet(tmp_path / "unmatched", {"a": _mask(1)})
    (root / "imagesTr" / "a_0000.nii.gz").rename(root / "imagesTr" / "b_0000.nii.gz")
    with pytest.raises(InputError, match=r"a\.nii\.gz': no matching image .*a_0000\.nii\.gz"):
        Context.from_nnunet(root)

    root = _nnunet(tmp_path / "unlabelled", {"a": _mask(1), "b": _mask(1)})
    (root / "labelsTr" / "b.nii.gz").unlink()  # imagesTr/b_0000 is left without a label
    with pytest.raises(InputError, match=r"b_0000\.nii\.gz': no label '.*labelsTr/b\.nii\.gz'"):
        Context.from_nnunet(root)

    root = _nnunet(tmp_path / "badjson", {"a": _mask(1)})
    (root / "dataset.json").write_text("{labels: ")
    with pytest.raises(InputError, match=r"dataset\.json': not readable as JSON"):
        Context.from_nnunet(root)
    (root / "dataset.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"dataset\.json': expected a JSON object, got list"):
        Context.from_nnunet(root)


# ------------------------------------------------------------------------------------ join


def test_join_of_file_pairs_and_a_folder_is_what_the_cli_merged_by_hand(tmp_path: Path) -> None:
    # medverse predict --context IMAGE OUTPUT --contexts-from DIR built
    # Context(files.pairs + folder.pairs, files.task, label_names=folder.label_names)
    files = Context.from_files(
        [(_write(tmp_path, "i.nii.gz", _image(5)), _write(tmp_path, "o.nii.gz", _mask(3)))]
    )
    root = _nnunet(tmp_path / "folder", {"a": _mask(1), "b": _mask(2)})
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    folder = Context.from_nnunet(root)
    by_hand = Context(files.pairs + folder.pairs, files.task, label_names=folder.label_names)

    joined = Context.join([files, folder])

    assert joined.pairs == by_hand.pairs  # the same pair objects, files first
    assert (joined.task, joined.labels, joined.label_names) == (
        by_hand.task,
        by_hand.labels,
        by_hand.label_names,
    )
    assert joined.labels == (1, 2, 3) and joined.label_names == {0: "background", 1: "liver"}
    alone = Context.join([folder])  # one source: an equal copy
    assert alone is not folder and alone.pairs == folder.pairs
    assert (alone.task, alone.labels, alone.label_names) == (
        folder.task,
        folder.labels,
        folder.label_names,
    )


def test_join_keeps_every_label_and_merges_the_names() -> None:
    first = Context([_pair(_mask(1, 2))], labels=(1,), label_names={1: "liver", 2: "old"})
    second = Context([_pair(_mask(3), seed=1)], label_names={2: "kidney", 3: "spleen"})
    joined = Context.join([first, second])
    assert joined.labels == (1, 3)  # first's restriction to 1, and second's 3
    assert joined.label_names == {1: "liver", 2: "kidney", 3: "spleen"}  # the later name wins
    assert first.label_names == {1: "liver", 2: "old"}  # nothing joined is modified


def test_join_refuses_nothing_and_different_tasks() -> None:
    with pytest.raises(InputError, match="no contexts to join"):
        Context.join([])
    segmentation = Context([_pair(_mask(1))])
    image = Context([_pair(_image(3), kind="image", seed=1)], task="image")
    with pytest.raises(
        InputError, match=r"different tasks \(context 1: segmentation, context 2: image\).*--task"
    ):
        Context.join([segmentation, image])


# ---------------------------------------------------------------------------- label names


@pytest.mark.parametrize(
    "labels",
    [
        {"background": 0, "liver": 1, "tumour": 2},  # nnU-Net v2: name -> value
        {"0": "background", "1": "liver", "2": "tumour"},  # nnU-Net v1: value -> name
    ],
)
def test_from_nnunet_reads_label_names_from_dataset_json(
    tmp_path: Path, make_sphere: Callable[..., np.ndarray], labels: dict
) -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / folder).mkdir()
    image = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    mask = make_sphere((16, 16, 16), affine, (15.0, 15.0, 15.0), 8.0)
    mask += make_sphere((16, 16, 16), affine, (15.0, 15.0, 15.0), 4.0)
    write_volume(tmp_path / "imagesTr" / "case_0000.nii.gz", image, affine)
    write_volume(tmp_path / "labelsTr" / "case.nii.gz", mask, affine, dtype="uint8")
    meta = {"labels": {**labels, "region": [1, 2]}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))

    context = Context.from_nnunet(tmp_path)

    assert context.labels == (1, 2)
    assert context.label_names == {0: "background", 1: "liver", 2: "tumour"}
    assert context.subset([0]).label_names == context.label_names


def test_label_names_are_kept_for_segmentation_only(
    tmp_path: Path, make_sphere: Callable[..., np.ndarray]
) -> None:
    affine = np.eye(4)
    image = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32)
    write_volume(tmp_path / "img.nii.gz", image, affine)
    write_volume(tmp_path / "out.nii.gz", image * 2.0 + 0.5, affine)
    write_volume(
        tmp_path / "seg.nii.gz", make_sphere((12, 12, 12), affine, (6.0, 6.0, 6.0), 4.0), affine
    )
    segmentation = Context.from_files(
        [(tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz")], label_names={1: "ball"}
    )
    assert segmentation.task == "segmentation" and segmentation.label_names == {1: "ball"}
    image_task = Context.from_files(
        [(tmp_path / "img.nii.gz", tmp_path / "out.nii.gz")], label_names={1: "ball"}
    )
    assert image_task.task == "image" and image_task.label_names == {}


# ------------------------------------------------------------------------------ old paths


def test_old_module_paths_still_import_for_one_release() -> None:
    import medverse
    import medverse.intensity
    import medverse.io.context as context
    import medverse.io.context_set as old

    assert medverse.Context is Context
    assert (old.Context, old.TASKS) == (Context, context.TASKS)
    assert old.dataset_label_names is dataset_label_names
    assert old.looks_like_labels is looks_like_labels and old.swapped_pair is swapped_pair
    assert context.normalize_intensity is medverse.intensity.normalize_intensity
