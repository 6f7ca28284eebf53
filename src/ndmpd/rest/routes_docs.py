"""`/docs/api`: the OpenAPI 3 document (JSON) of this API, for tools and schemathesis."""

from __future__ import annotations

from ndmpd.rest.routes_base import Ctx, Endpoint, Json, Op
from ndmpd.rest.schema import CLUSTER


async def get_document(ctx: Ctx) -> Json:
    from ndmpd.rest.openapi import document

    await ctx.no_body()
    return document()


ENDPOINTS = [
    Endpoint(
        "/docs/api",
        {"GET": Op(get_document, CLUSTER, "document", "The OpenAPI document.", "openapi_get")},
    ),
]
