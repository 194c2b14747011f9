"""The console's and the viewer's routes (front ``console``), each with the HealthImaging action it reads
or writes, so a key's policy applies to the console as it does to the API.

Pages that only show static files (styles, the viewer's bundles) use ``ListDatastores``, the least any
console user needs. Outside local mode the app authenticates a browser by its session cookie
(:func:`openhi.console.session.browser_session`); the login page and its styles
(:data:`~openhi.console.session.PUBLIC_ROUTES`) need none.
"""

from __future__ import annotations

from typing import Any

from openhi.auth.resources import request_targets
from openhi.auth.routes import Request, Route
from openhi.awsapi.serializer import WireResponse
from openhi.console import imageset, imports, login, pages, search, viewer
from openhi.console.render import STATIC_DIR, static_file
from openhi.console.viewer_install import PREFIX

FRONT = "console"
DS = "/console/datastores/{datastoreId}"
SET = DS + "/imagesets/{imageSetId}"


def _labels_as_params(request: Request) -> None:
    """The uri labels (datastoreId, imageSetId, jobId) as the params the resources functions read."""
    request.params.update(request.labels)


def _static(services: Any, request: Request) -> WireResponse:
    return static_file(STATIC_DIR, request.labels.get("path", ""), cache="public, max-age=3600")


def _route(method: str, pattern: str, operation: str, handler: Any, name: str) -> Route:
    return Route(
        method,
        pattern,
        f"medical-imaging:{operation}",
        handler,
        request_targets(operation),
        parse=_labels_as_params,
        name=f"console-{name}",
        front=FRONT,
    )


ROUTES: list[Route] = [
    _route("GET", "/", "ListDatastores", pages.datastores_page, "datastores"),
    _route("POST", "/console/datastores", "CreateDatastore", pages.create_datastore, "create-datastore"),
    _route("POST", DS + "/delete", "DeleteDatastore", pages.delete_datastore, "delete-datastore"),
    _route("GET", "/console/status", "ListDatastores", pages.status_page, "status"),
    _route("GET", DS + "/imports", "ListDICOMImportJobs", imports.imports_page, "imports"),
    _route("POST", DS + "/imports", "StartDICOMImportJob", imports.start_import, "start-import"),
    _route("GET", DS + "/imports/{jobId}", "GetDICOMImportJob", imports.job_page, "job"),
    _route("GET", DS + "/imagesets", "SearchImageSets", search.search_page, "search"),
    _route("GET", SET, "GetImageSet", imageset.image_set_page, "imageset"),
    _route("POST", SET + "/update", "UpdateImageSetMetadata", imageset.update_image_set, "update"),
    _route("POST", SET + "/revert", "UpdateImageSetMetadata", imageset.revert_image_set, "revert"),
    _route("POST", SET + "/copy", "CopyImageSet", imageset.copy_image_set, "copy"),
    _route("POST", SET + "/delete", "DeleteImageSet", imageset.delete_image_set, "delete-imageset"),
    _route("GET", "/console/static/{path+}", "ListDatastores", _static, "static"),
    _route("GET", "/login", "ListDatastores", login.login_page, "login-page"),
    _route("POST", "/login", "ListDatastores", login.login, "login"),
    _route("POST", "/logout", "ListDatastores", login.logout, "logout"),
    _route("GET", "/viewer", "ListDatastores", viewer.deep_link, "viewer-link"),
    _route("GET", PREFIX + "app-config.js", "ListDatastores", viewer.app_config_js, "viewer-config"),
    _route("GET", PREFIX, "ListDatastores", viewer.viewer_file, "viewer-index"),
    _route("GET", PREFIX + "{path+}", "ListDatastores", viewer.viewer_file, "viewer-files"),
]
