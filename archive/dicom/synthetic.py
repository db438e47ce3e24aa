"""Synthetic DICOM instances for the demo data set, tests and benchmarks.

Never real patient data: names, IDs and pixels are generated. Images are
simple phantoms (a body ellipse with lungs and a spine for CT, a head for MR,
a chest for CR, a moving speckle pattern for ultrasound clips) so that a
viewer shows something recognisable and window/level visibly matters.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
}
ROOT = "2.25."


def new_uid() -> str:
    return generate_uid(prefix=None)


@dataclass
class StudySpec:
    patient_name: str = "DOE^JANE"
    patient_id: str = "PAT-0001"
    birth_date: str = "19700101"
    sex: str = "F"
    study_uid: str = field(default_factory=new_uid)
    study_date: str = "20240115"
    study_time: str = "093000"
    accession: str = "ACC0001"
    description: str = "CT CHEST"
    referring: str = "REFERRER^ALICE"
    institution: str = "General Hospital"
    charset: str = "ISO_IR 192"


def phantom(modality: str, size: int, slice_index: int = 0, frame: int = 0) -> np.ndarray:
    """A recognisable test image as stored values (CT: HU + 1024)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2.0
    t = slice_index / 50.0
    if modality == "CT":
        img = np.full((size, size), -1000.0, np.float32)
        body = ((x - c) / (size * 0.42)) ** 2 + ((y - c) / (size * (0.30 + 0.03 * np.sin(6.28 * t)))) ** 2 <= 1
        img[body] = 40.0
        for side in (-1, 1):
            lung = ((x - c - side * size * 0.18) / (size * 0.12)) ** 2 + ((y - c) / (size * (0.14 + 0.05 * t))) ** 2
            img[lung <= 1] = -850.0
        img[(x - c) ** 2 + (y - c - size * 0.2) ** 2 <= (size * 0.05) ** 2] = 700.0
        return np.clip(img + 1024, 0, 4095).astype(np.uint16)
    if modality == "MR":
        r = ((x - c) / (size * 0.38)) ** 2 + ((y - c) / (size * 0.45)) ** 2
        img = np.where(r <= 1, 600 + 300 * np.cos(8 * np.sqrt(r) + t), 0)
        return np.clip(img, 0, 4095).astype(np.uint16)
    if modality == "CR":
        img = 3000 - 1500 * np.exp(-(((x - c) / (size * 0.3)) ** 2 + ((y - c) / (size * 0.35)) ** 2))
        return np.clip(img, 0, 4095).astype(np.uint16)
    # US: 8-bit speckle cone that moves with the frame number
    rng = np.random.default_rng(frame)
    cone = (y > size * 0.1) & (np.abs(x - c) < (y - size * 0.1) * 0.7)
    img = rng.integers(0, 90, (size, size)) * cone + 120 * cone * (np.abs(y - size * (0.4 + 0.02 * frame % 10)) < 6)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_instance(
    spec: StudySpec,
    modality: str = "CT",
    series_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "AXIAL",
    instance_number: int = 1,
    size: int = 64,
    frames: int = 1,
    sop_uid: str | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """One Part 10 instance (Explicit VR Little Endian) as bytes."""
    ds = Dataset()
    ds.SpecificCharacterSet = spec.charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = sop_uid or new_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = spec.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = spec.study_time
    ds.AccessionNumber = spec.accession
    ds.Modality = modality
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = spec.institution
    ds.ReferringPhysicianName = spec.referring
    ds.StudyDescription = spec.description
    ds.SeriesDescription = series_description
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = spec.birth_date
    ds.PatientSex = spec.sex
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = series_uid or new_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = ROOT + str(abs(hash(ds.SeriesInstanceUID)) % 10**30)
    if modality in ("CT", "MR"):
        ds.SliceThickness = "2.5"
        ds.ImagePositionPatient = [-size / 2 * 0.7, -size / 2 * 0.7, -2.5 * (instance_number - 1)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -2.5 * (instance_number - 1)
    ds.PixelSpacing = [0.7, 0.7]
    ds.Rows = ds.Columns = size
    if modality == "US":
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.NumberOfFrames = frames
        ds.FrameTime = "33.3"
        ds.CineRate = 30
        ds.FrameIncrementPointer = 0x00181063
        pixels = np.stack([phantom("US", size, instance_number, f) for f in range(frames)])
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
        elif modality == "MR":
            ds.WindowCenter, ds.WindowWidth = "600", "1200"
        else:
            ds.WindowCenter, ds.WindowWidth = "2048", "4096"
        if frames > 1:
            ds.NumberOfFrames = frames
            pixels = np.stack([phantom(modality, size, instance_number + f) for f in range(frames)])
        else:
            pixels = phantom(modality, size, instance_number)
    ds.PixelData = pixels.tobytes()
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_series(spec: StudySpec, modality: str = "CT", count: int = 3, size: int = 64, **kw: Any) -> list[bytes]:
    """``count`` instances of one new series."""
    series_uid = new_uid()
    return [
        make_instance(spec, modality, series_uid=series_uid, instance_number=i + 1, size=size, **kw)
        for i in range(count)
    ]
