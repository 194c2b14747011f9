"""The pixel workers' warm-up: a synthetic instance that goes through the whole import path."""

from __future__ import annotations

import numpy as np

from openhi.codec.j2k import decode_htj2k
from openhi.core import telemetry
from openhi.dicom.instance import process_instance
from openhi.dicom.warmup import sample_instance, warm_up


def test_sample_instance_is_imported_losslessly_as_htj2k() -> None:
    processed = process_instance(sample_instance(16, 16), "HTJ2K")
    assert processed.instance["StoredTransferSyntaxUID"] == "1.2.840.10008.1.2.4.202"
    assert processed.warnings == []
    (frame,) = processed.frames
    pixels = decode_htj2k(frame.data)
    assert pixels.shape == (16, 16) and pixels.dtype == np.int16
    assert int(pixels.min()) == -100 and int(pixels.max()) == 16 * 16 - 101
    assert processed.patient["PatientID"] == "WARMUP"


def test_warm_up_runs_and_telemetry_warm_is_idempotent() -> None:
    warm_up()
    telemetry.warm()
    telemetry.warm()
