"""`/api/protocols/ndmp/sessions`: list, show and kill live NDMP sessions (spec §5.10-§5.13)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING

from ndmpd.rest.errors import RestError
from ndmpd.rest.query import apply_query, match_filters, project
from ndmpd.rest.records import SESSIONS_PATH, session_record, visible_sessions
from ndmpd.rest.routes_base import Ctx, Endpoint, Json, Op
from ndmpd.rest.schema import NDMP_SESSION

if TYPE_CHECKING:
    from ndmpd.server.session import Session

KILL_WAIT = 1.0  # seconds a DELETE waits for the killed connections to close
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def _find(ctx: Ctx, owner: str, session_id: str) -> Session:
    """The live session at `{owner.uuid}/{session.id}`, as the caller may see it, else 404."""
    if not _UUID_RE.fullmatch(owner):
        raise RestError.ndmp_invalid_uuid("owner.uuid")
    view = ctx.view
    session = None
    if session_id.isdigit() and len(session_id) < 19:
        session = ctx.server.sessions.get(int(session_id))
    if session is None or view.owner_uuid(session) != owner or not view.sees_svm(session.svm):
        raise RestError.not_found("session.id")
    return session


async def _kill(sessions: list[Session]) -> None:
    for s in sessions:
        s.kill("killed through the REST API")
    waits = [s.closed.wait() for s in sessions]
    if waits:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), KILL_WAIT)


async def list_sessions(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(NDMP_SESSION, collection=True)
    view = ctx.view
    records = [session_record(s, view) for s in visible_sessions(ctx.server, view)]
    return apply_query(records, query, base_path=ctx.path, hal=ctx.hal)


async def get_session(ctx: Ctx) -> Json:
    await ctx.no_body()
    query = ctx.query(NDMP_SESSION, collection=False)
    session = _find(ctx, ctx.key("owner_uuid"), ctx.key("session_id"))
    return project(session_record(session, ctx.view), query, hal=ctx.hal)


async def delete_session(ctx: Ctx) -> Json:
    await ctx.no_body()
    ctx.query(NDMP_SESSION, collection=False)
    session = _find(ctx, ctx.key("owner_uuid"), ctx.key("session_id"))
    await _kill([session])
    return {}


async def delete_sessions(ctx: Ctx) -> Json:
    """Query-based kill with at least one filter, or record-based; never "kill everything"."""
    body = await ctx.body()
    query = ctx.query(NDMP_SESSION, collection=True)
    view = ctx.view
    targets: list[Session] = []
    if query.has_filters:
        if body not in (None, {}):
            raise RestError.body_not_allowed()
        for s in visible_sessions(ctx.server, view):
            if match_filters(session_record(s, view), query):
                targets.append(s)
    elif isinstance(body, dict) and "records" in body:
        extra = [k for k in body if k != "records"]
        if extra:
            raise RestError.unexpected_argument(extra[0])
        records = body["records"]
        if not isinstance(records, list) or not records:
            raise RestError.invalid_value(records, "records", "A non-empty array is expected.")
        for rec in records:
            if not isinstance(rec, dict):
                raise RestError.invalid_value(rec, "records", "Each record must be an object.")
            owner, sid = rec.get("uuid"), rec.get("id")
            if not isinstance(owner, str) or not isinstance(sid, str):
                raise RestError.ndmp_session_key_required()
            targets.append(_find(ctx, owner, sid))
    elif body not in (None, {}):
        raise RestError.malformed_body('Expected no body, {} or {"records": [...]}.')
    else:
        raise RestError.filter_required()
    await _kill(targets)
    out: Json = {"num_records": len(targets)}
    if ctx.hal:
        qs = ctx.request.scope.get("query_string", b"").decode("latin-1")
        out["_links"] = {"self": {"href": f"{ctx.path}?{qs}" if qs else ctx.path}}
    return out


ENDPOINTS = [
    Endpoint(
        SESSIONS_PATH,
        {
            "GET": Op(
                list_sessions,
                NDMP_SESSION,
                "get_collection",
                "Lists the live NDMP sessions.",
                "ndmp_node_sessions_collection_get",
            ),
            "DELETE": Op(
                delete_sessions,
                NDMP_SESSION,
                "delete_collection",
                "Kills the sessions matching the filters (at least one filter or a records "
                "array is required).",
                "ndmp_node_session_delete_collection",
                ("262212", "68812806", "4"),
            ),
        },
    ),
    Endpoint(
        SESSIONS_PATH + "/{owner.uuid}/{session.id}",
        {
            "GET": Op(
                get_session,
                NDMP_SESSION,
                "get",
                "Shows one NDMP session.",
                "ndmp_node_session_get",
                ("4", "68812802"),
            ),
            "DELETE": Op(
                delete_session,
                NDMP_SESSION,
                "delete",
                "Kills one NDMP session: data and mover halt (aborted), the DMA is told, the "
                "connection closes within a second.",
                "ndmp_node_session_delete",
                ("4", "68812802"),
            ),
        },
        keys=("owner.uuid", "session.id"),
    ),
]
