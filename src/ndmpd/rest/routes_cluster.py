"""`/api/cluster`, `/api/cluster/nodes` and `/api/svm/svms`: small but true, so links resolve.

`GET /api/cluster` is also the server's readiness check, and tools such as Ansible's
`netapp.ontap` call `GET /api/cluster?fields=version` before anything else.
"""

from __future__ import annotations

from ndmpd.rest.errors import RestError
from ndmpd.rest.query import apply_query, project
from ndmpd.rest.records import (
    CLUSTER_NODES_PATH,
    SVMS_PATH,
    cluster_node_record,
    cluster_record,
    svm_record,
)
from ndmpd.rest.routes_base import Ctx, Endpoint, Json, Op
from ndmpd.rest.schema import CLUSTER, CLUSTER_NODE, SVM


async def get_cluster(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(CLUSTER, collection=False)
    return project(cluster_record(ctx.view), query, hal=ctx.hal)


async def list_nodes(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(CLUSTER_NODE, collection=True)
    return apply_query([cluster_node_record(ctx.view)], query, base_path=ctx.path, hal=ctx.hal)


async def get_node(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(CLUSTER_NODE, collection=False)
    if ctx.key("uuid") != ctx.view.node_uuid:
        raise RestError.not_found("uuid")
    return project(cluster_node_record(ctx.view), query, hal=ctx.hal)


def _svm_records(ctx: Ctx) -> list[Json]:
    view = ctx.view
    return [svm_record(n, u) for n, u in view.svms.items() if view.sees_svm(n)]


async def list_svms(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(SVM, collection=True)
    return apply_query(_svm_records(ctx), query, base_path=ctx.path, hal=ctx.hal)


async def get_svm(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(SVM, collection=False)
    wanted = ctx.key("uuid")
    for rec in _svm_records(ctx):
        if rec["uuid"] == wanted:
            return project(rec, query, hal=ctx.hal)
    raise RestError.not_found("uuid")


ENDPOINTS = [
    Endpoint(
        "/api/cluster",
        {"GET": Op(get_cluster, CLUSTER, "get", "The cluster (one node).", "cluster_get")},
    ),
    Endpoint(
        CLUSTER_NODES_PATH,
        {
            "GET": Op(
                list_nodes, CLUSTER_NODE, "get_collection", "The nodes.", "nodes_collection_get"
            )
        },
    ),
    Endpoint(
        CLUSTER_NODES_PATH + "/{uuid}",
        {"GET": Op(get_node, CLUSTER_NODE, "get", "One node.", "node_get", ("4",))},
        keys=("uuid",),
    ),
    Endpoint(
        SVMS_PATH,
        {
            "GET": Op(
                list_svms,
                SVM,
                "get_collection",
                "The SVMs (an SVM user sees its own).",
                "svm_collection_get",
            )
        },
    ),
    Endpoint(
        SVMS_PATH + "/{uuid}",
        {"GET": Op(get_svm, SVM, "get", "One SVM.", "svm_get", ("4",))},
        keys=("uuid",),
    ),
]
