"""Deterministic generator of valid values for botocore shapes (every member, patterns and bounds honoured)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.model import Shape

# Hand-picked values for shapes whose pattern a generic generator cannot satisfy.
PATTERNED: dict[str, str] = {
    "Arn": "arn:aws:medical-imaging:us-east-1:123456789012:datastore/" + "a" * 32 + "/imageset/" + "b" * 32,
    "AwsAccountId": "123456789012",
    "ClientToken": "token-1.A_b",
    "DICOMSeriesInstanceUID": "1.2.840.10008.5",
    "DICOMStudyInstanceUID": "1.2.840.10008.4",
    "DatastoreId": "a" * 32,
    "DatastoreName": "my/store#1_x.y-z",
    "ImageFrameId": "c" * 32,
    "ImageSetExternalVersionId": "3",
    "ImageSetId": "b" * 32,
    "JobId": "d" * 32,
    "JobName": "job/name#1_x.y-z",
    "KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/12345678-1234-1234-1234-123456789abc",
    "LambdaArn": "arn:aws:lambda:us-east-1:123456789012:function:my-authorizer:$LATEST",
    "Message": "All good: 3 files - done",
    "MetadataFilePath": "dicom/study 1/metadata.json",
    "NextToken": "eyJvZmZzZXQiOjUwfQ==/+&? token with spaces",
    "RoleArn": "arn:aws:iam::123456789012:role/ImportJobRole",
    "S3Uri": "s3://input-bucket/prefix/with space/",
    "TagKey": "team:owner/x.y",
}

# Patterned shapes that stay valid with a digit appended (so list items differ).
SUFFIXABLE = frozenset({"TagKey", "ClientToken", "DatastoreName", "JobName", "MetadataFilePath", "NextToken"})

TIMESTAMP = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
BLOB = b'{"SchemaVersion":1.1,"Patient":{"DICOM":{"PatientName":"MX^MX"}}}'
STREAM = bytes(range(256)) * 3


def _string(shape: Shape, index: int) -> str:
    meta = shape.metadata
    enum = meta.get("enum")
    if enum:
        return str(enum[index % len(enum)])
    if shape.name in PATTERNED:
        value = PATTERNED[shape.name]
        return f"{value}{index}" if index and shape.name in SUFFIXABLE else value
    if "pattern" in meta:
        raise KeyError(f"shape {shape.name} has a pattern: add a value to PATTERNED")
    on_the_wire = shape.serialization.get("location") in ("header", "uri", "querystring")
    text = f"{shape.name}-value-{index}" if on_the_wire else f"{shape.name}-value-{index} ü"
    low, high = meta.get("min", 0), meta.get("max")
    if len(text) < low:
        text = text.ljust(low, "x")
    if high is not None and len(text) > high:
        text = text[:high]
    return text


def _integer(shape: Shape, index: int) -> int:
    low: int | None = shape.metadata.get("min")
    high: int | None = shape.metadata.get("max")
    value = 7 + index
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return value


def _count(shape: Shape, preferred: int) -> int:
    low: int = shape.metadata.get("min", 0)
    high: int | None = shape.metadata.get("max")
    count = max(preferred, low)
    if high is not None:
        count = min(count, high)
    return count


def generate(shape: Shape, variant: int = 0, index: int = 0) -> Any:
    """A valid value for ``shape``: every member set; a union sets member ``variant % len(members)``."""
    type_name = shape.type_name
    if type_name == "structure":
        members = shape.members
        if shape.metadata.get("union"):
            names = list(members)
            chosen = names[(variant + index) % len(names)]
            return {chosen: generate(members[chosen], variant, index)}
        return {name: generate(member, variant, index) for name, member in members.items()}
    if type_name == "list":
        return [generate(shape.member, variant, index + i) for i in range(_count(shape, 2))]
    if type_name == "map":
        keys = [generate(shape.key, variant, i) for i in range(_count(shape, 2))]
        keys = [f"{k}{i}" if i else k for i, k in enumerate(keys)]
        return {k: generate(shape.value, variant, index + i) for i, k in enumerate(keys)}
    if type_name == "string":
        return _string(shape, index)
    if type_name in ("integer", "long"):
        return _integer(shape, index)
    if type_name in ("float", "double"):
        return 1.5 + index
    if type_name == "boolean":
        return index % 2 == 0
    if type_name == "timestamp":
        return TIMESTAMP.replace(second=index % 60)
    if type_name == "blob":
        return STREAM if shape.serialization.get("streaming") else BLOB
    raise TypeError(f"no generator for {shape.name} ({type_name})")


def union_sizes(shape: Shape, seen: frozenset[str] = frozenset()) -> int:
    """The largest number of members of any union reachable from ``shape`` (1 when there is none)."""
    if shape.name in seen:
        return 1
    seen = seen | {shape.name}
    type_name = shape.type_name
    if type_name == "structure":
        inner = max((union_sizes(m, seen) for m in shape.members.values()), default=1)
        return max(inner, len(shape.members)) if shape.metadata.get("union") else inner
    if type_name == "list":
        return union_sizes(shape.member, seen)
    if type_name == "map":
        return union_sizes(shape.value, seen)
    return 1
