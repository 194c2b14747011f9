"""A tiny synthetic instance through the import's pixel path: what a pool process loads before its first file."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from openhi.dicom.instance import process_instance

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")


def sample_instance(rows: int = 16, columns: int = 16) -> bytes:
    """A small 16-bit signed CT slice, Explicit VR Little Endian, as Part 10 bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Warm^Up", "WARMUP", "CT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = (np.arange(rows * columns, dtype="<i2") - 100).tobytes()
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def warm_up(storage_format: str = "HTJ2K") -> None:
    """Run :func:`process_instance` once on :func:`sample_instance`: the first file of a job then costs
    what every other file costs (the codec and pixel-handler modules, pydicom's dictionaries, numpy's
    functions are loaded and initialized here, not while a job waits)."""
    process_instance(sample_instance(), storage_format)
