"""The request pipeline shared by every endpoint: auth, roles, methods, bodies, the envelope.

Endpoints are declared as data (`Endpoint` with one `Op` per method), so the router, OPTIONS/
`Allow`, the role checks and the OpenAPI document all read the same table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import Request
from starlette.responses import Response

from ndmpd.catalog.errors import CatalogError, NotFoundError
from ndmpd.rest.auth import REALM, Authenticator, Principal
from ndmpd.rest.errors import RestError
from ndmpd.rest.query import Query, parse_query
from ndmpd.rest.records import View, make_view
from ndmpd.rest.schema import Record

if TYPE_CHECKING:
    from ndmpd.catalog.config import Config
    from ndmpd.catalog.store import Catalog
    from ndmpd.server.listener import NdmpServer

log = logging.getLogger("ndmpd.rest")

Json = dict[str, Any]
HAL = "application/hal+json"
PLAIN = "application/json"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Services:
    """What handlers reach: the live server, the catalog, the config and the authenticator."""

    config: Config
    catalog: Catalog
    server: NdmpServer
    auth: Authenticator


class Ctx:
    """One authenticated request, with lazily parsed query, body and view."""

    def __init__(
        self, request: Request, services: Services, principal: Principal, view: View | None = None
    ) -> None:
        self.request = request
        self.services = services
        self.catalog = services.catalog
        self.server = services.server
        self.principal = principal
        # the SVM the request is scoped to: the user's own, or the one it tunnels to
        self.svm = view.user_svm if view is not None else principal.svm
        self.method = request.method
        self.path: str = request.scope["path"]  # the raw (still encoded) path
        qs = request.scope.get("query_string", b"").decode("latin-1")
        self.params: list[tuple[str, str]] = parse_qsl(
            qs, keep_blank_values=True, encoding="utf-8", errors="replace"
        )
        accept = request.headers.get("accept", "")
        self.hal = accept.split(";")[0].strip().lower() != PLAIN
        self._view: View | None = view

    def key(self, name: str) -> str:
        """A path key, decoded as the client encoded it (form encoding, spec quirk Q5)."""
        return unquote_plus(self.request.path_params[name], errors="replace")

    @property
    def view(self) -> View:
        if self._view is None:
            self._view = make_view(self.catalog, self.server, self.svm)
        return self._view

    def query(self, record: Record, *, collection: bool) -> Query:
        return parse_query(self.params, record, collection=collection)

    def require_cluster(self) -> None:
        """Node settings and the mode belong to the cluster administrator (spec §1.6), not
        to a request scoped to one SVM (an SVM user, or a tunnelled one)."""
        if self.svm is not None:
            raise RestError.permission_denied()

    def require_admin(self) -> None:
        if not self.principal.is_admin:
            raise RestError.permission_denied()

    async def body(self) -> Any:
        """The JSON body, or None when there is none (empty or whitespace)."""
        raw = await self.request.body()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RestError.malformed_body(f"The request body is not valid JSON: {exc}.") from None

    async def no_body(self) -> None:
        """GET and instance DELETE take no body; `{}` counts as none (spec quirk Q7)."""
        body = await self.body()
        if body is not None and body != {}:
            raise RestError.body_not_allowed()

    async def patch_body(self) -> Json:
        body = await self.body()
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise RestError.malformed_body()
        return body


Handler = Callable[[Ctx], Awaitable[Json]]


@dataclass(frozen=True)
class Op:
    """One method of an endpoint; `kind` drives the OpenAPI document."""

    handler: Handler
    record: Record
    kind: str  # get_collection | get | patch | patch_collection | delete | delete_collection
    summary: str
    operation_id: str
    errors: tuple[str, ...] = ()  # ONTAP codes this operation may answer (for docs)


@dataclass(frozen=True)
class Endpoint:
    """A path (ONTAP template, e.g. `/api/protocols/ndmp/svms/{svm.uuid}`) and its methods."""

    path: str
    ops: dict[str, Op]
    keys: tuple[str, ...] = field(default=())

    @property
    def route_path(self) -> str:
        """The Starlette template: dotted key names become underscores."""
        out = self.path
        for k in self.keys:
            out = out.replace("{" + k + "}", "{" + k.replace(".", "_") + "}")
        return out

    @property
    def allow(self) -> str:
        methods = list(self.ops)
        if "GET" in self.ops:
            methods.append("HEAD")
        methods.append("OPTIONS")
        return ", ".join(methods)


def json_response(
    body: Json, status: int = 200, *, hal: bool = True, pretty: bool = False, head: bool = False
) -> Response:
    if pretty:
        text = json.dumps(body, indent=2, ensure_ascii=False)
    else:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    data = text.encode("utf-8", "replace")
    media = HAL if hal else PLAIN
    if head:
        resp = Response(b"", status_code=status, media_type=media)
        resp.headers["content-length"] = str(len(data))
        return resp
    return Response(data, status_code=status, media_type=media)


def error_response(
    err: RestError, *, hal: bool = True, headers: dict[str, str] | None = None, head: bool = False
) -> Response:
    resp = json_response(err.envelope(), err.status, hal=hal, head=head)
    if err.status == 401:
        resp.headers["www-authenticate"] = f'Basic realm="{REALM}"'
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _wants_hal(request: Request) -> bool:
    return request.headers.get("accept", "").split(";")[0].strip().lower() != PLAIN


def _is_pretty(request: Request) -> bool:
    qs = request.scope.get("query_string", b"")
    return b"pretty=true" in qs.lower()


def tunnelled_view(request: Request, services: Services, principal: Principal) -> View | None:
    """The view of the one SVM named by the ``X-Dot-SVM-Name`` / ``X-Dot-SVM-UUID`` headers
    (spec §3.1: a request scoped to one SVM, as on its own LIF), or None when neither is sent."""
    name = request.headers.get("x-dot-svm-name")
    svm_uuid = request.headers.get("x-dot-svm-uuid")
    if name is None and svm_uuid is None:
        return None
    view = make_view(services.catalog, services.server, principal.svm)
    if svm_uuid is not None:
        found = view.svm_name_by_uuid(svm_uuid.strip().lower())
        if found is None:
            raise RestError.invalid_argument(f'SVM "{svm_uuid}" does not exist.', "X-Dot-SVM-UUID")
        if name is not None and name.strip() != found:
            raise RestError.invalid_argument(
                "X-Dot-SVM-Name and X-Dot-SVM-UUID name different SVMs.", "X-Dot-SVM-Name"
            )
    else:
        assert name is not None
        found = name.strip()
        if found not in view.svms:
            raise RestError.invalid_argument(f'SVM "{name}" does not exist.', "X-Dot-SVM-Name")
    if not view.sees_svm(found):
        raise RestError.permission_denied()  # an SVM user stays in its own SVM
    return dataclasses.replace(view, user_svm=found)


async def authenticate(request: Request, services: Services) -> Principal:
    client = request.client
    address = client.host if client else "unknown"
    return await services.auth.authenticate(request.headers.get("authorization"), address)


class EndpointApp:
    """The ASGI app of one path: every method comes here (ours answer 405 with `Allow`)."""

    def __init__(self, endpoint: Endpoint, services: Services) -> None:
        self.endpoint = endpoint
        self.services = services
        self.allow = endpoint.allow

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        method = request.method
        hal = _wants_hal(request)
        head = method == "HEAD"
        try:
            principal = await authenticate(request, self.services)
            if method == "OPTIONS":
                return Response(b"", status_code=200, headers={"Allow": self.allow})
            op = self.endpoint.ops.get("GET" if head else method)
            if op is None:
                raise RestError.not_supported(
                    f'The method "{method}" is not supported on this resource.'
                )
            if method not in READ_METHODS and not principal.is_admin:
                raise RestError.permission_denied()
            ctx = Ctx(
                request, self.services, principal, tunnelled_view(request, self.services, principal)
            )
            body = await op.handler(ctx)
            hal_out = hal and op.kind != "document"  # the OpenAPI document is plain JSON
            return json_response(body, hal=hal_out, pretty=_is_pretty(request), head=head)
        except RestError as err:
            headers = {"Allow": self.allow} if err.status == 405 else None
            return error_response(err, hal=hal, headers=headers, head=head)
        except NotFoundError:
            return error_response(RestError.not_found(), hal=hal, head=head)
        except CatalogError as exc:
            return error_response(RestError.invalid_argument(str(exc)), hal=hal, head=head)
        except Exception:
            log.exception("REST %s %s failed", method, request.scope.get("path"))
            return error_response(RestError.internal(), hal=hal, head=head)


def make_not_found_app(services: Services) -> Callable:
    """Unknown paths: authenticate first (no probing without credentials), then 404 code 4."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        hal = _wants_hal(request)
        head = request.method == "HEAD"
        try:
            await authenticate(request, services)
            err = RestError.not_found()
        except RestError as exc:
            err = exc
        await error_response(err, hal=hal, head=head)(scope, receive, send)

    return app
