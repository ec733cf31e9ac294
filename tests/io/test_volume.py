"""Tests for medverse.io.volume: formats, affines, bad inputs and atomic writes."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

import medverse.io.volume as volume_module
from medverse.errors import InputError
from medverse.io import Volume, label_names_path, read_volume, write_label_names, write_volume

SINGLE_FILE = (".nii", ".nii.gz", ".nrrd", ".mha")
ALL_FORMATS = (*SINGLE_FILE, ".nhdr", ".mhd")


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("extension", ALL_FORMATS)
def test_round_trip_keeps_values_affine_and_voxel_order(
    tmp_path: Path, extension: str, affine: np.ndarray, volume_array: np.ndarray
) -> None:
    path = write_volume(tmp_path / f"out{extension}", volume_array, affine)
    assert path == tmp_path / f"out{extension}"

    volume = read_volume(path)

    assert volume.array.dtype == np.float32
    assert volume.shape == volume_array.shape  # never reoriented
    np.testing.assert_array_equal(volume.array, volume_array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5, rtol=0)
    assert volume.orientation == nib.aff2axcodes(affine)
    assert volume.path == path
    assert volume.name == str(path)


@pytest.mark.parametrize("extension", (".nii.gz", ".nrrd", ".mha"))
def test_spec_affine_round_trips_within_1e_5(tmp_path: Path, extension: str) -> None:
    affine = np.diag([0.8, -1.2, 2.5, 1.0])
    affine[:3, 3] = (-91.3, 126.7, -72.1)
    data = np.arange(20 * 24 * 16, dtype=np.float32).reshape(20, 24, 16)

    volume = read_volume(write_volume(tmp_path / f"spec{extension}", data, affine))

    assert np.abs(volume.affine - affine).max() < 1e-5
    assert volume.spacing == pytest.approx((0.8, 1.2, 2.5), abs=1e-6)
    assert volume.orientation == ("R", "P", "S")


def test_nifti_header_codes_and_units(tmp_path: Path, volume_array: np.ndarray) -> None:
    affine = np.diag([-0.8, -1.2, 2.5, 1.0])
    path = write_volume(tmp_path / "codes.nii.gz", volume_array, affine)
    header = nib.load(path).header
    assert int(header["sform_code"]) == 1
    assert int(header["qform_code"]) == 1
    assert header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(header.get_qform(), affine, atol=1e-6)


@pytest.mark.parametrize("extension", (".mha", ".nrrd"))
def test_lps_file_written_by_simpleitk_matches_nibabel_world(
    tmp_path: Path, extension: str, volume_array: np.ndarray
) -> None:
    """An ITK file (LPS on disk) must give the same RAS affine as nibabel gives for the same
    image saved as NIfTI by ITK, the same voxel order, and agree with ITK's own world points."""
    image = sitk.GetImageFromArray(volume_array.transpose(2, 1, 0).copy())
    image.SetSpacing((0.8, 1.2, 2.5))
    image.SetOrigin((12.5, -40.0, 7.25))
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))  # x flipped in LPS: "RPS"-ish
    sitk.WriteImage(image, str(tmp_path / f"itk{extension}"))
    sitk.WriteImage(image, str(tmp_path / "itk.nii.gz"))

    ours = read_volume(tmp_path / f"itk{extension}")
    reference = nib.load(tmp_path / "itk.nii.gz")

    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(ours.array, np.asarray(reference.dataobj, dtype=np.float32))
    index = (3, 5, 7)
    lps = np.array(image.TransformIndexToPhysicalPoint(index))
    ras = ours.affine @ np.array([*index, 1.0])
    np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)


def test_affine_matches_torchio(tmp_path: Path, volume_array: np.ndarray) -> None:
    torchio = pytest.importorskip("torchio")
    affine = np.diag([-0.8, 1.2, 2.5, 1.0])
    affine[:3, 3] = (5.0, -6.0, 7.0)
    for extension in (".mha", ".nrrd", ".nii.gz"):
        path = write_volume(tmp_path / f"tio{extension}", volume_array, affine)
        reference = torchio.ScalarImage(path)
        np.testing.assert_allclose(read_volume(path).affine, reference.affine, atol=1e-5)
        np.testing.assert_array_equal(read_volume(path).array, reference.data[0].numpy())


@settings(max_examples=15, deadline=None)
@given(
    spacing=st.tuples(*[st.floats(0.2, 5.0) for _ in range(3)]),
    signs=st.tuples(*[st.sampled_from((-1.0, 1.0)) for _ in range(3)]),
    offset=st.tuples(*[st.floats(-300.0, 300.0) for _ in range(3)]),
    extension=st.sampled_from((".nii.gz", ".nrrd", ".mha")),
)
def test_affine_survives_round_trip_property(
    spacing: tuple[float, float, float],
    signs: tuple[float, float, float],
    offset: tuple[float, float, float],
    extension: str,
) -> None:
    affine = np.diag([*(np.array(spacing) * signs), 1.0])
    affine[:3, 3] = offset
    data = np.random.default_rng(1).random((5, 6, 4), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        volume = read_volume(write_volume(Path(folder) / f"p{extension}", data, affine))
    # NIfTI stores the affine in float32: ~6e-8 relative, so 1e-4 mm at 300 mm.
    np.testing.assert_allclose(volume.affine, affine, atol=1e-4, rtol=1e-6)
    np.testing.assert_array_equal(volume.array, data)


def test_labels_are_float32_and_kind_is_kept(tmp_path: Path) -> None:
    labels = np.zeros((20, 24, 16), dtype=np.uint8)
    labels[5:10, 5:10, 5:10] = 3
    path = write_volume(tmp_path / "seg.nii.gz", labels, np.eye(4))
    assert nib.load(path).get_data_dtype() == np.uint8

    volume = read_volume(path, kind="label", name="seg")

    assert volume.array.dtype == np.float32
    assert volume.kind == "label"
    assert volume.name == "seg"
    assert set(np.unique(volume.array)) == {0.0, 3.0}


# -------------------------------------------------------------------------------- DICOM


def _write_dicom_series(
    folder: Path,
    data: np.ndarray,
    spacing: tuple[float, float, float],
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1",
) -> sitk.Image:
    """Write ``data`` ``(X, Y, Z)`` as one int16 slice per file, like a scanner would."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin((-20.0, 30.0, 100.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.99",
            "0020|000e": series_uid,
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in direction[:3] + direction[3:6]),
            "0018|0050": f"{spacing[2]:.6f}",
            "0008|0018": f"{series_uid}.{z + 1}",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice_{z:03d}.dcm"))
        writer.Execute(slice_)
    return image


def test_dicom_series_folder_reads_with_shape_spacing_and_world(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(-500, 1500, size=(20, 24, 6)).astype(np.int16)
    image = _write_dicom_series(tmp_path / "series", data, (0.7, 0.9, 3.0))

    volume = read_volume(tmp_path / "series")

    assert volume.shape == (20, 24, 6)
    assert volume.spacing == pytest.approx((0.7, 0.9, 3.0), abs=1e-4)
    np.testing.assert_array_equal(volume.array, data.astype(np.float32))
    corner = np.array(image.TransformIndexToPhysicalPoint((19, 23, 5))) * [-1, -1, 1]
    np.testing.assert_allclose(volume.affine @ [19, 23, 5, 1.0], [*corner, 1.0], atol=1e-3)
    assert volume.orientation == ("L", "P", "S")  # DICOM identity direction is LPS


def test_dicom_folder_with_two_series_is_refused(tmp_path: Path) -> None:
    data = np.ones((8, 8, 3), dtype=np.int16)
    data[0, 0, 0] = 2
    _write_dicom_series(tmp_path / "mixed", data, (1.0, 1.0, 2.0), series_uid="1.2.3.1")
    _write_dicom_series(tmp_path / "mixed_b", data, (1.0, 1.0, 2.0), series_uid="1.2.3.2")
    for item in (tmp_path / "mixed_b").iterdir():
        os.replace(item, tmp_path / "mixed" / f"b_{item.name}")

    with pytest.raises(InputError, match=r"2 DICOM series") as info:
        read_volume(tmp_path / "mixed")
    assert str(tmp_path / "mixed") in str(info.value)


def test_folder_without_dicom_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series") as info:
        read_volume(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)


# ------------------------------------------------------------------------------ 4-D files


def test_nifti_4d_with_one_volume_is_squeezed(tmp_path: Path, volume_array: np.ndarray) -> None:
    affine = np.diag([-0.8, 1.2, 2.5, 1.0])
    nib.save(nib.Nifti1Image(volume_array[..., None], affine), tmp_path / "one.nii.gz")

    volume = read_volume(tmp_path / "one.nii.gz")

    assert volume.shape == (20, 24, 16)
    np.testing.assert_array_equal(volume.array, volume_array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)


def test_mha_4d_with_one_volume_is_squeezed(tmp_path: Path, volume_array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(volume_array.transpose(2, 1, 0)[None].copy(), isVector=False)
    assert image.GetDimension() == 4
    image.SetSpacing((0.8, 1.2, 2.5, 1.0))
    sitk.WriteImage(image, str(tmp_path / "one.mha"))

    volume = read_volume(tmp_path / "one.mha")

    assert volume.shape == (20, 24, 16)
    np.testing.assert_array_equal(volume.array, volume_array)
    assert volume.spacing == pytest.approx((0.8, 1.2, 2.5))


# ---------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "shape",
    [(20, 24), (20, 24, 16, 3), (20, 24, 16, 1, 2)],
    ids=["2d", "4d-three-volumes", "5d"],
)
def test_nifti_that_is_not_one_3d_volume_is_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.float32), np.eye(4)), path)

    with pytest.raises(InputError) as info:
        read_volume(path)

    assert f"'{path}': expected a 3-D volume, got shape {shape}" in str(info.value)


def test_itk_2d_and_vector_images_are_refused(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(20, 24, sitk.sitkFloat32), str(tmp_path / "flat.mha"))
    with pytest.raises(InputError, match=r"expected a 3-D volume, got shape \(20, 24\)") as info:
        read_volume(tmp_path / "flat.mha")
    assert str(tmp_path / "flat.mha") in str(info.value)

    vector = sitk.Image([20, 24, 16], sitk.sitkVectorFloat32, 3)
    sitk.WriteImage(vector, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match=r"got shape \(20, 24, 16, 3\)"):
        read_volume(tmp_path / "rgb.nrrd")


def test_truncated_nifti_gz_names_the_file(tmp_path: Path, volume_array: np.ndarray) -> None:
    path = write_volume(tmp_path / "cut.nii.gz", volume_array, np.eye(4))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])

    with pytest.raises(InputError, match="truncated or corrupt") as info:
        read_volume(path)

    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None  # re-raised `from` the library error


@pytest.mark.parametrize("extension", [".nii", ".mha", ".nrrd"])
def test_truncated_uncompressed_files_name_the_file(
    tmp_path: Path, extension: str, volume_array: np.ndarray
) -> None:
    path = tmp_path / f"cut{extension}"
    if extension == ".nii":
        write_volume(path, volume_array, np.eye(4))
    else:
        image = sitk.GetImageFromArray(volume_array.transpose(2, 1, 0).copy())
        sitk.WriteImage(image, str(path), useCompression=False)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])

    with pytest.raises(InputError) as info:
        read_volume(path)

    assert str(path) in str(info.value)


def test_garbage_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 3))
    with pytest.raises(InputError) as info:
        read_volume(path)
    assert str(path) in str(info.value)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "case.nii.gz"
    with pytest.raises(InputError, match="no such file") as info:
        read_volume(path)
    assert str(path) in str(info.value)
    assert "does not exist either" in str(info.value)


@pytest.mark.parametrize(
    ("name", "hint"), [("scan.png", "expected one of"), ("slice.dcm", "pass the folder")]
)
def test_unknown_extension_names_the_file(tmp_path: Path, name: str, hint: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unknown extension") as info:
        read_volume(path)
    assert str(path) in str(info.value)
    assert hint in str(info.value)


def test_label_messages_say_label(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^label '"):
        read_volume(tmp_path / "missing_seg.nii.gz", kind="label")
    with pytest.raises(InputError, match="kind must be one of 'image', 'label'"):
        read_volume(tmp_path / "x.nii.gz", kind="mask")


def test_input_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        read_volume(tmp_path / "missing.nii.gz")


# ----------------------------------------------------------------------------------- write


def test_write_to_missing_folder_is_refused_and_creates_nothing(
    tmp_path: Path, volume_array: np.ndarray
) -> None:
    destination = tmp_path / "not_there" / "out.nii.gz"
    with pytest.raises(InputError, match="does not exist") as info:
        write_volume(destination, volume_array, np.eye(4))
    assert str(tmp_path / "not_there") in str(info.value)
    assert not (tmp_path / "not_there").exists()


@pytest.mark.parametrize("name", ["out.png", "out.dcm", "out"])
def test_write_unknown_extension_is_refused(
    tmp_path: Path, name: str, volume_array: np.ndarray
) -> None:
    with pytest.raises(InputError, match="cannot write extension") as info:
        write_volume(tmp_path / name, volume_array, np.eye(4))
    assert name in str(info.value)
    assert _listing(tmp_path) == []


def test_write_rejects_bad_array_and_affine(tmp_path: Path, volume_array: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"expected a 3-D volume, got shape \(20, 24\)"):
        write_volume(tmp_path / "a.nii.gz", volume_array[..., 0], np.eye(4))
    with pytest.raises(InputError, match="4x4 affine"):
        write_volume(tmp_path / "a.nii.gz", volume_array, np.eye(3))
    with pytest.raises(InputError, match="singular"):
        write_volume(tmp_path / "a.nii.gz", volume_array, np.diag([1.0, 0.0, 1.0, 1.0]))
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("extension", [".nii.gz", ".mha"])
def test_write_uses_a_hidden_temporary_that_keeps_the_extension(
    tmp_path: Path, extension: str, volume_array: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = volume_module._write_file

    def spy(path: Path, *args: object) -> None:
        seen.append(path.name)
        original(path, *args)

    monkeypatch.setattr(volume_module, "_write_file", spy)
    write_volume(tmp_path / f"out{extension}", volume_array, np.eye(4))

    assert len(seen) == 1
    assert seen[0].startswith(".tmp-")
    assert seen[0].endswith(f"-out{extension}")
    assert _listing(tmp_path) == [f"out{extension}"]


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd", ".mhd"])
def test_failed_write_leaves_no_temporary_and_keeps_the_old_file(
    tmp_path: Path, extension: str, volume_array: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = write_volume(tmp_path / f"out{extension}", volume_array, np.eye(4))
    before = _listing(tmp_path)
    original = volume_module._write_file

    def half_then_fail(path: Path, *args: object) -> None:
        original(path, *args)  # the temporary exists and is complete...
        raise OSError("disk full")  # ...then the write fails

    monkeypatch.setattr(volume_module, "_write_file", half_then_fail)
    with pytest.raises(InputError, match="disk full") as info:
        write_volume(destination, volume_array + 1.0, np.eye(4))

    assert str(destination) in str(info.value)
    assert _listing(tmp_path) == before  # no .tmp-* left, nothing new
    np.testing.assert_array_equal(read_volume(destination).array, volume_array)


def test_two_file_formats_write_header_and_data(tmp_path: Path, volume_array: np.ndarray) -> None:
    write_volume(tmp_path / "pair.mhd", volume_array, np.eye(4))
    write_volume(tmp_path / "pair.nhdr", volume_array, np.eye(4))
    names = _listing(tmp_path)
    assert "pair.mhd" in names and "pair.nhdr" in names
    assert not [n for n in names if n.startswith(".tmp-")]
    assert len(names) == 4  # each header has its data file next to it


def test_write_does_not_modify_its_inputs(tmp_path: Path, volume_array: np.ndarray) -> None:
    array = volume_array.astype(np.float64)
    affine = np.diag([-0.8, 1.2, 2.5, 1.0])
    array_before, affine_before = array.copy(), affine.copy()
    write_volume(tmp_path / "x.nrrd", array, affine, dtype="int16")
    np.testing.assert_array_equal(array, array_before)
    np.testing.assert_array_equal(affine, affine_before)


def test_dtype_handling(tmp_path: Path) -> None:
    mask = np.zeros((6, 7, 8), dtype=bool)
    mask[1:3, 2:4, 3:5] = True
    path = write_volume(tmp_path / "mask.nii.gz", mask, np.eye(4))
    assert nib.load(path).get_data_dtype() == np.uint8
    assert read_volume(path).array.sum() == mask.sum()

    values = np.full((6, 7, 8), 2.6)
    path = write_volume(tmp_path / "rounded.nii.gz", values, np.eye(4), dtype=np.int16)
    assert nib.load(path).get_data_dtype() == np.int16
    assert np.all(read_volume(path).array == 3.0)

    path = write_volume(tmp_path / "default.mha", values, np.eye(4))
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkFloat32

    with pytest.raises(InputError, match="outside the range of uint8"):
        write_volume(tmp_path / "big.nii.gz", values * 1000, np.eye(4), dtype="uint8")
    with pytest.raises(InputError, match="NaN or Inf"):
        write_volume(tmp_path / "nan.nii.gz", np.full((2, 2, 2), np.nan), np.eye(4), dtype="int16")


# ---------------------------------------------------------------------------------- Volume


def test_volume_properties_and_repr() -> None:
    affine = np.diag([-0.8, -1.2, 2.5, 1.0])
    volume = Volume(np.zeros((20, 24, 16), dtype=np.float64), affine, name="ct.nii.gz")

    assert volume.array.dtype == np.float32
    assert volume.affine.dtype == np.float64
    assert volume.shape == (20, 24, 16)
    assert volume.spacing == pytest.approx((0.8, 1.2, 2.5))
    assert volume.orientation == ("L", "P", "S")
    assert repr(volume) == (
        "Volume('ct.nii.gz', shape=(20, 24, 16), spacing=(0.8, 1.2, 2.5), orientation=LPS)"
    )
    affine[0, 0] = 5.0
    assert volume.spacing[0] == pytest.approx(0.8)  # the volume holds its own copy


def test_volume_rejects_bad_shapes() -> None:
    with pytest.raises(InputError, match=r"'flat': expected a 3-D volume, got shape \(4, 5\)"):
        Volume(np.zeros((4, 5)), np.eye(4), name="flat")
    with pytest.raises(InputError, match="4x4"):
        Volume(np.zeros((4, 5, 6)), np.eye(3), name="x")


def test_volume_save_round_trip(tmp_path: Path, volume_array: np.ndarray) -> None:
    affine = np.diag([0.5, -0.5, 1.5, 1.0])
    path = Volume(volume_array, affine, name="v").save(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(read_volume(path).array, volume_array)


def test_nifti_without_orientation_warns_at_the_caller(
    tmp_path: Path, volume_array: np.ndarray
) -> None:
    image = nib.Nifti1Image(volume_array, np.eye(4))
    image.set_sform(None, code=0)
    image.set_qform(None, code=0)
    nib.save(image, tmp_path / "bare.nii")

    with pytest.warns(UserWarning, match="neither sform nor qform") as record:
        read_volume(tmp_path / "bare.nii")

    assert str(tmp_path / "bare.nii") in str(record[0].message)
    assert record[0].filename == __file__


# ------------------------------------------------------------------------ label-name sidecar


@pytest.mark.parametrize(
    ("name", "sidecar"),
    [
        ("seg.nii.gz", "seg.labels.json"),
        ("seg.nii", "seg.labels.json"),
        ("case_001.nrrd", "case_001.labels.json"),
        ("liver.v2.mha", "liver.v2.labels.json"),  # only the volume extension goes
    ],
)
def test_label_names_path_takes_the_output_stem(name: str, sidecar: str) -> None:
    assert label_names_path(Path("/out") / name) == Path("/out") / sidecar


def test_write_label_names_names_every_label(tmp_path: Path) -> None:
    path = write_label_names(tmp_path / "seg.nii.gz", [2, 1, 5], {1: "liver", 0: "air"})
    assert path == tmp_path / "seg.labels.json"
    table = json.loads(path.read_text(encoding="utf-8"))
    assert table == {"0": "air", "1": "liver", "2": "label 2", "5": "label 5"}
    assert list(table) == ["0", "1", "2", "5"]  # sorted by value
    default = write_label_names(tmp_path / "other.nrrd", [1])
    assert json.loads(default.read_text()) == {"0": "background", "1": "label 1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.labels.json", "seg.labels.json"]
