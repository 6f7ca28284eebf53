"""HTTP Basic authentication, roles, and the slow-down of failed logins per client address.

A successful login is remembered for a second (keyed by an HMAC of the password under a
per-process key, never the password itself), so a busy client costs no scrypt and no thread
hop per request; a changed password or removed user takes effect within that second. Failed
logins are checked in a worker thread (scrypt must not stall the event loop) and each address
that keeps failing gets an increasing delay, capped, and is serialised, so guessing from one
address runs at a crawl while other clients are unaffected. Passwords are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ndmpd.rest.errors import Code, RestError

if TYPE_CHECKING:
    from ndmpd.catalog.store import Catalog, User

log = logging.getLogger("ndmpd.rest")

REALM = "ndmpd"
SUCCESS_TTL = 1.0  # seconds a verified login is trusted without asking the catalog
FREE_FAILURES = 3  # failures per window before any delay
FAILURE_WINDOW = 300.0  # seconds a failure is remembered
BASE_DELAY = 0.25  # the first delayed failure waits this long; doubling, up to MAX_DELAY
MAX_DELAY = 4.0
_MAX_TRACKED = 10_000  # addresses remembered at most (the oldest are forgotten first)
_MAX_CACHED = 1_000


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    name: str
    role: str  # "admin" | "readonly"
    svm: str | None  # None: a cluster user

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_cluster(self) -> bool:
        return self.svm is None


def unauthenticated() -> RestError:
    return RestError(401, Code.PERMISSION_DENIED, "Authentication failed.")


@dataclass
class _Failures:
    count: int
    first: float
    lock: asyncio.Lock


class Authenticator:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._key = os.urandom(32)
        self._ok: OrderedDict[tuple[str, bytes], tuple[Principal, float]] = OrderedDict()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def delay_for(self, count: int) -> float:
        """Seconds a failed login waits once `count` failures are on record."""
        extra = count - FREE_FAILURES
        if extra <= 0:
            return 0.0
        return min(MAX_DELAY, BASE_DELAY * (2 ** (extra - 1)))

    async def authenticate(self, header: str | None, address: str) -> Principal:
        """The caller of a request, or RestError 401 (after the address's delay)."""
        creds = _parse_basic(header)
        if creds is not None:
            name, password = creds
            tag = hmac.new(self._key, password.encode("utf-8", "surrogateescape"), "sha256")
            cache_key = (name, tag.digest())
            hit = self._ok.get(cache_key)
            now = time.monotonic()
            if hit is not None and now - hit[1] < SUCCESS_TTL:
                if self._failures:
                    self._failures.pop(address, None)  # a success resets the slow-down
                return hit[0]
        failures = self._current_failures(address)
        if failures is not None and failures.count >= FREE_FAILURES:
            async with failures.lock:
                return await self._check(creds, address)
        return await self._check(creds, address)

    async def _check(self, creds: tuple[str, str] | None, address: str) -> Principal:
        user: User | None = None
        if creds is not None:
            user = await asyncio.to_thread(self.catalog.verify_login, *creds)
        if user is not None and creds is not None:
            principal = Principal(user.name, str(user.role), user.svm)
            tag = hmac.new(self._key, creds[1].encode("utf-8", "surrogateescape"), "sha256")
            self._ok[(creds[0], tag.digest())] = (principal, time.monotonic())
            while len(self._ok) > _MAX_CACHED:
                self._ok.popitem(last=False)
            self._failures.pop(address, None)
            return principal
        count = self._record_failure(address)
        delay = self.delay_for(count)
        log.warning(
            "REST login failed from %s (user %r, %d recent failures)",
            address,
            creds[0] if creds else None,
            count,
        )
        if delay:
            await asyncio.sleep(delay)
        raise unauthenticated()

    def _current_failures(self, address: str) -> _Failures | None:
        entry = self._failures.get(address)
        if entry is not None and time.monotonic() - entry.first > FAILURE_WINDOW:
            del self._failures[address]
            return None
        return entry

    def _record_failure(self, address: str) -> int:
        entry = self._current_failures(address)
        if entry is None:
            entry = _Failures(0, time.monotonic(), asyncio.Lock())
            self._failures[address] = entry
            while len(self._failures) > _MAX_TRACKED:
                self._failures.popitem(last=False)
        entry.count += 1
        self._failures.move_to_end(address)
        return entry.count


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    text = raw.decode("utf-8", "surrogateescape")
    name, sep, password = text.partition(":")
    if not sep or not name:
        return None
    return name, password
