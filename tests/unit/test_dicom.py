"""DICOM in image columns (issue 17): Hounsfield units as pydicom computes them, windows, MONOCHROME1
inverted, the file's own window by default, multi-frame files, sizes from the header, and no patient
tag in a run directory."""

import io

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_rescale  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from mmfit.config import WINDOWS, ImageConfig  # noqa: E402
from mmfit.data.modalities.image import (DecodeError, ImageProcessor, apply_window, dicom_image,  # noqa: E402
                                         dicom_pixels, dicom_series, image_size, is_dicom)

PATIENT = "Doe^Jane"


def _ct_slice(values: np.ndarray, photometric: str = "MONOCHROME2", window=None, frames: int = 1,
              z: float = None, instance: int = None, series: str = "1.2.3.4") -> bytes:
    """A CT DICOM file holding `values` in HU (stored as value + 1024, intercept -1024); `z`: its
    position along an axial series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT, "123-45-678", "CT"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    stored = (np.asarray(values) + 1024).astype(np.uint16)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.SeriesInstanceUID = series
    if z is not None:
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [-100.0, -100.0, z], [1, 0, 0, 0, 1, 0]
    if instance is not None:
        ds.InstanceNumber = instance
    ds.PixelData = stored.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _tissues() -> np.ndarray:
    a = np.full((64, 64), -1000.0)  # air
    a[8:56, 8:56] = 40  # soft tissue
    a[20:30, 20:30] = -700  # lung
    a[40:50, 10:54] = 1000  # bone
    return a


def test_hounsfield_units_match_pydicom_on_its_shipped_ct_slice():
    path = get_testdata_file("CT_small.dcm")
    data = open(path, "rb").read()
    assert is_dicom(data)
    hu, _ = dicom_pixels(data)
    ds = pydicom.dcmread(path)
    assert np.array_equal(hu, apply_rescale(ds.pixel_array, ds))
    img = np.asarray(dicom_image(data, "soft_tissue"))
    assert np.array_equal(img, apply_window(hu, *WINDOWS["soft_tissue"]))
    out = ImageProcessor("scan", ImageConfig(size=64)).decode_bytes(data)
    assert out.shape == (3, 64, 64) and out.std() > 10


def test_windows_show_what_they_are_for_and_monochrome1_is_inverted():
    data = _ct_slice(_tissues())
    lung = np.asarray(dicom_image(data, "lung"))
    bone = np.asarray(dicom_image(data, "bone"))
    # the lung window tells air from lung; the bone window saturates neither soft tissue nor bone
    assert lung[2, 2] < lung[24, 24] < lung[12, 12]
    assert bone[12, 12] < bone[44, 30] < 255
    inverted = np.asarray(dicom_image(_ct_slice(_tissues(), "MONOCHROME1"), "lung"))
    assert np.array_equal(inverted, 255 - lung)


def test_auto_uses_the_files_own_window_else_percentiles():
    with_window = np.asarray(dicom_image(_ct_slice(_tissues(), window=(40, 400)), "auto"))
    assert np.array_equal(with_window, apply_window(_tissues(), -160, 240))
    without = np.asarray(dicom_image(_ct_slice(_tissues()), "auto"))
    levels = [int(without[p]) for p in ((2, 2), (24, 24), (12, 12), (44, 30))]  # air, lung, tissue, bone
    assert levels == sorted(levels) and len(set(levels)) == 4


def test_a_multi_frame_file_gives_its_middle_frame_and_its_size():
    vol = np.stack([np.full((32, 48), v, float) for v in (-1000, 0, 500)])
    data = _ct_slice(vol, frames=3)
    assert image_size(data) == (48, 32, 3)
    hu, _ = dicom_pixels(data)
    assert hu.shape == (3, 32, 48)
    img = np.asarray(dicom_image(data, [-1000, 1000]))
    assert img.shape == (32, 48) and int(img[0, 0]) == 128  # 0 HU, the middle frame


def test_a_shuffled_series_is_reassembled_in_order(tmp_path):
    """Seven axial slices written under random names with scrambled instance numbers: their order is
    their position along the slices' normal; an image column reading the folder gets the middle one."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "series"
    folder.mkdir()
    order = rng.permutation(7)
    for k, i in enumerate(order):  # slice i at z = -40 + 2.5 i mm holds i * 100 HU
        name = f"{rng.integers(10**8):08d}.dcm"
        (folder / name).write_bytes(_ct_slice(np.full((16, 16), i * 100.0), z=-40 + 2.5 * i, instance=int(k)))
    (folder / "README.txt").write_text("not a slice")
    values = [float(dicom_pixels(f)[0][0, 0]) for f in dicom_series(folder)]
    assert values == [i * 100.0 for i in range(7)]
    out = ImageProcessor("ct", ImageConfig(size=16, window=[-1000, 1000])).decode_path(folder)
    assert int(out[0, 8, 8]) == int(apply_window(np.array([300.0]), -1000, 1000)[0])
    (folder / "other.dcm").write_bytes(_ct_slice(np.zeros((16, 16)), z=0.0, series="9.9.9"))
    with pytest.raises(DecodeError, match="2 DICOM series"):
        dicom_series(folder)


def test_a_volume_in_a_video_column_is_n_evenly_spaced_slices_in_order(tmp_path):
    """A video column reads a volume: a multi-frame file, or a shuffled series folder, as
    data.video.frames slices in anatomical order, under one window for the whole volume."""
    from mmfit.config import VideoConfig
    from mmfit.data.modalities.video import VideoProcessor

    window = [-1000, 1000]
    proc = VideoProcessor("ct", VideoConfig(frames=4), ImageConfig(size=16, window=window))
    levels = np.arange(12) * 100.0 - 500  # slice i holds -500 + 100 i HU
    data = _ct_slice(np.stack([np.full((16, 16), v) for v in levels]), frames=12)
    x = proc.decode_bytes(data)
    assert x.shape == (4, 3, 16, 16)
    # slices 1, 4, 7, 10 (the middle of 4 equal segments of 12)
    assert [int(f[0, 8, 8]) for f in x] == [int(v) for v in apply_window(levels[[1, 4, 7, 10]], *window)]
    rng = np.random.default_rng(1)
    folder = tmp_path / "series"
    folder.mkdir()
    for k, i in enumerate(rng.permutation(9)):  # slice i at z = 2.5 i mm holds i * 100 HU
        (folder / f"{rng.integers(10**8):08d}.dcm").write_bytes(
            _ct_slice(np.full((16, 16), i * 100.0), z=2.5 * i, instance=int(k)))
    y = proc.decode_path(folder)
    # slices 1, 3, 5, 7 of 9, in anatomical order whatever the files' names and instance numbers
    assert [int(f[0, 8, 8]) for f in y] == [int(v) for v in apply_window(np.array([100.0, 300, 500, 700]), *window)]
    auto = VideoProcessor("ct", VideoConfig(frames=3), ImageConfig(size=16, window="auto")).decode_path(folder)
    assert int(auto[0, 0, 8, 8]) < int(auto[1, 0, 8, 8]) < int(auto[2, 0, 8, 8])  # one window: levels kept apart


def test_broken_dicom_is_a_clear_error_without_patient_data():
    data = _ct_slice(_tissues())
    with pytest.raises(DecodeError, match="cannot decode DICOM") as e:
        ImageProcessor("scan", ImageConfig(size=32)).decode_bytes(data[: len(data) // 2])
    assert PATIENT not in str(e.value) and "123-45-678" not in str(e.value)


def test_no_patient_tag_reaches_the_run_directory(tmp_path):
    import pandas as pd
    from rich.console import Console

    from mmfit import api

    rng = np.random.default_rng(0)
    (tmp_path / "scans").mkdir()
    rows = []
    for i in range(16):
        a = _tissues() + rng.normal(0, 20, (64, 64)) + (300 if i % 2 else 0) * (np.arange(64) > 32)
        (tmp_path / "scans" / f"{i}.dcm").write_bytes(_ct_slice(a))
        rows.append({"scan": f"scans/{i}.dcm", "y": "a" if i % 2 else "b"})
    series = tmp_path / "scans" / "series"  # one row's scan is a folder of slices
    series.mkdir()
    for z in range(3):
        (series / f"s{z}.dcm").write_bytes(_ct_slice(_tissues(), z=float(z)))
    rows.append({"scan": "scans/series", "y": "b"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    cfg = {"data": {"manifest": str(tmp_path / "m.csv"), "columns": {"scan": "image"},
                    "targets": {"y": "classification"}, "image": {"size": 32, "window": "soft_tissue"},
                    "split": {"val": 0.25, "test": 0.25}},
           "model": {"dim": 16, "encoders": {"image": {"name": "scratch", "layers": 1, "patch": 8}}},
           "train": {"epochs": 1, "batch_size": 8, "output_dir": str(tmp_path / "runs")}}
    run = api.train(cfg, console=Console(quiet=True))
    for f in run.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert b"Doe" not in blob and b"123-45-678" not in blob, f
