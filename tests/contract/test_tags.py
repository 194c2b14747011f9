"""Contract tests: TagResource, UntagResource and ListTagsForResource on datastore ARNs."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from contract.helpers import active_datastore


def test_tag_untag_list(medical_imaging: Any) -> None:
    ds_id = active_datastore(medical_imaging, "tags")
    arn = medical_imaging.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreArn"]
    resp = medical_imaging.tag_resource(
        resourceArn=arn, tags={"Deployment": "Dev", "Owner": "qa", "a/b": "c:d"}
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert medical_imaging.list_tags_for_resource(resourceArn=arn)["tags"] == {
        "Deployment": "Dev",
        "Owner": "qa",
        "a/b": "c:d",
    }
    medical_imaging.tag_resource(resourceArn=arn, tags={"Owner": "ops"})
    medical_imaging.untag_resource(resourceArn=arn, tagKeys=["Deployment", "a/b", "absent"])
    assert medical_imaging.list_tags_for_resource(resourceArn=arn)["tags"] == {"Owner": "ops"}


def test_unknown_resources_are_not_found(medical_imaging: Any) -> None:
    missing = "arn:aws:medical-imaging:us-east-1:123456789012:datastore/" + "f" * 32
    for call in (
        lambda: medical_imaging.list_tags_for_resource(resourceArn=missing),
        lambda: medical_imaging.tag_resource(resourceArn=missing, tags={"k": "v"}),
        lambda: medical_imaging.untag_resource(resourceArn=missing, tagKeys=["k"]),
        lambda: medical_imaging.list_tags_for_resource(resourceArn=missing + "/imageset/" + "e" * 32),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_tag_key_rules(medical_imaging: Any, raw_medical_imaging: Any) -> None:
    ds_id = active_datastore(medical_imaging, "tagrules")
    arn = medical_imaging.get_datastore(datastoreId=ds_id)["datastoreProperties"]["datastoreArn"]
    raw = raw_medical_imaging
    with pytest.raises(ClientError) as exc:
        raw.tag_resource(resourceArn=arn, tags={"aws:reserved": "x"})
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        raw.tag_resource(resourceArn=arn, tags={f"k{i}": "v" for i in range(51)})
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert medical_imaging.list_tags_for_resource(resourceArn=arn)["tags"] == {}
