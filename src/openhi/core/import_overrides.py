"""An import job's DICOM JSON metadata mappings: checked at start, read from the input, reported if unused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from openhi.core.errors import ValidationError
from openhi.dicom.json_dataset import MetadataFileError, MetadataOverride, parse_metadata_file
from openhi.dicom.strict import MAX_INSTANCE_METADATA_BYTES
from openhi.ports.objects import ObjectNotFound, ObjectStore, validate_key

#: The warning type of a mapping that matched no instance of the job.
UNMATCHED_WARNING = "UNMATCHED_METADATA_MAPPING"
#: A metadata file may hold at most this many bytes.
MAX_METADATA_FILE_BYTES = MAX_INSTANCE_METADATA_BYTES


def mappings_of(config: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The ``dicomMetadataMappings`` of an ``importConfiguration`` (empty without one)."""
    json_config = (config or {}).get("dicomJsonMetadataImportConfiguration") or {}
    mappings = json_config.get("dicomMetadataMappings") or []
    return [m for m in mappings if isinstance(m, dict)]


def metadata_key(prefix: str, mapping: Mapping[str, Any]) -> str:
    """The object key of a mapping's file: ``metadataFilePath`` relative to the input prefix.

    Raises:
        ValidationError: the path would not be a safe key inside the input prefix.
    """
    path = str(mapping.get("metadataFilePath") or "")
    try:
        return validate_key(prefix + path)
    except ValidationError as exc:
        raise ValidationError(f"metadataFilePath {path!r}: {exc.message}") from None


def check_mappings(prefix: str, config: Mapping[str, Any] | None) -> None:
    """At StartDICOMImportJob: every ``metadataFilePath`` names a safe key under the input prefix.

    Raises:
        ValidationError: naming the mapping and the problem.
    """
    for index, mapping in enumerate(mappings_of(config)):
        try:
            metadata_key(prefix, mapping)
        except ValidationError as exc:
            raise ValidationError(f"dicomMetadataMappings[{index}]: {exc.message}") from None


def load_overrides(
    objects: ObjectStore, bucket: str, prefix: str, config: Mapping[str, Any] | None, sizes: Mapping[str, int]
) -> tuple[list[MetadataOverride], set[str]]:
    """Read each mapping's file; return the mappings (a broken one carries its error) and the files' keys.

    ``sizes`` are the listed input objects (key -> bytes): a mapping's file must be one of them. The
    keys returned are not DICOM input: the job does not import them.
    """
    overrides: list[MetadataOverride] = []
    keys: set[str] = set()
    for index, mapping in enumerate(mappings_of(config)):
        path = str(mapping.get("metadataFilePath") or "")
        study = str(mapping.get("studyInstanceUID") or "")
        series = mapping.get("seriesInstanceUID") or None
        dataset: dict[str, Any] | None = None
        error: str | None = None
        try:
            key = metadata_key(prefix, mapping)
        except ValidationError as exc:
            error = exc.message
        else:
            keys.add(key)
            size = sizes.get(key)
            if size is None:
                error = f"the file s3://{bucket}/{key} does not exist"
            elif size > MAX_METADATA_FILE_BYTES:
                error = f"the file holds {size} bytes, over the maximum of {MAX_METADATA_FILE_BYTES}"
            else:
                try:
                    dataset = parse_metadata_file(objects.get(bucket, key))
                except ObjectNotFound:
                    error = f"the file s3://{bucket}/{key} does not exist"
                except PermissionError as exc:  # the input's store refused the read (owner check)
                    error = f"reading the file was refused: {exc}"
                except MetadataFileError as exc:
                    error = f"the file is not one DICOM JSON dataset: {exc}"
        overrides.append(
            MetadataOverride(index, study, None if series is None else str(series), path, dataset, error)
        )
    return overrides, keys


def unmatched_warnings(
    overrides: Iterable[MetadataOverride], matched: set[int], prefix: str
) -> list[dict[str, Any]]:
    """A WARNING report entry for each mapping no instance of the job matched."""
    out = []
    for o in overrides:
        if o.index in matched:
            continue
        target = f"StudyInstanceUID {o.study_uid}" + (
            f" and SeriesInstanceUID {o.series_uid}" if o.series_uid else ""
        )
        message = f"{o.describe()} matches no instance of the job ({target})"
        if o.error:
            message += f", and it could not have been applied: {o.error}"
        out.append(
            {
                "inputFile": prefix + o.path,
                "metadataMapping": o.index,
                "warnings": [{"type": UNMATCHED_WARNING, "message": message}],
            }
        )
    return out
