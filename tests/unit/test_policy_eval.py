"""IAM-style policy parsing and evaluation (openhi.auth): wildcards, Not*, explicit deny, conditions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from openhi.auth.conditions import DictContext
from openhi.auth.evaluate import Decision, Target, decide, evaluate
from openhi.auth.policy import PolicyError, parse_policy
from openhi.auth.principals import Authorizer, read_policy_file
from openhi.core.errors import AccessDeniedError

DS = "arn:aws:medical-imaging:us-east-1:123456789012:datastore/" + "a" * 32
OTHER_DS = "arn:aws:medical-imaging:us-east-1:123456789012:datastore/" + "b" * 32
SET = DS + "/imageset/" + "c" * 32
EMPTY = DictContext()


def policy(*statements: dict[str, Any]) -> Any:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def deny(action: Any = "*", resource: Any = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def decision(p: Any, action: str, resource: str = DS, context: Any = EMPTY) -> Decision:
    return evaluate([p], action, resource, context)


# -- actions -------------------------------------------------------------------------------------


def test_default_is_deny() -> None:
    assert decision(policy(allow("medical-imaging:GetDatastore")), "medical-imaging:ListDatastores") is (
        Decision.IMPLICIT_DENY
    )


@pytest.mark.parametrize(
    ("pattern", "action", "allowed"),
    [
        ("medical-imaging:Get*", "medical-imaging:GetImageSet", True),
        ("medical-imaging:Get*", "medical-imaging:ListImageSetVersions", False),
        ("medical-imaging:get*", "medical-imaging:GetImageFrame", True),  # actions match case-insensitively
        ("MEDICAL-IMAGING:GETIMAGESET", "medical-imaging:GetImageSet", True),
        ("medical-imaging:GetImageSe?", "medical-imaging:GetImageSet", True),
        ("medical-imaging:GetImageSe?", "medical-imaging:GetImageSetMetadata", False),
        ("medical-imaging:*", "openhi:GetImageSetDiff", False),  # another service prefix
        ("*", "openhi:PutImportInput", True),
        ("*:Get*", "openhi:GetImageSetDiff", True),
    ],
)
def test_action_wildcards(pattern: str, action: str, allowed: bool) -> None:
    result = decision(policy(allow(pattern)), action)
    assert (result is Decision.ALLOW) is allowed


def test_action_list_and_not_action() -> None:
    p = policy(allow(["medical-imaging:GetDatastore", "medical-imaging:List*"]))
    assert decision(p, "medical-imaging:ListDatastores") is Decision.ALLOW
    assert decision(p, "medical-imaging:DeleteDatastore") is Decision.IMPLICIT_DENY
    everything_but_delete = policy(
        {"Effect": "Allow", "NotAction": "medical-imaging:Delete*", "Resource": "*"}
    )
    assert decision(everything_but_delete, "medical-imaging:GetImageSet") is Decision.ALLOW
    assert decision(everything_but_delete, "medical-imaging:DeleteImageSet") is Decision.IMPLICIT_DENY


# -- resources -----------------------------------------------------------------------------------


def test_resource_wildcards_are_case_sensitive_and_span_slashes() -> None:
    p = policy(allow(resource=DS + "*"))
    assert decision(p, "medical-imaging:GetImageSet", SET) is Decision.ALLOW
    assert decision(p, "medical-imaging:GetDatastore", DS) is Decision.ALLOW
    assert decision(p, "medical-imaging:GetDatastore", OTHER_DS) is Decision.IMPLICIT_DENY
    upper_id = DS.replace("a" * 32, "A" * 32)
    assert decision(policy(allow(resource=upper_id)), "medical-imaging:GetDatastore") is (
        Decision.IMPLICIT_DENY
    )
    star = policy(allow(resource="arn:aws:medical-imaging:*:123456789012:datastore/?" + "a" * 31))
    assert decision(star, "medical-imaging:GetDatastore") is Decision.ALLOW


def test_not_resource() -> None:
    p = policy({"Effect": "Allow", "Action": "*", "NotResource": [OTHER_DS, OTHER_DS + "/*"]})
    assert decision(p, "medical-imaging:GetDatastore", DS) is Decision.ALLOW
    assert decision(p, "medical-imaging:GetDatastore", OTHER_DS) is Decision.IMPLICIT_DENY


def test_star_resource_only_matches_a_star_pattern() -> None:
    """Actions without a resource (ListDatastores, CreateDatastore) are evaluated against ``*``."""
    assert decision(policy(allow(resource=DS)), "medical-imaging:ListDatastores", "*") is (
        Decision.IMPLICIT_DENY
    )
    assert decision(policy(allow()), "medical-imaging:ListDatastores", "*") is Decision.ALLOW


# -- deny ---------------------------------------------------------------------------------------


def test_explicit_deny_wins_in_any_order() -> None:
    for statements in (
        (allow(), deny("medical-imaging:Delete*")),
        (deny("medical-imaging:Delete*"), allow()),
    ):
        p = policy(*statements)
        assert decision(p, "medical-imaging:DeleteDatastore") is Decision.EXPLICIT_DENY
        assert decision(p, "medical-imaging:GetDatastore") is Decision.ALLOW


def test_every_target_must_be_allowed() -> None:
    p = policy(allow(resource=DS))  # the datastore, not its image sets
    targets = [Target(DS, EMPTY), Target(SET, EMPTY)]
    result, arn = decide([p], "medical-imaging:GetImageSet", targets)
    assert result is Decision.IMPLICIT_DENY and arn == SET
    both = policy(allow(resource=[DS, DS + "/imageset/*"]))
    assert decide([both], "medical-imaging:GetImageSet", targets) == (Decision.ALLOW, "")


# -- conditions ----------------------------------------------------------------------------------

TEAM = "aws:ResourceTag/team"


@pytest.mark.parametrize(
    ("operator", "value", "context", "holds"),
    [
        ("StringEquals", "radiology", {TEAM: "radiology"}, True),
        ("StringEquals", "radiology", {TEAM: "Radiology"}, False),
        ("StringEquals", ["cardio", "radiology"], {TEAM: "radiology"}, True),
        ("StringEquals", "radiology", {}, False),  # absent key: no match
        ("StringNotEquals", "radiology", {TEAM: "cardio"}, True),
        ("StringNotEquals", "radiology", {TEAM: "radiology"}, False),
        ("StringNotEquals", ["a", "radiology"], {TEAM: "radiology"}, False),
        ("StringNotEquals", "radiology", {}, True),  # absent key: a negated operator holds
        ("StringEqualsIgnoreCase", "RADIOLOGY", {TEAM: "radiology"}, True),
        ("StringNotEqualsIgnoreCase", "RADIOLOGY", {TEAM: "radiology"}, False),
        ("StringLike", "radio*", {TEAM: "radiology"}, True),
        ("StringLike", "rad?ology", {TEAM: "radiology"}, True),
        ("StringLike", "cardio*", {TEAM: "radiology"}, False),
        ("StringNotLike", "cardio*", {TEAM: "radiology"}, True),
        ("StringNotLike", "radio*", {TEAM: "radiology"}, False),
        ("StringEqualsIfExists", "radiology", {}, True),
        ("StringEqualsIfExists", "radiology", {TEAM: "cardio"}, False),
        ("StringLikeIfExists", "r*", {TEAM: "radiology"}, True),
        ("Null", "true", {}, True),
        ("Null", "true", {TEAM: "x"}, False),
        ("Null", "false", {TEAM: "x"}, True),
    ],
)
def test_condition_operators(operator: str, value: Any, context: dict[str, str], holds: bool) -> None:
    p = policy(allow(Condition={operator: {TEAM: value}}))
    result = decision(p, "medical-imaging:GetDatastore", context=DictContext(dict(context)))
    assert (result is Decision.ALLOW) is holds


def test_condition_keys_are_case_insensitive() -> None:
    p = policy(allow(Condition={"stringequals": {"AWS:RESOURCETAG/Team": "radiology"}}))
    assert decision(p, "x:y", context=DictContext({"aws:resourcetag/team": "radiology"})) is Decision.ALLOW


@pytest.mark.parametrize(
    ("operator", "keys", "holds"),
    [
        ("ForAllValues:StringEquals", ["team", "site"], True),
        ("ForAllValues:StringEquals", ["team", "owner"], False),
        ("ForAllValues:StringEquals", [], True),  # an empty set: vacuously true
        ("ForAnyValue:StringEquals", ["owner", "team"], True),
        ("ForAnyValue:StringEquals", ["owner"], False),
        ("ForAnyValue:StringEquals", [], False),
        ("ForAllValues:StringNotEquals", ["owner"], True),
        ("ForAnyValue:StringLike", ["site-a"], True),
    ],
)
def test_set_operators_on_tag_keys(operator: str, keys: list[str], holds: bool) -> None:
    allowed = ["team", "site", "site-*"] if "Like" in operator else ["team", "site"]
    p = policy(allow(Condition={operator: {"aws:TagKeys": allowed}}))
    context = DictContext({"aws:TagKeys": keys})
    assert (decision(p, "medical-imaging:TagResource", context=context) is Decision.ALLOW) is holds


def test_all_conditions_must_hold() -> None:
    p = policy(
        allow(
            Condition={
                "StringEquals": {TEAM: "radiology", "medical-imaging:StudyInstanceUID": "1.2.3"},
                "StringLike": {"aws:RequestTag/site": "north-*"},
            }
        )
    )
    full = {TEAM: "radiology", "medical-imaging:StudyInstanceUID": "1.2.3", "aws:RequestTag/site": "north-1"}
    assert decision(p, "x:y", context=DictContext(dict(full))) is Decision.ALLOW
    for missing in full:
        partial = {k: v for k, v in full.items() if k != missing}
        assert decision(p, "x:y", context=DictContext(dict(partial))) is Decision.IMPLICIT_DENY


def test_a_deny_with_a_condition_applies_only_when_it_holds() -> None:
    p = policy(allow(), deny(Condition={"StringEquals": {TEAM: "restricted"}}))
    assert decision(p, "x:y", context=DictContext({TEAM: "restricted"})) is Decision.EXPLICIT_DENY
    assert decision(p, "x:y", context=DictContext({TEAM: "open"})) is Decision.ALLOW
    assert decision(p, "x:y") is Decision.ALLOW


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "JSON object"),
        ({"Statement": []}, "Statement"),
        ({"Version": "2020-01-01", "Statement": [allow()]}, "Version"),
        ({"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}, "Effect"),
        ({"Statement": [{"Effect": "Allow", "Resource": "*"}]}, "Action"),
        (
            {"Statement": [{"Effect": "Allow", "Action": "*", "NotAction": "*", "Resource": "*"}]},
            "exactly one",
        ),
        ({"Statement": [{"Effect": "Allow", "Action": "*"}]}, "Resource"),
        ({"Statement": [allow("medical-imaging:GetImageSett")]}, "unknown action"),
        ({"Statement": [allow("GetImageSet")]}, "not an action"),
        ({"Statement": [allow(resource="datastore/x")]}, "not a resource"),
        ({"Statement": [allow(action=[])]}, "Action"),
        ({"Statement": [allow(action=[1])]}, "Action"),
        ({"Statement": [allow(Condition={"NumericEquals": {"aws:TagKeys": "1"}})]}, "operator"),
        ({"Statement": [allow(Condition={"StringEquals": {"foo:bar": "1"}})]}, "condition key"),
        ({"Statement": [allow(Condition={"StringEquals": {TEAM: []}})]}, TEAM),
        ({"Statement": [allow(Condition={"Null": {TEAM: "maybe"}})]}, "true"),
        ({"Statement": [allow(Principal="*")]}, "Principal"),
        ({"Statement": [allow()], "Extra": 1}, "Extra"),
    ],
)
def test_bad_policies_are_refused_with_the_reason(doc: Any, fragment: str) -> None:
    with pytest.raises(PolicyError, match=fragment):
        parse_policy(doc)


def test_a_single_statement_object_and_dicomweb_and_foreign_actions_are_accepted() -> None:
    p = parse_policy({"Statement": allow(["medical-imaging:GetDICOMInstance", "medical-imaging:StoreDICOM"])})
    assert decision(p, "medical-imaging:GetDICOMInstance") is Decision.ALLOW
    foreign = parse_policy({"Statement": [allow("iam:PassRole")]})  # copied from AWS: valid, matches nothing
    assert decision(foreign, "medical-imaging:GetDatastore") is Decision.IMPLICIT_DENY


# -- the policy file and the authorizer -------------------------------------------------------------


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "policies.json"
    path.write_text(json.dumps(doc))
    return path


def test_policy_file_gives_secrets_and_policies(tmp_path: Path) -> None:
    doc = {
        "principals": [
            {
                "accessKeyId": "AKIDREAD",
                "secretAccessKey": "r",
                "policy": {"Statement": allow("medical-imaging:Get*")},
            },
            {"accessKeyId": "AKIDALL", "secretAccessKey": "a", "policy": {"Statement": allow()}},
        ]
    }
    loaded = read_policy_file(_write(tmp_path, doc))
    assert loaded.secrets == {"AKIDREAD": "r", "AKIDALL": "a"}
    authorizer = Authorizer(loaded.policies)
    authorizer.authorize("AKIDREAD", "medical-imaging:GetDatastore", [Target(DS, EMPTY)])
    with pytest.raises(AccessDeniedError, match="medical-imaging:DeleteDatastore") as info:
        authorizer.authorize("AKIDREAD", "medical-imaging:DeleteDatastore", [Target(DS, EMPTY)])
    assert DS in info.value.message
    authorizer.authorize(
        "AKIDUNLISTED", "medical-imaging:DeleteDatastore", [Target(DS, EMPTY)]
    )  # full access
    assert authorizer.restricted("AKIDREAD") and not authorizer.restricted("AKIDUNLISTED")


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"principals": {}}, "principals"),
        ({"principals": []}, "empty"),
        ({"principals": [{"accessKeyId": "A", "secretAccessKey": "s"}]}, "policy"),
        ({"principals": [{"accessKeyId": "", "secretAccessKey": "s", "policy": {}}]}, "accessKeyId"),
        ({"principals": [{"accessKeyId": "A", "secretAccessKey": 1, "policy": {}}]}, "secretAccessKey"),
        (
            {
                "principals": [{"accessKeyId": "A", "secretAccessKey": "s", "policy": {"Statement": allow()}}]
                * 2
            },
            "twice",
        ),
        ({"principals": [{"accessKeyId": "A", "secretAccessKey": "s", "policy": {}, "x": 1}]}, "unsupported"),
    ],
)
def test_bad_policy_files_are_refused(tmp_path: Path, doc: Any, fragment: str) -> None:
    with pytest.raises(PolicyError, match=fragment):
        read_policy_file(_write(tmp_path, doc))


def test_unreadable_or_invalid_json_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        read_policy_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(PolicyError, match="not valid JSON"):
        read_policy_file(tmp_path / "bad.json")
