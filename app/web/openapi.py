"""The API's own description: `/openapi.json` (OpenAPI 3.1, kept beside the code) and Swagger UI at `/docs`."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import flask_swagger_ui
from flask import Blueprint, abort, current_app, render_template, request, send_from_directory

bp = Blueprint("openapi", __name__)

DESCRIPTION = Path(__file__).with_name("openapi.json")
# Swagger UI's files as the flask-swagger-ui package ships them (its own page has inline script: not used).
SWAGGER_UI = Path(flask_swagger_ui.__file__).with_name("dist")
_SWAGGER_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "index.css", "favicon-32x32.png"})


@functools.cache
def _stored() -> dict:
    return json.loads(DESCRIPTION.read_text(encoding="utf-8"))


def description(config) -> dict:
    """Return the OpenAPI description with the limits this process is configured with."""
    spec = copy.deepcopy(_stored())
    schemas = spec["components"]["schemas"]
    schemas["NewTask"]["properties"]["expression"]["maxLength"] = config.max_expression_length
    schemas["NewTaskList"]["maxItems"] = config.max_batch_size
    parameters = spec["components"]["parameters"]
    parameters["wait"]["schema"]["maximum"] = config.max_wait_seconds
    parameters["limit"]["schema"]["maximum"] = config.max_page_size
    parameters["limit"]["schema"]["default"] = config.default_page_size
    return spec


@bp.get("/openapi.json")
def read():
    """Answer the OpenAPI 3.1 description of this API, naming the address it was asked at as its server."""
    cache = current_app.extensions.setdefault("dalc.openapi", {})
    if "body" not in cache:
        cache["body"] = description(current_app.extensions["dalc"].config)
    # An absolute server: tools that import the description (Postman) need one to send requests to.
    return {**cache["body"], "servers": [{"url": request.host_url.rstrip("/"), "description": "this dalc"}]}


@bp.get("/docs")
def docs():
    """Render Swagger UI on /openapi.json: every operation, and a form to try it."""
    return render_template("docs.html")


@bp.get("/docs/<name>")
def asset(name: str):
    """Serve one of Swagger UI's files."""
    if name not in _SWAGGER_FILES:
        abort(404)
    return send_from_directory(SWAGGER_UI, name, max_age=3600)
