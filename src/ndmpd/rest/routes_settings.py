"""NDMP settings that act: the mode, node and SVM settings, and generated NDMP passwords.

Every PATCH writes the catalog, which the NDMP server reads on each authentication, so a change
takes effect for the next login and survives a restart (spec §5.1-§5.9).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ndmpd.catalog.errors import NotFoundError, PasswordUnavailableError
from ndmpd.rest.errors import RestError
from ndmpd.rest.query import apply_query, match_filters, project, validate_patch
from ndmpd.rest.records import (
    NDMP_NODES_PATH,
    NDMP_SVMS_PATH,
    cluster_ndmp_record,
    ndmp_node_record,
    ndmp_password_record,
    ndmp_svm_record,
)
from ndmpd.rest.routes_base import Ctx, Endpoint, Json, Op
from ndmpd.rest.schema import (
    CLUSTER_NDMP_PROPERTIES,
    NDMP_NODE,
    NDMP_PASSWORD,
    NDMP_SVM,
    Record,
)

_FORBIDDEN_IN_PASSWORD = ("\0", "\r", "\n")

# -- the mode -----------------------------------------------------------------------------


async def get_mode(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(CLUSTER_NDMP_PROPERTIES, collection=False)
    return project(cluster_ndmp_record(ctx.catalog.ndmp_mode()), query, hal=ctx.hal)


async def patch_mode(ctx: Ctx) -> Json:
    ctx.require_cluster()
    ctx.query(CLUSTER_NDMP_PROPERTIES, collection=False)
    changes = validate_patch(await ctx.patch_body(), CLUSTER_NDMP_PROPERTIES)
    if "mode" in changes:
        ctx.catalog.set_ndmp_mode(changes["mode"])
    return {}


# -- shared: checks and the collection PATCH ------------------------------------------------


def _check_types(types: list[str] | None) -> None:
    if types is not None and not types:
        raise RestError.invalid_value(
            "[]", "authentication_types", "At least one authentication type is required."
        )


def _check_node(ctx: Ctx, changes: Json) -> None:
    """ONTAP's node rules: challenge stays on; a user before enabling; sane strings."""
    types = changes.get("authentication_types")
    _check_types(types)
    if types is not None and "challenge" not in types:
        raise RestError.invalid_value(
            ",".join(types),
            "authentication_types",
            '"challenge" cannot be disabled in node scope.',
        )
    user = changes.get("user")
    if user is not None and (not user.strip() or any(c in user for c in _FORBIDDEN_IN_PASSWORD)):
        raise RestError.invalid_value(user, "user", "A non-empty user name is expected.")
    if changes.get("enabled") and not (user or ctx.catalog.node_settings().user):
        raise RestError.ndmp_user_required()
    password = changes.get("password")
    if password is not None and (
        not password or any(c in password for c in _FORBIDDEN_IN_PASSWORD)
    ):
        # Never echo the value of a password.
        raise RestError.invalid_value(
            "********", "password", "The password must not be empty or contain NUL or newlines."
        )


def _apply_node(ctx: Ctx, _key: str, changes: Json) -> None:
    if changes:
        ctx.catalog.set_node_settings(
            enabled=changes.get("enabled"),
            authentication_types=changes.get("authentication_types"),
            user=changes.get("user"),
            password=changes.get("password"),
        )


def _check_svm(_ctx: Ctx, changes: Json) -> None:
    types = changes.get("authentication_types")
    _check_types(types)
    if types is not None and "plaintext_sso" in types and len(types) > 1:
        raise RestError.ndmp_sso_not_exclusive()


def _apply_svm(ctx: Ctx, name: str, changes: Json) -> None:
    if changes:
        ctx.catalog.set_svm_settings(
            name,
            enabled=changes.get("enabled"),
            authentication_types=changes.get("authentication_types"),
        )


async def _patch_collection(
    ctx: Ctx,
    schema: Record,
    ref: str,
    candidates: list[tuple[Json, str]],
    check: Callable[[Ctx, Json], None],
    apply: Callable[[Ctx, str, Json], None],
) -> Json:
    """Query-based (at least one filter) or record-based (`records`, each with its `ref`)."""
    body = await ctx.patch_body()
    query = ctx.query(schema, collection=True)
    plan: list[tuple[str, Json]] = []
    if query.has_filters:
        changes = validate_patch(body, schema)
        check(ctx, changes)
        plan = [(k, changes) for rec, k in candidates if match_filters(rec, query)]
    elif "records" in body:
        records = body["records"]
        common = {k: v for k, v in body.items() if k != "records"}
        if not isinstance(records, list) or not records:
            raise RestError.invalid_value(records, "records", "A non-empty array is expected.")
        for item in records:
            if not isinstance(item, dict):
                raise RestError.invalid_value(item, "records", "Each record must be an object.")
            item = dict(item)
            key_obj = item.pop(ref, None)
            key = _resolve(key_obj, ref, candidates)
            changes = validate_patch({**common, **item}, schema)
            check(ctx, changes)
            plan.append((key, changes))
    else:
        raise RestError.filter_required()
    for key, changes in plan:
        apply(ctx, key, changes)
    out: Json = {"num_records": len(plan)}
    if ctx.hal:
        qs = ctx.request.scope.get("query_string", b"").decode("latin-1")
        out["_links"] = {"self": {"href": f"{ctx.path}?{qs}" if qs else ctx.path}}
    return out


def _resolve(key_obj: Any, ref: str, candidates: list[tuple[Json, str]]) -> str:
    """The target of one record-based entry, by `{ref: {uuid}}` or `{ref: {name}}`."""
    if not isinstance(key_obj, dict) or not (key_obj.get("uuid") or key_obj.get("name")):
        raise RestError.required_value_missing(f"{ref}.uuid")
    for rec, key in candidates:
        own = rec[ref]
        if key_obj.get("uuid") in (None, own["uuid"]) and key_obj.get("name") in (
            None,
            own["name"],
        ):
            return key
    raise RestError.not_found(f"{ref}.uuid")


# -- nodes (node scope) ---------------------------------------------------------------------


def _node_scope(ctx: Ctx) -> None:
    ctx.require_cluster()
    if ctx.catalog.ndmp_mode() != "node":
        raise RestError.ndmp_node_op_in_svm_mode()


def _node_target(ctx: Ctx) -> Json:
    node_uuid = ctx.key("node_uuid")
    if node_uuid != ctx.view.node_uuid:
        raise RestError.not_found("node.uuid")
    return ndmp_node_record(ctx.catalog, ctx.view)


async def list_ndmp_nodes(ctx: Ctx) -> Json:
    await ctx.no_body()
    _node_scope(ctx)
    query = ctx.query(NDMP_NODE, collection=True)
    records = [ndmp_node_record(ctx.catalog, ctx.view)]
    return apply_query(records, query, base_path=ctx.path, hal=ctx.hal)


async def get_ndmp_node(ctx: Ctx) -> Json:
    await ctx.no_body()
    _node_scope(ctx)
    query = ctx.query(NDMP_NODE, collection=False)
    return project(_node_target(ctx), query, hal=ctx.hal)


async def patch_ndmp_node(ctx: Ctx) -> Json:
    _node_scope(ctx)
    ctx.query(NDMP_NODE, collection=False)
    _node_target(ctx)
    changes = validate_patch(await ctx.patch_body(), NDMP_NODE)
    _check_node(ctx, changes)
    _apply_node(ctx, ctx.view.node_uuid, changes)
    return {}


async def patch_ndmp_nodes(ctx: Ctx) -> Json:
    _node_scope(ctx)
    rec = ndmp_node_record(ctx.catalog, ctx.view)
    return await _patch_collection(
        ctx, NDMP_NODE, "node", [(rec, ctx.view.node_uuid)], _check_node, _apply_node
    )


# -- SVMs (SVM scope) -----------------------------------------------------------------------


def _svm_scope(ctx: Ctx) -> None:
    if ctx.catalog.ndmp_mode() == "node":
        raise RestError.ndmp_svm_aware_disabled()


def _svm_candidates(ctx: Ctx) -> list[tuple[Json, str]]:
    view = ctx.view
    return [
        (ndmp_svm_record(ctx.catalog, name, u), name)
        for name, u in view.svms.items()
        if view.sees_svm(name)
    ]


def _svm_name(ctx: Ctx, svm_uuid: str) -> str:
    """The SVM at `{svm.uuid}` if the caller may see it, else 404 (malformed UUID: code 2)."""
    if not svm_uuid or len(svm_uuid) > 64:
        raise RestError.invalid_argument(f'Invalid SVM UUID "{svm_uuid[:64]}".', "svm.uuid")
    view = ctx.view
    name = view.svm_name_by_uuid(svm_uuid)
    if name is None or not view.sees_svm(name):
        raise RestError.not_found("svm.uuid")
    return name


async def list_ndmp_svms(ctx: Ctx) -> Json:
    await ctx.no_body()
    _svm_scope(ctx)
    query = ctx.query(NDMP_SVM, collection=True)
    records = [rec for rec, _ in _svm_candidates(ctx)]
    return apply_query(records, query, base_path=ctx.path, hal=ctx.hal)


async def get_ndmp_svm(ctx: Ctx) -> Json:
    await ctx.no_body()
    _svm_scope(ctx)
    query = ctx.query(NDMP_SVM, collection=False)
    svm_uuid = ctx.key("svm_uuid")
    name = _svm_name(ctx, svm_uuid)
    return project(ndmp_svm_record(ctx.catalog, name, svm_uuid), query, hal=ctx.hal)


async def patch_ndmp_svm(ctx: Ctx) -> Json:
    _svm_scope(ctx)
    ctx.query(NDMP_SVM, collection=False)
    name = _svm_name(ctx, ctx.key("svm_uuid"))
    changes = validate_patch(await ctx.patch_body(), NDMP_SVM)
    _check_svm(ctx, changes)
    _apply_svm(ctx, name, changes)
    return {}


async def patch_ndmp_svms(ctx: Ctx) -> Json:
    _svm_scope(ctx)
    return await _patch_collection(
        ctx, NDMP_SVM, "svm", _svm_candidates(ctx), _check_svm, _apply_svm
    )


async def get_password(ctx: Ctx) -> Json:
    """Generates the NDMP password of an SVM user: the one place a secret is returned."""
    await ctx.no_body()
    _svm_scope(ctx)
    ctx.require_admin()
    query = ctx.query(NDMP_PASSWORD, collection=False)
    svm_uuid = ctx.key("svm_uuid")
    name = _svm_name(ctx, svm_uuid)
    user = ctx.key("user")
    if ctx.principal.svm is not None:
        # An SVM administrator gets passwords of its own SVM's users only, never a cluster one's.
        target = ctx.catalog.get_user(user)
        if target is None or target.svm != ctx.principal.svm:
            raise RestError.not_found("user")
    try:
        password = ctx.catalog.ndmp_password(user, name)
    except PasswordUnavailableError:
        raise RestError.ndmp_sso_no_password() from None
    except NotFoundError:
        raise RestError.not_found("user") from None
    return project(ndmp_password_record(name, svm_uuid, user, password), query, hal=ctx.hal)


ENDPOINTS = [
    Endpoint(
        "/api/protocols/ndmp",
        {
            "GET": Op(
                get_mode,
                CLUSTER_NDMP_PROPERTIES,
                "get",
                "The NDMP mode (svm or node).",
                "cluster_ndmp_get",
            ),
            "PATCH": Op(
                patch_mode,
                CLUSTER_NDMP_PROPERTIES,
                "patch",
                "Changes the NDMP mode (cluster administrators only).",
                "cluster_ndmp_modify",
            ),
        },
    ),
    Endpoint(
        NDMP_NODES_PATH,
        {
            "GET": Op(
                list_ndmp_nodes,
                NDMP_NODE,
                "get_collection",
                "NDMP settings of the nodes (node scope only).",
                "ndmp_node_collection_get",
                ("68812801",),
            ),
            "PATCH": Op(
                patch_ndmp_nodes,
                NDMP_NODE,
                "patch_collection",
                "Changes the NDMP settings of the matching nodes (filter or records).",
                "ndmp_node_modify_collection",
                ("68812800", "68812801", "262212"),
            ),
        },
    ),
    Endpoint(
        NDMP_NODES_PATH + "/{node.uuid}",
        {
            "GET": Op(
                get_ndmp_node,
                NDMP_NODE,
                "get",
                "NDMP settings of one node.",
                "ndmp_node_get",
                ("4", "68812801"),
            ),
            "PATCH": Op(
                patch_ndmp_node,
                NDMP_NODE,
                "patch",
                "Changes the NDMP settings of one node; the password is write-only.",
                "ndmp_node_modify",
                ("4", "68812800", "68812801"),
            ),
        },
        keys=("node.uuid",),
    ),
    Endpoint(
        NDMP_SVMS_PATH,
        {
            "GET": Op(
                list_ndmp_svms,
                NDMP_SVM,
                "get_collection",
                "NDMP settings of the SVMs (SVM scope only).",
                "ndmp_svm_collection_get",
                ("65601536",),
            ),
            "PATCH": Op(
                patch_ndmp_svms,
                NDMP_SVM,
                "patch_collection",
                "Changes the NDMP settings of the matching SVMs (filter or records).",
                "ndmp_svm_modify_collection",
                ("65601536", "65601551", "262212"),
            ),
        },
    ),
    Endpoint(
        NDMP_SVMS_PATH + "/{svm.uuid}",
        {
            "GET": Op(
                get_ndmp_svm,
                NDMP_SVM,
                "get",
                "NDMP settings of one SVM.",
                "ndmp_svm_get",
                ("2", "4", "65601536"),
            ),
            "PATCH": Op(
                patch_ndmp_svm,
                NDMP_SVM,
                "patch",
                "Changes the NDMP settings of one SVM.",
                "ndmp_svm_modify",
                ("4", "65601536", "65601551"),
            ),
        },
        keys=("svm.uuid",),
    ),
    Endpoint(
        NDMP_SVMS_PATH + "/{svm.uuid}/passwords/{user}",
        {
            "GET": Op(
                get_password,
                NDMP_PASSWORD,
                "get",
                "Generates the NDMP password of a user of the SVM (administrators only).",
                "ndmp_password_get",
                ("4", "65601536", "65601560"),
            )
        },
        keys=("svm.uuid", "user"),
    ),
]
