"""Unit tests: DIMSE status mapping, the association allow-list and the SOP class / instance mismatch check."""

from __future__ import annotations

import io

import pydicom

from dicom_factory import make_ct_series
from openhi.core import stow
from openhi.dimse.ae import STORAGE_SYNTAXES, allow_check
from openhi.dimse.statuses import failure_status, warning_status
from openhi.dimse.storage import _mismatch, status


def test_failure_reasons_map_to_c_store_statuses() -> None:
    assert failure_status(stow.OUT_OF_RESOURCES) == 0xA700
    assert failure_status(stow.CANNOT_UNDERSTAND) == 0xC000
    assert failure_status(stow.TRANSFER_SYNTAX_NOT_SUPPORTED) == 0xC122  # a Cxxx: cannot understand
    assert failure_status(stow.STUDY_MISMATCH) == 0xC409
    assert failure_status(stow.PROCESSING_FAILURE) == 0x0110
    assert failure_status(0xA901) == 0xA901
    assert failure_status(0x0122) == 0xC000


def test_warnings_map_to_b_family() -> None:
    assert warning_status([0xB000]) == 0xB000
    assert warning_status([0xB006, 0xB000]) == 0xB006
    assert warning_status([0xB007]) == 0xB007
    assert warning_status([0x0001]) == 0xB000


def test_allow_list_titles_and_networks() -> None:
    assert allow_check([])("ANY", "10.1.2.3")
    titles = allow_check(["MODALITY1", "PACS"])
    assert titles("PACS", "1.2.3.4") and not titles("OTHER", "1.2.3.4")
    nets = allow_check(["10.0.0.0/8", "::1"])
    assert nets("X", "10.9.9.9") and nets("X", "::1") and not nets("X", "192.168.0.1")
    assert nets("X", "::ffff:10.0.0.1")
    both = allow_check(["PACS", "127.0.0.1"])
    assert both("PACS", "127.0.0.1") and not both("PACS", "127.0.0.2") and not both("X", "127.0.0.1")


def test_status_dataset_has_a_short_comment_on_failures_only() -> None:
    assert "ErrorComment" not in status(0)
    failed = status(0xC000, "x" * 100)
    assert failed.Status == 0xC000 and len(failed.ErrorComment) == 64


def test_mismatch_of_sop_class_or_instance_is_a900() -> None:
    data = make_ct_series(1, rows=8, cols=8, seed=3)[0]
    ds = pydicom.dcmread(io.BytesIO(data))
    assert _mismatch(data, ds.SOPClassUID, ds.SOPInstanceUID) is None
    found = _mismatch(data, "1.2.840.10008.5.1.4.1.1.4", ds.SOPInstanceUID)
    assert found is not None and found[0] == 0xA900
    found = _mismatch(data, ds.SOPClassUID, "1.2.3")
    assert found is not None and found[0] == 0xA900
    assert _mismatch(b"not dicom", "1.2", "1.3") is None  # the import core reports what it cannot read


def test_storage_accepts_native_and_compressed_syntaxes() -> None:
    assert STORAGE_SYNTAXES[:2] == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
    for uid in (
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.50",
    ):
        assert uid in STORAGE_SYNTAXES
