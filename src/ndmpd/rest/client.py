"""A small client of our own ONTAP-style REST API, for the `ndmpd sessions` commands.

The CLI never reaches into a running server: it asks the REST API, exactly as an ONTAP tool
would, so what it shows is what any other client sees. Every failure becomes one `RestError`
whose text is a single line a user can act on.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ndmpd.catalog.config import Config

SESSIONS = "/api/protocols/ndmp/sessions"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})
# Filter characters that carry meaning in ONTAP's query language (spec §3.5).
_FILTER_SPECIALS = frozenset('*|!<>.,{}" \\')


class RestError(Exception):
    """A REST request failed; the text is one line for the user, `status` the HTTP status."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach a server: base URL and the TLS trust to use for it."""

    url: str
    cert: Path | None = None  # the server's own certificate, pinned when the URL is https


def endpoint_from_config(config: Config, url: str | None = None) -> Endpoint:
    """The REST endpoint of the server that `config` describes (or `url`, if given).

    A wildcard listen address means "every interface", so a local client uses 127.0.0.1.
    The certificate to pin is the configured `rest.cert`, else the self-signed `tls.crt`
    that the server made in its state directory.
    """
    cert = config.rest.cert if config.rest.cert else config.state_dir / "tls.crt"
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RestError(f"not an http(s) URL: {url!r}")
        return Endpoint(url.rstrip("/"), cert if parts.scheme == "https" else None)
    host = config.rest.listen_host
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = config.rest.listen_port
    if not port:
        raise RestError("the configuration's REST port is 0 (chosen at start): give --url")
    scheme = "https" if config.rest.tls else "http"
    return Endpoint(f"{scheme}://{host}:{port}", cert if config.rest.tls else None)


def pinned_context(cert: Path) -> ssl.SSLContext:
    """Trust exactly the server's own certificate and nothing else.

    The certificate itself is the only trust anchor (partial chain), so a self-signed one works
    and a CA-issued one needs no CA bundle. The host name is not checked: the pin already
    identifies the server, and a wildcard listen address is reached as 127.0.0.1, a name the
    certificate need not carry.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        ctx.load_verify_locations(cafile=str(cert))
    except (OSError, ssl.SSLError) as exc:
        raise RestError(f"cannot load the server certificate {cert}: {exc}") from None
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    return ctx


def session_path(owner: str, session_id: str) -> str:
    """The instance path; both keys are percent-encoded as whole segments."""
    return f"{SESSIONS}/{quote(owner, safe='')}/{quote(session_id, safe='')}"


def filter_literal(value: str) -> str:
    """A filter value that matches `value` exactly, quoted when it has query-language meaning."""
    if not any(c in _FILTER_SPECIALS for c in value) and value.lower() != "null":
        return value
    if '"' in value:
        raise RestError(f"cannot look up a session id containing '\"': {value!r}")
    return f'"{value}"'


class RestClient:
    """Blocking client on one keep-alive `httpx.Client`; use as a context manager."""

    def __init__(
        self,
        endpoint: Endpoint,
        user: str,
        password: str,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.user = user
        verify: ssl.SSLContext | bool = True
        cert = endpoint.cert
        if endpoint.url.startswith("https:") and cert is not None and cert.exists():
            verify = pinned_context(cert)
        self._http = httpx.Client(
            base_url=endpoint.url,
            auth=httpx.BasicAuth(user, password),
            verify=verify,
            timeout=timeout,
            headers={"Accept": "application/hal+json"},
        )

    def __enter__(self) -> RestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests ------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        """One request; the decoded JSON body, or `RestError` with ONTAP's error message."""
        try:
            resp = self._http.request(method, path, params=params, json=json)
        except httpx.ConnectError as exc:
            raise RestError(self._connect_error(exc)) from None
        except httpx.TimeoutException:
            raise RestError(f"no answer from {self.endpoint.url} (timed out)") from None
        except httpx.HTTPError as exc:
            raise RestError(f"{self.endpoint.url}: {exc or type(exc).__name__}") from None
        if resp.status_code >= 400:
            raise self._status_error(resp)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            raise RestError(
                f"{method} {path}: the server answered {resp.status_code} with a body that is "
                "not JSON"
            ) from None

    def collection(self, path: str, params: Mapping[str, str] | None = None) -> list[dict]:
        """Every record of a collection, following `_links.next` to the end."""
        records: list[dict] = []
        body = self.request("GET", path, params)
        seen: set[str] = set()
        while True:
            records.extend(body.get("records") or [])
            href = ((body.get("_links") or {}).get("next") or {}).get("href")
            if not href or href in seen:
                return records
            seen.add(href)
            body = self.request("GET", href)

    # -- sessions ------------------------------------------------------------------------------

    def sessions(self, fields: str = "*", **filters: str) -> list[dict]:
        return self.collection(SESSIONS, {"fields": fields, **filters})

    def session(self, owner: str, session_id: str, fields: str = "*") -> dict:
        try:
            return dict(self.request("GET", session_path(owner, session_id), {"fields": fields}))
        except RestError as exc:
            if exc.status == 404:
                raise RestError(f"no session {owner}/{session_id}", exc.status, exc.code) from None
            raise

    def resolve(self, ident: str, fields: str = "*") -> dict:
        """The session named by `OWNER/ID`, or by its `ID` alone when that is unambiguous."""
        owner, sep, session_id = ident.partition("/")
        if sep:
            if not owner or not session_id:
                raise RestError(f"not a session id: {ident!r} (use ID or OWNER/ID)")
            return self.session(owner, session_id, fields)
        found = self.sessions(fields, id=filter_literal(ident))
        if not found:
            raise RestError(f"no session with id {ident}")
        if len(found) > 1:
            owners = ", ".join(f"{r.get('uuid')}/{r.get('id')}" for r in found)
            raise RestError(f"session id {ident} is ambiguous; give OWNER/ID, one of: {owners}")
        return dict(found[0])

    def kill(self, owner: str, session_id: str) -> None:
        try:
            self.request("DELETE", session_path(owner, session_id))
        except RestError as exc:
            if exc.status == 404:
                raise RestError(
                    f"no session {owner}/{session_id} (it may have ended)", exc.status, exc.code
                ) from None
            raise

    # -- errors --------------------------------------------------------------------------------

    def _connect_error(self, exc: httpx.ConnectError) -> str:
        text = str(exc)
        url = self.endpoint.url
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            pin = self.endpoint.cert if self.endpoint.cert and self.endpoint.cert.exists() else None
            why = text.split("certificate verify failed:")[-1].split("(_ssl")[0].strip(" )")
            where = f"the pinned certificate {pin}" if pin else "the system's CA certificates"
            return f"{url}: TLS certificate verification against {where} failed ({why})"
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return f"{url}: the server does not speak TLS there (try http://)"
        if "refused" in text.lower():
            return (
                f"cannot connect to the REST API at {url}: connection refused (is ndmpd running?)"
            )
        return f"cannot connect to the REST API at {url}: {text or type(exc).__name__}"

    def _status_error(self, resp: httpx.Response) -> RestError:
        status = resp.status_code
        message: str | None = None
        code: str | None = None
        try:
            err = resp.json().get("error") or {}
            message = err.get("message")
            code = err.get("code")
        except (ValueError, AttributeError):
            pass
        if status == 401:
            text = f"authentication failed for user {self.user!r} at {self.endpoint.url} (401)"
        elif status == 403:
            text = f"user {self.user!r} may not do this: {message or 'permission denied'} (403)"
        else:
            what = f"{resp.request.method} {resp.request.url.path}"
            text = f"{what}: {message or resp.reason_phrase} ({status})"
        return RestError(text, status, code)
