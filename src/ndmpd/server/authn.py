"""NDMP authentication: which credentials open a session, and for which SVM.

ONTAP semantics (spec/ontap-ndmp-rest.md §1.4-1.5): in SVM scope a DMA authenticates with an
NDMP password generated per user and SVM (with ``plaintext_sso``, TEXT with the user's login
password instead); an SVM user may use only its own SVM, the cluster
``admin`` any SVM, and the password itself tells which. Each SVM decides whether it is
enabled and whether ``plaintext`` (TEXT) and ``challenge`` (MD5) are accepted. In node scope
the node's settings decide, with the node's NDMP user and password.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol

from ndmpd.protocol.auth import md5_digest
from ndmpd.protocol.constants import AuthType

_REST_NAME = {AuthType.TEXT: "plaintext", AuthType.MD5: "challenge"}


class CatalogView(Protocol):
    """The part of the catalog authentication reads (ndmpd.catalog.store.Catalog)."""

    def ndmp_mode(self) -> str: ...
    def svm_settings(self, svm: str) -> object: ...
    def node_settings(self) -> object: ...
    def node_password(self) -> str | None: ...
    def ndmp_secret_for(self, auth_id: str, svm: str) -> str | None: ...
    def verify_login(self, name: str, password: str) -> object | None: ...


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    svm: str | None = None
    reason: str = ""


def _accepts(settings: object, auth_type: AuthType) -> bool:
    if not getattr(settings, "enabled", False):
        return False
    types = tuple(getattr(settings, "authentication_types", ()))
    name = _REST_NAME.get(auth_type)
    if name is None:
        return False
    if name == "plaintext" and "plaintext_sso" in types:
        return True
    return name in types


def _matches(
    secret: str, auth_type: AuthType, password: bytes, challenge: bytes | None, digest: bytes
) -> bool:
    if not secret:
        return False
    if auth_type == AuthType.TEXT:
        return hmac.compare_digest(secret.encode(), password)
    if challenge is None:
        return False
    return hmac.compare_digest(md5_digest(secret.encode(), challenge), digest)


def offered_types(catalog: CatalogView, svms: list[str]) -> list[AuthType]:
    """The auth types some SVM (or the node, in node scope) accepts, for GET_SERVER_INFO."""
    if catalog.ndmp_mode() == "node":
        candidates = [catalog.node_settings()]
    else:
        candidates = [catalog.svm_settings(s) for s in svms]
    return [t for t in (AuthType.TEXT, AuthType.MD5) if any(_accepts(c, t) for c in candidates)]


def authenticate(
    catalog: CatalogView,
    svms: list[str],
    auth_type: AuthType,
    auth_id: str,
    *,
    password: bytes = b"",
    challenge: bytes | None = None,
    digest: bytes = b"",
) -> AuthResult:
    """Check one CONNECT_CLIENT_AUTH; the reason is for the log, never for the DMA."""
    if auth_type not in _REST_NAME:
        return AuthResult(False, reason=f"auth type {auth_type.name} not offered")
    if auth_type == AuthType.MD5 and challenge is None:
        return AuthResult(False, reason="MD5 without a prior CONFIG_GET_AUTH_ATTR challenge")
    if catalog.ndmp_mode() == "node":
        settings = catalog.node_settings()
        if not getattr(settings, "enabled", False):
            return AuthResult(False, reason="NDMP is disabled on this node")
        if not _accepts(settings, auth_type):
            return AuthResult(False, reason=f"{_REST_NAME[auth_type]} not enabled on the node")
        node_user = getattr(settings, "user", None)
        node_pw = catalog.node_password()
        if (
            node_user
            and auth_id == node_user
            and node_pw
            and _matches(node_pw, auth_type, password, challenge, digest)
        ):
            return AuthResult(True, svm=svms[0] if svms else None)
        # Cluster users keep working in node scope with their generated NDMP password.
        for svm in svms:
            secret = catalog.ndmp_secret_for(auth_id, svm)
            if secret and _matches(secret, auth_type, password, challenge, digest):
                return AuthResult(True, svm=svm)
        return AuthResult(False, reason=f"bad credentials for user {auth_id!r}")
    disabled = []
    for svm in svms:
        secret = catalog.ndmp_secret_for(auth_id, svm)
        if secret is None:
            continue
        settings = catalog.svm_settings(svm)
        sso = "plaintext_sso" in tuple(getattr(settings, "authentication_types", ()))
        if sso and auth_type == AuthType.TEXT:
            # plaintext_sso: the user's own login password, no generated NDMP password
            pw = password.decode("utf-8", "surrogateescape")
            if catalog.verify_login(auth_id, pw) is None:
                continue
        elif not _matches(secret, auth_type, password, challenge, digest):
            continue
        if not getattr(settings, "enabled", False):
            disabled.append(f"NDMP is disabled on SVM {svm}")
            continue
        if not _accepts(settings, auth_type):
            disabled.append(f"{_REST_NAME[auth_type]} authentication is not enabled on SVM {svm}")
            continue
        return AuthResult(True, svm=svm)
    if disabled:
        return AuthResult(False, reason="; ".join(disabled))
    return AuthResult(False, reason=f"bad credentials for user {auth_id!r}")
