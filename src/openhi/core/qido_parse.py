"""QIDO-RS query strings (PS3.18 §8.3.4, PS3.4 C.2.2.2) parsed into a DicomQuery, its include list and warnings."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from openhi.core.dicom_query import BY_KEYWORD, BY_TAG, COUNTS, Attribute, DicomQuery, Kind, Level, Match
from openhi.core.errors import ValidationError
from openhi.dicom.instance_view import key_tag

#: results of a request without ``limit``
DEFAULT_LIMIT = 1000
#: AWS: "QIDO-RS actions can return a maximum of 10,000 records": offset + results never go past it
MAX_RESULTS = 10_000
#: longest accepted match value (characters): the longest DICOM string a key could match, with room to spare
MAX_VALUE = 1024
UID_MAX = 64

_ORDER = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")
_UINT = re.compile(r"[0-9]{1,18}")
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_TIME = re.compile(r"(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:(?:[0-5][0-9]|60)(?:\.[0-9]{1,6})?)?)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INTEGER_VRS = frozenset({"IS", "US", "UL", "SS", "SL"})
_RESERVED = (
    "limit",
    "offset",
    "includefield",
    "fuzzymatching",
    "emptyvaluematching",
    "multiplevaluematching",
)
_NOT_PERFORMED = {
    "emptyvaluematching": "The emptyvaluematching parameter is not supported. "
    "Empty Value Matching has not been performed.",
    "multiplevaluematching": "The multiplevaluematching parameter is not supported. "
    "Multiple Value Matching has not been performed.",
}


@dataclass
class QidoRequest:
    """A parsed QIDO-RS request.

    ``include``: the tags (8 upper-case hex digits, in request order) whose values the results carry
    beyond the level's default attributes (``includefield`` and keys of universal matching);
    ``include_all``: ``includefield=all``; ``warnings``: the texts of the HTTP ``Warning: 299`` headers
    (parameters ignored); ``empty``: nothing can be returned (``limit=0``, or ``offset`` at or past
    :data:`MAX_RESULTS`): the index need not be asked.
    """

    query: DicomQuery
    include: list[str] = field(default_factory=list)
    include_all: bool = False
    warnings: list[str] = field(default_factory=list)
    empty: bool = False


def level_order(level: Level) -> int:
    """0 for studies, 1 for series, 2 for instances."""
    return _ORDER[level]


def check_uid(value: str, what: str) -> str:
    """``value`` if it is a well-formed UID (digits and dots, at most 64 characters); raises ValidationError."""
    if len(value) > UID_MAX or not _UID.fullmatch(value):
        raise ValidationError(
            f"{what} {value[:80]!r} is not a valid UID (digits and dots, at most 64 characters)."
        )
    return value


def _decode(raw: bytes, what: str) -> str:
    """Percent-decode a query component (``+`` is a space, as HTML forms and dicomweb-client send it)."""
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(
            f"The query parameter {what} is not valid UTF-8 once percent-decoded."
        ) from None


def _pairs(query: bytes | str) -> list[tuple[str, str]]:
    raw = query.encode("latin-1") if isinstance(query, str) else query
    out: list[tuple[str, str]] = []
    for part in raw.split(b"&"):
        if not part:
            continue
        name_raw, _, value_raw = part.partition(b"=")
        name = _decode(name_raw, "name")
        out.append((name, _decode(value_raw, repr(name[:64]))))
    return out


def _attribute(name: str, level: Level) -> Attribute | str | None:
    """The index attribute ``name`` (keyword or tag) names, else its tag (a valid DICOM tag or keyword
    outside the index), else ``None`` (not an attribute). Raises nothing."""
    if _TAG.fullmatch(name):
        tag = name.upper()
        for lvl in Level:
            attr = BY_TAG.get((lvl, tag))
            if attr is not None:
                return attr
        return tag
    for lvl in Level:
        attr = BY_KEYWORD.get((lvl, name))
        if attr is not None:
            return attr
    tag_number = key_tag(name) if name.isidentifier() else None
    return None if tag_number is None else f"{tag_number:08X}"


def _date(value: str, name: str) -> str:
    if len(value) == 8 and value.isdigit():
        try:
            datetime.date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            pass
        else:
            return value
    raise ValidationError(f"{name} {value[:80]!r} is not a date (YYYYMMDD).")


def _time(value: str, name: str) -> str:
    if _TIME.fullmatch(value) is None:
        raise ValidationError(f"{name} {value[:80]!r} is not a time (HH[MM[SS[.FFFFFF]]]).")
    return value


def _range_or_single(attr: Attribute, name: str, value: str) -> Match:
    """DA / TM: one value, or a range whose open end is "" (bounds as given: the index compares a bound of
    coarser precision as holding every finer value, so ``-1200`` includes 12:00:30)."""
    check = _date if attr.vr == "DA" else _time
    if "-" not in value:
        return Match(attr, Kind.SINGLE, (check(value, name),))
    low, _, high = value.partition("-")
    if "-" in high or not (low or high):
        raise ValidationError(f"{name} {value[:80]!r} is not a range (start-end, start- or -end).")
    return Match(attr, Kind.RANGE, (check(low, name) if low else "", check(high, name) if high else ""))


def value_match(attr: Attribute, name: str, value: str, fuzzy: bool) -> Match:
    """The match of a non-empty, non-universal value. Raises ValidationError."""
    if len(value) > MAX_VALUE:
        raise ValidationError(f"The value of {name} is longer than {MAX_VALUE} characters.")
    if _CONTROL.search(value):
        raise ValidationError(f"The value of {name} contains control characters.")
    if attr.vr == "UI":
        uids = tuple(check_uid(v, name) for v in re.split(r"[\\,]", value))
        return Match(attr, Kind.SINGLE if len(uids) == 1 else Kind.LIST, uids)
    if attr.vr in ("DA", "TM"):
        return _range_or_single(attr, name, value)
    if attr.vr in _INTEGER_VRS:
        if not _INTEGER.fullmatch(value.strip(" ")):
            raise ValidationError(f"{name} {value[:80]!r} is not an integer.")
        return Match(attr, Kind.SINGLE, (str(int(value)),))
    if attr.keyword == "ModalitiesInStudy":
        modalities = tuple(v.strip(" ") for v in re.split(r"[\\,]", value))
        if any(not v or "*" in v or "?" in v for v in modalities):
            raise ValidationError(
                f"ModalitiesInStudy {value[:80]!r}: give one or more modalities separated by backslashes "
                "(wildcards are not supported for this attribute)."
            )
        return Match(attr, Kind.CONTAINS, modalities)
    if "*" in value or "?" in value:
        return Match(attr, Kind.WILDCARD, (value,))
    if fuzzy and attr.vr == "PN":
        return Match(attr, Kind.FUZZY, (value,))
    return Match(attr, Kind.SINGLE, (value,))


def _boolean(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise ValidationError(f"{name} must be true or false, not {value[:40]!r}.")
    return value == "true"


def _uint(name: str, value: str) -> int:
    if not _UINT.fullmatch(value):
        raise ValidationError(f"{name} must be a non-negative integer, not {value[:40]!r}.")
    return int(value)


def _merge(previous: Match, match: Match, name: str) -> Match:
    """A repeated key: UID lists and ModalitiesInStudy add up; any other key given twice is an error."""
    if (
        previous.kind in (Kind.SINGLE, Kind.LIST)
        and match.kind in (Kind.SINGLE, Kind.LIST)
        and (previous.attribute.vr == "UI")
    ):
        values = tuple(dict.fromkeys(previous.values + match.values))
        return Match(previous.attribute, Kind.LIST, values)
    if previous.kind is Kind.CONTAINS:
        return Match(previous.attribute, Kind.CONTAINS, tuple(dict.fromkeys(previous.values + match.values)))
    raise ValidationError(f"The matching key {name} is given more than once.")


class _Parser:
    def __init__(self, level: Level) -> None:
        self.level = level
        self.include: list[str] = []
        self.include_all = False
        self.warnings: list[str] = []
        self.ignored: list[str] = []

    def add_include(self, tag: str) -> None:
        if tag not in self.include:
            self.include.append(tag)

    def usable(self, name: str, found: Attribute | str | None) -> Attribute | str | None:
        """The attribute, or ``None`` (and the name noted as ignored) when this level cannot return it."""
        if found is None or (
            isinstance(found, Attribute) and level_order(found.level) > level_order(self.level)
        ):
            self.ignored.append(name)
            return None
        return found

    def includefield(self, value: str) -> None:
        for item in value.split(","):
            name = item.strip(" ")
            if not name:
                continue
            if name == "all":
                self.include_all = True
                continue
            found = self.usable(name, _attribute(name, self.level))
            if found is not None:
                self.add_include(found.tag if isinstance(found, Attribute) else found)


def parse_qido(
    level: Level,
    datastore_id: str,
    query: bytes | str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> QidoRequest:
    """Parse the query component of a QIDO-RS request at ``level`` (inside the study / series of its path).

    Keys are keywords (case-sensitive) or tags of the index's attributes of this level or above; a value
    that is empty or ``*`` is universal matching (the attribute is returned); UI values are SINGLE or a
    LIST (backslash or comma separated; a repeated key adds to the list), DA / TM with ``-`` are a RANGE,
    ``*`` / ``?`` make a WILDCARD (text VRs), a PN with ``fuzzymatching=true`` is FUZZY, ModalitiesInStudy
    is CONTAINS. ``limit`` (default :data:`DEFAULT_LIMIT`) and ``offset`` are clipped so that
    ``offset + limit <= MAX_RESULTS``. Unknown parameters, attributes the index does not hold and
    attributes of deeper levels are ignored with a warning.

    Raises:
        ValidationError: a malformed UID (also in the path), date, time, range or integer, a value with
            control characters or too long, a non-text key given twice, a bad ``limit`` / ``offset`` /
            ``fuzzymatching``, a query that is not UTF-8.
    """
    if study_uid is not None:
        check_uid(study_uid, "StudyInstanceUID")
    if series_uid is not None:
        check_uid(series_uid, "SeriesInstanceUID")
    pairs = _pairs(query)
    reserved: dict[str, list[str]] = {}
    keys: list[tuple[str, str]] = []
    for name, value in pairs:
        lower = name.lower()
        if lower in _RESERVED:
            reserved.setdefault(lower, []).append(value)
        else:
            keys.append((name, value))
    for lower in ("limit", "offset", "fuzzymatching"):
        if len(reserved.get(lower, ())) > 1:
            raise ValidationError(f"The query parameter {lower} is given more than once.")
    fuzzy = _boolean("fuzzymatching", reserved["fuzzymatching"][0]) if "fuzzymatching" in reserved else False
    limit = _uint("limit", reserved["limit"][0]) if "limit" in reserved else DEFAULT_LIMIT
    offset = _uint("offset", reserved["offset"][0]) if "offset" in reserved else 0

    parser = _Parser(level)
    for value in reserved.get("includefield", ()):
        parser.includefield(value)
    for lower, text in _NOT_PERFORMED.items():
        if any(v == "true" for v in reserved.get(lower, ())):
            parser.warnings.append(text)

    matches: dict[str, Match] = {}
    for name, value in keys:
        found = parser.usable(name, _attribute(name, level))
        if found is None:
            continue
        tag = found.tag if isinstance(found, Attribute) else found
        if value in ("", "*"):
            parser.add_include(tag)  # universal matching: the attribute is returned
            continue
        if not isinstance(found, Attribute) or found.keyword in COUNTS:
            parser.ignored.append(name)  # an attribute the index cannot match: returned when it can be
            parser.add_include(tag)
            continue
        match = value_match(found, name, value, fuzzy)
        previous = matches.get(found.tag)
        matches[found.tag] = match if previous is None else _merge(previous, match, name)

    if parser.ignored:
        names = ", ".join(dict.fromkeys(n[:64] for n in parser.ignored))
        parser.warnings.append(f"The following query parameters are not supported and were ignored: {names}.")
    room = max(0, MAX_RESULTS - offset)
    if limit > room and offset < MAX_RESULTS:
        parser.warnings.append(
            f"Only the first {MAX_RESULTS} matches of a search can be returned; "
            f"this response stops at match {MAX_RESULTS}."
        )
    page = min(limit, room)
    dq = DicomQuery(
        level=level,
        datastore_id=datastore_id,
        study_uid=study_uid,
        series_uid=series_uid,
        matches=list(matches.values()),
        limit=page,
        offset=offset,
    )
    return QidoRequest(dq, parser.include, parser.include_all, parser.warnings, empty=page == 0)
