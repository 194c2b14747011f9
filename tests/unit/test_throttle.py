"""Rate limits: token bucket arithmetic, the AWS table, throttling profiles (files) and the guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openhi.auth.actions import API_OPERATIONS, DICOMWEB_ACTIONS
from openhi.core.errors import ValidationError
from openhi.storage.errors import ConfigurationError
from openhi.throttle.buckets import Limit, TokenBucket
from openhi.throttle.guard import Guard, Limiter, Throttled, activate, admit
from openhi.throttle.profiles import AWS_LIMITS, action_matches, load_profile, parse_profile
from openhi.throttle.setup import request_guard


def test_a_bucket_starts_full_and_admits_its_burst_at_once() -> None:
    bucket = TokenBucket(Limit(rate=10, burst=3), now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.1)  # one token comes every 1/rate seconds


def test_a_bucket_refills_at_its_rate_and_never_beyond_its_burst() -> None:
    bucket = TokenBucket(Limit(rate=2, burst=4), now=0.0)
    for _ in range(4):
        assert bucket.take(0.0) == 0.0
    assert bucket.take(0.25) == pytest.approx(0.25)  # half a token after 0.25 s: wait 0.25 s more
    assert bucket.take(0.5) == 0.0  # one token after 0.5 s
    assert bucket.take(0.5) > 0
    assert bucket.take(1000.0) == 0.0  # a long pause fills it to the burst, not more
    assert [bucket.take(1000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1000.0) == pytest.approx(0.5)


def test_a_bucket_admits_rate_times_seconds_plus_burst_over_a_long_run() -> None:
    bucket = TokenBucket(Limit(rate=50, burst=100), now=0.0)
    admitted = sum(1 for i in range(100_000) if bucket.take(i * 0.0001) == 0.0)  # 10 s of 10,000 calls/s
    assert admitted == 100 + 50 * 10 - 1 or admitted == 100 + 50 * 10  # the last refill may land on 10 s


def test_the_slowest_aws_rates_refill_in_the_published_time() -> None:
    bucket = TokenBucket(AWS_LIMITS["CreateDatastore"], now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(1 / 0.085)
    assert bucket.take(11.0) > 0 and bucket.take(11.8) == 0.0


def test_limits_are_checked_and_split_between_processes() -> None:
    with pytest.raises(ValueError):
        Limit(0, 1)
    with pytest.raises(ValueError):
        Limit(1, 0.5)
    assert Limit(1000, 2000).shared(4) == Limit(250, 500)
    assert Limit(0.085, 1).shared(2) == Limit(0.0425, 1)  # a burst never drops below one request


def test_the_aws_table_covers_every_operation_and_the_dicomweb_reads() -> None:
    assert set(API_OPERATIONS) <= set(AWS_LIMITS)
    assert set(AWS_LIMITS) <= set(API_OPERATIONS) | set(DICOMWEB_ACTIONS)
    assert AWS_LIMITS["GetImageFrame"] == Limit(1000, 2000)
    assert AWS_LIMITS["SearchImageSets"] == Limit(25, 50)
    assert AWS_LIMITS["TagResource"] == Limit(10, 20)
    assert AWS_LIMITS["StartDICOMImportJob"] == Limit(0.25, 1)
    assert AWS_LIMITS["GetDICOMInstanceFrames"] == Limit(50, 100)


def test_off_is_no_guard_and_aws_is_the_table() -> None:
    assert load_profile("off") is None
    assert request_guard("off", None) is None
    profile = load_profile("aws")
    assert profile is not None
    assert profile.limit("AKID", "medical-imaging:GetImageFrame") == Limit(1000, 2000)
    assert profile.limit("AKID", "medical-imaging:SearchDICOMStudies") is None  # not published
    assert profile.limit("AKID", "openhi:GetImageSetDiff") is None


def test_actions_match_by_name_prefix_or_glob_whatever_the_case() -> None:
    assert action_matches("GetImageFrame", "medical-imaging:GetImageFrame")
    assert action_matches("medical-imaging:getimageframe", "medical-imaging:GetImageFrame")
    assert action_matches("Get*", "medical-imaging:GetDICOMInstance")
    assert action_matches("openhi:*", "openhi:GetImageSetDiff")
    assert not action_matches("openhi:*", "medical-imaging:GetImageSet")
    assert not action_matches("GetImageSet", "medical-imaging:GetImageSetMetadata")


def test_a_profile_file_overrides_by_principal_then_operation_then_base_then_default(tmp_path: Path) -> None:
    doc = {
        "base": "aws",
        "default": {"rate": 100, "burst": 200},
        "operations": {
            "GetImageFrame": {"rate": 300, "burst": 600},
            "Search*": {"rate": 5},
            "ListDatastores": None,
        },
        "principals": {"runaway-script": {"GetImage*": {"rate": 1, "burst": 2}}},
        "machines": 2,
    }
    path = tmp_path / "limits.json"
    path.write_text(json.dumps(doc))
    profile = load_profile(str(path))
    assert profile is not None and profile.machines == 2
    assert profile.limit("viewer", "medical-imaging:GetImageFrame") == Limit(300, 600)
    assert profile.limit("runaway-script", "medical-imaging:GetImageFrame") == Limit(1, 2)
    assert profile.limit("runaway-script", "medical-imaging:GetDatastore") == Limit(10, 20)  # base
    assert profile.limit("viewer", "medical-imaging:SearchImageSets") == Limit(5, 5)  # burst: one second
    assert profile.limit("viewer", "medical-imaging:ListDatastores") is None  # null: unlimited
    assert profile.limit("viewer", "openhi:GetImageSetDiff") == Limit(100, 200)  # default


@pytest.mark.parametrize(
    ("doc", "complaint"),
    [
        ([], "JSON object"),
        ({"limits": {}}, "unknown member"),
        ({"base": "gcp"}, "base must be"),
        ({"operations": {"GetImageFrame": {"rate": 0}}}, "positive rate"),
        ({"operations": {"GetImageFrame": {"rate": "fast"}}}, "numbers"),
        ({"operations": {"GetImageFrame": {"per": 1}}}, "a limit is"),
        ({"operations": {"GetImageFrame": {"rate": 5, "burst": 0.5}}}, "burst of at least 1"),
        ({"principals": []}, "principals must be"),
        ({"machines": 0}, "machines"),
    ],
)
def test_a_bad_profile_is_refused_with_where_and_why(doc: object, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        parse_profile(doc, "limits.json")


def test_a_bad_flag_value_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not off, aws, or a readable file"):
        request_guard(str(tmp_path / "missing.json"), None)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigurationError, match="not JSON"):
        request_guard(str(bad), None)


def test_the_guard_limits_each_principal_and_action_on_its_own() -> None:
    guard = Guard(Limiter(parse_profile({"operations": {"GetImageSet": {"rate": 1, "burst": 2}}})))
    action = "medical-imaging:GetImageSet"
    assert guard.check(action, "a", "api") is None
    assert guard.check(action, "a", "api") is None
    with pytest.raises(Throttled) as info:
        guard.check(action, "a", "api")
    assert info.value.code == "ThrottlingException" and info.value.status == 429
    assert "GetImageSet" in info.value.message and "1 requests per second (burst 2)" in info.value.message
    assert info.value.headers == []  # the AWS API sends no Retry-After
    assert guard.check(action, "b", "api") is None  # another principal has its own bucket
    assert guard.check("medical-imaging:GetImageFrame", "a", "api") is None  # another action: no limit
    with pytest.raises(Throttled) as info:
        guard.check(action, "a", "dicomweb")
    assert info.value.headers == [("Retry-After", "1")]


def test_the_guard_never_limits_the_fault_routes() -> None:
    guard = Guard(Limiter(parse_profile({"default": {"rate": 0.001, "burst": 1}})))
    for _ in range(5):
        assert guard.check("openhi:PutFaults", "a", "openhi") is None


def test_processes_take_their_share_of_each_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENHI_PROCESSES", "2")
    guard = request_guard("aws", None)
    assert guard is not None and guard.limiter is not None and guard.limiter.parts == 2
    admitted = sum(1 for _ in range(3000) if admit("k", "medical-imaging:GetImageFrame") is None)
    assert 1000 <= admitted < 1010  # half the burst of 2,000 (and what refilled meanwhile)


def test_admit_answers_the_seconds_to_wait_for_other_front_doors() -> None:
    activate(None)
    assert admit("AE-TITLE", "medical-imaging:StoreDICOM") is None  # nothing configured
    activate(Limiter(parse_profile({"operations": {"StoreDICOM": {"rate": 0.5, "burst": 1}}})))
    try:
        assert admit("AE-TITLE", "medical-imaging:StoreDICOM") is None
        wait = admit("AE-TITLE", "medical-imaging:StoreDICOM")
        assert wait is not None and 1.9 < wait <= 2.0
    finally:
        activate(None)
