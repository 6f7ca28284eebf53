"""The Starlette application: ONTAP's REST paths, routed on the raw (still encoded) path.

Routing on the raw path keeps an encoded `/` inside a key (`ndmp+user%2Fx`) inside its segment;
handlers decode keys themselves with `unquote_plus`, as the `netapp-ontap` client form-encodes
them (spec quirk Q5).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from ndmpd.rest import routes_cluster, routes_sessions, routes_settings
from ndmpd.rest.auth import Authenticator
from ndmpd.rest.routes_base import Endpoint, EndpointApp, Services, make_not_found_app

if TYPE_CHECKING:
    from ndmpd.catalog.config import Config
    from ndmpd.catalog.store import Catalog
    from ndmpd.server.listener import NdmpServer

OPENAPI_PATH = "/docs/api"
_SLASHES = re.compile(r"/{2,}")


def endpoints() -> list[Endpoint]:
    """Every endpoint we serve, the one table for routing and the OpenAPI document."""
    from ndmpd.rest import routes_docs

    return [
        *routes_cluster.ENDPOINTS,
        *routes_settings.ENDPOINTS,
        *routes_sessions.ENDPOINTS,
        *routes_docs.ENDPOINTS,
    ]


class RawPath:
    """ASGI middleware: route on the request's raw path instead of the percent-decoded one."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            if raw:
                scope = dict(scope)
                path = raw.split(b"?", 1)[0].decode("latin-1")
                # Repeated slashes are one, as on ONTAP: Ansible's netapp.ontap joins
                # `/api/` and `/protocols/...` into `/api//protocols/...`.
                scope["path"] = _SLASHES.sub("/", path)
        await self.app(scope, receive, send)


def create_app(config: Config, catalog: Catalog, server: NdmpServer) -> Starlette:
    services = Services(config, catalog, server, Authenticator(catalog))
    routes = [Route(ep.route_path, EndpointApp(ep, services)) for ep in endpoints()]
    app = Starlette(routes=routes, middleware=[Middleware(RawPath)])
    app.router.redirect_slashes = False
    app.router.default = make_not_found_app(services)  # type: ignore[method-assign]
    return app
