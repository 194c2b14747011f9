"""Handlers for TagResource, UntagResource and ListTagsForResource."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openhi.handlers.registry import handles

if TYPE_CHECKING:
    from openhi.services import Services


@handles("ListTagsForResource")
def list_tags(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    return {"tags": svc.tags.list(p["resourceArn"])}


@handles("TagResource")
def tag_resource(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    svc.tags.tag(p["resourceArn"], p["tags"])
    return {}


@handles("UntagResource")
def untag_resource(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    svc.tags.untag(p["resourceArn"], p.get("tagKeys", []))
    return {}
