"""Tags on datastore and image-set ARNs: tag, untag, list."""

from __future__ import annotations

import re
from collections.abc import Sequence

from openhi.core.env import Env
from openhi.core.errors import NotFoundError, ValidationError

_ARN = re.compile(
    r"arn:aws((-us-gov)|(-iso)|(-iso-b)|(-cn))?:medical-imaging:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12})"
    r":datastore/(?P<ds>[0-9a-z]{32})(/imageset/(?P<set>[0-9a-z]{32}))?"
)
MAX_TAGS = 50


class TagService:
    def __init__(self, env: Env) -> None:
        self.env = env

    def _resolve(self, arn: str) -> str:
        """The canonical ARN of an existing resource.

        Raises:
            NotFoundError: the ARN names no resource of this service instance.
        """
        m = _ARN.fullmatch(arn)
        if m is None:
            raise ValidationError(f"Invalid resourceArn {arn}: expected a datastore or image set ARN.")
        s = self.env.settings
        if m["region"] != s.region or m["account"] != s.account_id:
            raise NotFoundError(f"Resource {arn} does not exist in {s.region} for account {s.account_id}.")
        ds = self.env.index.get_datastore(m["ds"])
        if ds is None or ds.status == "DELETED":
            raise NotFoundError(f"Resource {arn} does not exist: no datastore {m['ds']}.")
        if m["set"]:
            image_set = self.env.index.get_image_set(m["ds"], m["set"])
            if image_set is None or image_set.state == "DELETED":
                raise NotFoundError(f"Resource {arn} does not exist: no image set {m['set']}.")
            return self.env.image_set_arn(m["ds"], m["set"])
        return self.env.datastore_arn(m["ds"])

    def list(self, arn: str) -> dict[str, str]:
        return self.env.index.get_tags(self._resolve(arn))

    def tag(self, arn: str, tags: dict[str, str]) -> None:
        """Add or replace tags.

        Raises:
            ValidationError: the resource would carry more than 50 tags.
        """
        resolved = self._resolve(arn)
        current = self.env.index.get_tags(resolved)
        if len(set(current) | set(tags)) > MAX_TAGS:
            raise ValidationError(f"Too many tags: a resource can carry at most {MAX_TAGS} tags.")
        self.env.index.put_tags(resolved, tags)

    def untag(self, arn: str, keys: Sequence[str]) -> None:
        self.env.index.remove_tags(self._resolve(arn), keys)
