"""The direct Part 10 writer gives pydicom's bytes: pydicom's test files, and document values fuzzed."""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import io
import json
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from openhi.dicom import part10_writer
from openhi.dicom.document import document_from_instances
from openhi.dicom.instance import InstanceRejected, process_instance
from openhi.dicom.instance_view import InstanceView, iter_instance_views
from openhi.dicom.part10 import rebuild, write_part10
from openhi.dicom.part10_writer import Unsupported


def _pydicom(view: InstanceView, frames: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    write_part10(view, frames.__getitem__, out)
    return out.getvalue()


def _imported(path: str) -> list[tuple[InstanceView, dict[str, bytes]]]:
    processed = process_instance(Path(path).read_bytes())
    doc = json.loads(json.dumps(document_from_instances("d" * 32, "i" * 32, [processed])))
    frames = {f.frame_id: f.data for f in processed.frames}
    return [(view, frames) for view in iter_instance_views(doc)]


def _importable() -> list[str]:
    return sorted(p for p in get_testdata_files("*.dcm"))


@pytest.mark.parametrize("path", _importable(), ids=lambda p: Path(p).name)
def test_pydicom_test_files_are_written_as_pydicom_writes_them(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            imported = _imported(path)
        except InstanceRejected as exc:  # a file the import refuses (a FAILURE entry): nothing to write
            assert exc.exception_type == "ValidationException" and exc.message
            return
        for view, frames in imported:
            try:
                want = _pydicom(view, frames)
            except Exception:
                with pytest.raises(Unsupported):
                    part10_writer.write(view, frames.__getitem__, view.stored_transfer_syntax)
                continue
            try:
                got = part10_writer.write(view, frames.__getitem__, view.stored_transfer_syntax)
            except Unsupported:
                assert rebuild(view, frames.__getitem__) == want  # pydicom's path
                continue
            assert got == want
            assert rebuild(view, frames.__getitem__) == want


#: keyword or hex key -> VR (hex keys: recorded in DICOMVRs; "XX" is not a VR)
_KEYS = {
    "PatientName": "PN",
    "PatientID": "LO",
    "ImageComments": "LT",
    "AccessionNumber": "SH",
    "ImageType": "CS",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "AcquisitionDateTime": "DT",
    "PatientAge": "AS",
    "RetrieveAETitle": "AE",
    "RetrieveURL": "UR",
    "SliceThickness": "DS",
    "ImagePositionPatient": "DS",
    "InstanceNumber": "IS",
    "Rows": "US",
    "SmallestImagePixelValue": "US or SS",
    "LUTDescriptor": "US or SS",
    "FrameIncrementPointer": "AT",
    "TextValue": "UT",
    "StrainAdditionalInformation": "UC",
    "ReferencedSOPInstanceUID": "UI",
    "FloatPixelPaddingValue": "FL",
    "DoubleFloatPixelPaddingValue": "FD",
    "SimpleFrameList": "UL",
    "SelectorSLValue": "SL",
    "SelectorSVValue": "SV",
    "SelectorUVValue": "UV",
    "SelectorSSValue": "SS",
    "EncapsulatedDocument": "OB",
    "FloatPixelData": "OF",
    "RedPaletteColorLookupTableData": "OW",
    "SpecificCharacterSet": "CS",
    "SOPInstanceUID": "UI",
    "PhotometricInterpretation": "CS",
    "ReferencedImageSequence": "SQ",
    "FileMetaInformationVersion": "OB",
    "SourceApplicationEntityTitle": "AE",
    "DataSetTrailingPadding": "OB",
    "00091010": "LO",
    "00091011": "UN",
    "00091012": "OB",
    "00091013": "SQ",
    "00091014": "DS",
    "00091015": "US",
    "00090010": "LO",
    "00190000": "UL",
    "00091016": "XX",
}
_STRINGS = [
    *("", " ", "A", "AB", "abc ", " lead", "a\\b", "a\\", "\\", "Doe^John", "Doe^John=", "Doe=Jo"),
    *("é", "日本", "x" * 70000, "1.2.3", " 1.2.3 ", "1.2\\ 3.4", "\x00", "12", "-5", "1.5", "NaN"),
]
_OTHERS = [0, 1, -1, 65535, 65536, -40000, 2**40, 1.5, True, "0x10", "00100010"]
_CHARSETS = ["ISO_IR 192", ["ISO_IR 100"], "ISO_IR 100", ["", "ISO 2022 IR 87"], "GB18030", None]


def _random_value(rng: random.Random, vr: str) -> Any:
    roll = rng.random()
    if roll < 0.08:
        return None
    if roll < 0.12:
        return []
    if vr in ("OB", "OW", "OF", "UN"):
        raw = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 9])))
        return rng.choice([base64.b64encode(raw).decode(), "@@", 5])
    if vr == "SQ":
        return [_random_attributes(rng, 2) for _ in range(rng.randrange(3))] + [5] * (rng.random() < 0.1)
    pool = _STRINGS + _OTHERS
    if rng.random() < 0.4:
        return [rng.choice(pool) for _ in range(rng.randrange(1, 4))]
    return rng.choice(pool)


def _random_attributes(rng: random.Random, most: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(rng.randrange(1, most + 2)):
        key = rng.choice(list(_KEYS))
        if (_KEYS[key] == "SQ" and rng.random() < 0.5) or (
            key == "FileMetaInformationVersion" and rng.random() < 0.8
        ):
            continue
        out[key] = _random_value(rng, _KEYS[key].split(" ")[0])
    return out


@functools.cache
def _fuzz_bases() -> list[tuple[InstanceView, dict[str, bytes]]]:
    bases = []
    for name in ("CT_small.dcm", "SC_rgb_small_odd.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        path = get_testdata_file(name, download=False)
        if path is not None:
            bases.extend(_imported(str(path)))
    return bases


@pytest.mark.parametrize("seed", range(4))
def test_fuzzed_values_are_written_as_pydicom_writes_them_or_left_to_it(seed: int) -> None:
    """Random document values (valid or not) on real instances: the writer gives pydicom's bytes, or
    raises Unsupported (never another error, never bytes where pydicom fails)."""
    rng = random.Random(seed)
    bases = _fuzz_bases()
    if not bases:
        pytest.skip("pydicom's test files are not bundled")
    written = 0
    memo: part10_writer.Memo = {}  # shared by every fuzzed instance: what it remembers must fit each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(400):
            view, frames = rng.choice(bases)
            attributes = copy.deepcopy(view.attributes)
            attributes.update(_random_attributes(rng, rng.choice([0, 1, 1, 2, 4])))
            if rng.random() < 0.4:
                attributes["SpecificCharacterSet"] = rng.choice(_CHARSETS)
            vrs = dict(view.vrs)
            vrs.update({k: vr for k, vr in _KEYS.items() if k[0].isdigit() and rng.random() < 0.7})
            fuzzed = dataclasses.replace(view, attributes=attributes, vrs=vrs)
            try:
                want: bytes | None = _pydicom(fuzzed, frames)
            except Exception:
                want = None
            try:
                got = part10_writer.write(fuzzed, frames.__getitem__, fuzzed.stored_transfer_syntax)
            except Unsupported:
                continue
            assert got == want
            first = frames[fuzzed.frame_ids[0]] if fuzzed.frame_ids else b""
            shape = part10_writer.layout(fuzzed, fuzzed.stored_transfer_syntax, first.__bytes__, memo)
            assert got.startswith(shape.head) and got.endswith(shape.tail)
            written += 1
    assert written > 100


def test_the_memo_tells_equal_looking_values_apart() -> None:
    """Values that compare equal but are written differently (-0.0 and 0.0, True and 1) are not mixed up
    by the memo the instances of one answer share."""
    path = get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's test files are not bundled")
    view, frames = _imported(str(path))[0]
    memo: part10_writer.Memo = {}
    first = frames[view.frame_ids[0]]
    for values in (
        {"FloatPixelPaddingValue": 0.0},
        {"FloatPixelPaddingValue": -0.0},
        {"ImageComments": True},
    ):
        for extra in (values, {k: 1 if v is True else v for k, v in values.items()}):
            fuzzed = dataclasses.replace(view, attributes={**view.attributes, **extra})
            shared = part10_writer.layout(fuzzed, fuzzed.stored_transfer_syntax, first.__bytes__, memo)
            alone = part10_writer.layout(fuzzed, fuzzed.stored_transfer_syntax, first.__bytes__)
            assert shared == alone, extra
