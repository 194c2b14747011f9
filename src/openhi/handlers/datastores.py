"""Handlers for CreateDatastore, GetDatastore, ListDatastores and DeleteDatastore."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openhi.core.records import Datastore
from openhi.handlers.convert import dt
from openhi.handlers.registry import handles

if TYPE_CHECKING:
    from openhi.services import Services


def _properties(svc: Services, ds: Datastore) -> dict[str, Any]:
    return {
        "datastoreId": ds.id,
        # The model requires a name in every datastore description but not in CreateDatastore: a
        # datastore created without one is described under its id.
        "datastoreName": ds.name if ds.name is not None else ds.id,
        "datastoreStatus": ds.status,
        "kmsKeyArn": ds.kms_key_arn,
        "lambdaAuthorizerArn": ds.lambda_authorizer_arn,
        "losslessStorageFormat": ds.lossless_storage_format,
        "datastoreArn": svc.env.datastore_arn(ds.id),
        "createdAt": dt(ds.created_at),
        "updatedAt": dt(ds.updated_at),
    }


@handles("CreateDatastore")
def create_datastore(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    ds = svc.datastores.create(
        client_token=p["clientToken"],
        name=p.get("datastoreName"),
        tags=p.get("tags"),
        kms_key_arn=p.get("kmsKeyArn"),
        lambda_authorizer_arn=p.get("lambdaAuthorizerArn"),
        lossless_storage_format=p.get("losslessStorageFormat"),
    )
    return {"datastoreId": ds.id, "datastoreStatus": ds.status}


@handles("GetDatastore")
def get_datastore(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    return {"datastoreProperties": _properties(svc, svc.datastores.get(p["datastoreId"]))}


@handles("ListDatastores")
def list_datastores(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    rows, token = svc.datastores.list(
        status=p.get("datastoreStatus"), max_results=p.get("maxResults"), next_token=p.get("nextToken")
    )
    summaries = []
    for ds in rows:
        props = _properties(svc, ds)
        for key in ("kmsKeyArn", "lambdaAuthorizerArn", "losslessStorageFormat"):
            props.pop(key)
        summaries.append(props)
    return {"datastoreSummaries": summaries, "nextToken": token}


@handles("DeleteDatastore")
def delete_datastore(svc: Services, p: dict[str, Any]) -> dict[str, Any]:
    ds = svc.datastores.delete(p["datastoreId"])
    return {"datastoreId": ds.id, "datastoreStatus": ds.status}
