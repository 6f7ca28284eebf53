"""The OpenAPI 3 document of what we serve, generated from the endpoint table and record schemas.

Nothing here is written twice: paths and methods come from the routes' `Endpoint` table, bodies
and filters from `ndmpd.rest.schema`, so the document cannot drift from the server.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ndmpd import __version__
from ndmpd.rest.records import version_record
from ndmpd.rest.routes_base import Endpoint, Op
from ndmpd.rest.schema import (
    Kind,
    Record,
    openapi_collection_schema,
    openapi_error_schema,
    openapi_schema,
)

Json = dict[str, Any]

_FIELDS = {
    "name": "fields",
    "in": "query",
    "required": False,
    "description": "Fields to return: names, dotted paths, `*`, `**`, `!name` exclusions.",
    "schema": {"type": "string"},
}
_COMMON_GET = [
    ("max_records", "integer", "Limit the number of records (a `next` link follows)."),
    ("return_records", "boolean", "false: return only `num_records`."),
    ("return_timeout", "integer", "Seconds (0-120) the server may spend."),
    ("order_by", "string", "Sort by fields, e.g. `id desc`."),
    ("offset", "integer", "Skip this many matching records."),
    ("ignore_unknown_fields", "boolean", "Ignore unknown names in `fields`."),
]
_COMMON_BULK = [
    ("return_records", "boolean", "Return the records acted on (ignored)."),
    ("return_timeout", "integer", "Seconds (0-120) the server may spend."),
    ("continue_on_failure", "boolean", "Keep going after a failure."),
    ("serial_records", "boolean", "Act on the records one at a time."),
]
_ERROR_STATUSES = {
    "400": "Invalid input (ONTAP error envelope; `code` says which rule).",
    "401": "Authentication failed.",
    "403": "Not permitted for this user (code 6).",
    "404": "No such entry (code 4).",
}


def _query_param(name: str, typ: str, description: str) -> Json:
    schema: Json = {"type": typ}
    if typ == "integer":
        schema["minimum"] = 0
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _filters(record: Record) -> list[Json]:
    """One optional query parameter per readable leaf; values use ONTAP's query syntax."""
    out = []
    for f in record.leaves:
        if not f.gettable or f.secret:
            continue
        kind = f.scalar.kind
        desc = f"Filter on `{f.path}` ({'enum' if kind is Kind.ENUM else str(kind)}); "
        desc += "ONTAP query syntax: `*`, `!`, `|`, `<`, `>`, `..`, `null`."
        out.append(
            {
                "name": f.path,
                "in": "query",
                "required": False,
                "description": desc,
                "schema": {"type": "string"},
            }
        )
    return out


def _responses(ok: Json, op: Op) -> Json:
    hal_ok = {"application/hal+json": {"schema": ok}, "application/json": {"schema": ok}}
    out: Json = {"200": {"description": "Success.", "content": hal_ok}}
    err = {"$ref": "#/components/schemas/error_response"}
    content = {"application/hal+json": {"schema": err}, "application/json": {"schema": err}}
    for status, text in _ERROR_STATUSES.items():
        codes = ", ".join(op.errors)
        text += f" Codes: {codes}." if codes else ""
        out[status] = {"description": text, "content": content}
    out["default"] = {"description": "Any other error (ONTAP error envelope).", "content": content}
    return out


def _bulk_result() -> Json:
    return {
        "type": "object",
        "properties": {
            "num_records": {"type": "integer", "description": "Records acted on."},
            "_links": {
                "type": "object",
                "properties": {"self": {"$ref": "#/components/schemas/href"}},
            },
        },
    }


def _operation(ep: Endpoint, method: str, op: Op) -> Json:
    ref = {"$ref": f"#/components/schemas/{op.record.name}"}
    params: list[Json] = [
        {
            "name": key.replace(".", "_"),
            "in": "path",
            "required": True,
            "description": f"ONTAP's `{key}` key (form-encoded, as the netapp-ontap client sends).",
            "schema": {"type": "string"},
        }
        for key in ep.keys
    ]
    body: Json | None = None
    if op.kind == "get_collection":
        params += [_FIELDS, *(_query_param(*p) for p in _COMMON_GET), *_filters(op.record)]
        ok: Json = {"$ref": f"#/components/schemas/{op.record.name}_response"}
    elif op.kind == "get":
        params.append(_FIELDS)
        ok = ref
    elif op.kind == "patch":
        body = ref
        ok = {"type": "object"}
    elif op.kind == "delete":
        ok = {"type": "object"}
    else:  # patch_collection, delete_collection
        params += [*(_query_param(*p) for p in _COMMON_BULK), *_filters(op.record)]
        ok = _bulk_result()
        if op.kind == "patch_collection":
            body = {
                "allOf": [ref],
                "type": "object",
                "properties": {"records": {"type": "array", "items": ref}},
            }
    out: Json = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [ep.path.split("/")[2]],
        "parameters": params,
        "responses": _responses(ok, op),
    }
    if body is not None:
        out["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": body}},
        }
    return out


@cache
def document() -> Json:
    """The whole OpenAPI 3 document (built once; it depends on code only)."""
    from ndmpd.rest.app import endpoints

    paths: Json = {}
    schemas: Json = {
        "error_response": openapi_error_schema(),
        "href": {"type": "object", "properties": {"href": {"type": "string"}}},
    }
    for ep in endpoints():
        item: Json = {}
        for method, op in ep.ops.items():
            if op.kind == "document":
                continue
            item[method.lower()] = _operation(ep, method, op)
            schemas.setdefault(op.record.name, openapi_schema(op.record))
            if op.kind == "get_collection":
                schemas.setdefault(
                    f"{op.record.name}_response", openapi_collection_schema(op.record)
                )
        if item:
            # Path parameters are named with `_` for `.` (`{owner_uuid}`): tools such as
            # schemathesis cannot fill dotted path parameter names.
            paths[ep.route_path] = item
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "ndmpd: ONTAP-compatible NDMP REST API",
            "version": __version__,
            "description": (
                "The NDMP part of NetApp ONTAP's REST API as served by ndmpd "
                f"(compatible with {version_record()['full'].split(':')[0]}). Errors use ONTAP's "
                "envelope `{error: {message, code, target}}`; HAL `_links` unless "
                "`Accept: application/json`. Extension: `ndmpd_backup_engine` on sessions."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        },
        "security": [{"basic": []}],
    }
