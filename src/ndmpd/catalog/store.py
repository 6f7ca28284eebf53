"""The persistent catalog: identities, users, secrets and NDMP settings in one SQLite file.

One connection guarded by a lock serves every thread of the process. Reads that happen per NDMP
authentication (settings, NDMP passwords) come from memory; `PRAGMA data_version` tells us when
another process (the CLI next to a running server) committed, and the caches are dropped then.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import string
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ndmpd.catalog.errors import (
    AlreadyExistsError,
    CatalogError,
    NotFoundError,
    PasswordUnavailableError,
)

if TYPE_CHECKING:
    from ndmpd.catalog.config import Config

__all__ = [
    "AUTH_TYPES",
    "Catalog",
    "CatalogError",
    "FirstStart",
    "NodeNdmpSettings",
    "SvmNdmpSettings",
    "User",
]

Role = Literal["admin", "readonly"]
ROLES = ("admin", "readonly")
AUTH_TYPES = ("plaintext", "challenge", "plaintext_sso")
ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV = "NDMPD_ADMIN_PASSWORD"

DB_NAME = "catalog.sqlite3"
SECRET_NAME = "secret.key"
SECRET_LEN = 32
SCHEMA_VERSION = 1

# scrypt cost: ~50 ms and 16 MiB per hash; REST logins are cached after the first success.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**14, 8, 1, 32
NDMP_PASSWORD_LEN = 16
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
# A user name must survive HTTP Basic (no ':'), URL paths and NDMP auth ids.
_USER_RE = re.compile(r"[A-Za-z0-9_.@\\-]{1,64}")
_CACHE_LIMIT = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS svms (
    name TEXT PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    ndmp_enabled INTEGER NOT NULL DEFAULT 1,
    ndmp_auth_types TEXT NOT NULL DEFAULT 'challenge'
);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    svm TEXT,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    svm: str | None  # None: a cluster user


@dataclass(frozen=True)
class FirstStart:
    """What `serve` prints on the very first start (secrets: print once, never log)."""

    admin_user: str
    admin_password: str
    admin_password_from_env: bool
    ndmp_user: str
    ndmp_svm: str
    ndmp_password: str


@dataclass(frozen=True)
class SvmNdmpSettings:
    enabled: bool = True
    authentication_types: tuple[str, ...] = ("challenge",)


@dataclass(frozen=True)
class NodeNdmpSettings:
    enabled: bool = True
    authentication_types: tuple[str, ...] = ("plaintext", "challenge")
    user: str | None = None  # no default user; node-scope auth fails until one is set


@dataclass(frozen=True)
class _PasswordHash:
    salt: bytes
    digest: bytes
    n: int
    r: int
    p: int

    def encode(self) -> str:
        b64 = base64.b64encode
        return (
            f"scrypt${self.n}${self.r}${self.p}$"
            f"{b64(self.salt).decode()}${b64(self.digest).decode()}"
        )

    @classmethod
    def decode(cls, text: str) -> _PasswordHash:
        try:
            algo, n, r, p, salt, digest = text.split("$")
            if algo != "scrypt":
                raise ValueError(algo)
            return cls(base64.b64decode(salt), base64.b64decode(digest), int(n), int(r), int(p))
        except ValueError:
            raise CatalogError("corrupt password hash in the catalog") from None

    @classmethod
    def make(cls, password: str) -> _PasswordHash:
        salt = secrets.token_bytes(16)
        return cls(
            salt,
            _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P),
            SCRYPT_N,
            SCRYPT_R,
            SCRYPT_P,
        )

    def check(self, password: str) -> bool:
        return hmac.compare_digest(
            _scrypt(password, self.salt, self.n, self.r, self.p), self.digest
        )


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    pw = password.encode("utf-8", "surrogateescape")
    return hashlib.scrypt(pw, salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=SCRYPT_LEN)


class Catalog:
    """Persistent state of one node. Thread-safe; cheap reads on the authentication path."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self._lock = threading.RLock()
        self._make_state_dir()
        self.path = self.state_dir / DB_NAME
        self._secret_path = self.state_dir / SECRET_NAME
        _touch_private(self.path)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{self.path}: cannot open the catalog: {exc}") from None
        self._configured_svms: tuple[str, ...] | None = None
        self._secret: bytes | None = None
        self._process_key = secrets.token_bytes(32)
        self._data_version = -1
        self._drop_caches()

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _make_state_dir(self) -> None:
        if self.state_dir.is_dir():
            return
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.state_dir, 0o700)  # mkdir's mode is filtered by the umask
        except OSError as exc:
            raise CatalogError(
                f"{self.state_dir}: cannot create the state directory: {exc}"
            ) from None

    def _migrate(self) -> None:
        with self._lock:
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise CatalogError(
                    f"{self.path}: catalog schema {version} is newer than this ndmpd "
                    f"understands ({SCHEMA_VERSION})"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _drop_caches(self) -> None:
        self._meta_cache: dict[str, str | None] = {}
        self._svm_cache: dict[str, tuple[str, SvmNdmpSettings]] | None = None
        self._ndmp_pw_cache: dict[tuple[str, str], str | None] = {}
        self._login_cache: dict[str, tuple[str, bytes]] = {}
        self._user_cache: dict[str, tuple[User, str] | None] = {}

    def _fresh(self) -> None:
        """Drop caches if another connection committed since we last looked (lock held)."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:
            self._data_version = version
            self._drop_caches()

    def _tx(self) -> _Transaction:
        return _Transaction(self)

    def _get_meta(self, key: str) -> str | None:
        with self._lock:
            self._fresh()
            if key not in self._meta_cache:
                row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
                self._meta_cache[key] = row[0] if row else None
            return self._meta_cache[key]

    def _set_meta(self, key: str, value: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
            self._meta_cache[key] = value

    def _svms(self) -> dict[str, tuple[str, SvmNdmpSettings]]:
        with self._lock:
            self._fresh()
            if self._svm_cache is None:
                rows = self._db.execute(
                    "SELECT name, uuid, ndmp_enabled, ndmp_auth_types FROM svms"
                ).fetchall()
                self._svm_cache = {
                    name: (
                        svm_uuid,
                        SvmNdmpSettings(
                            enabled=bool(enabled),
                            authentication_types=tuple(t for t in types.split(",") if t),
                        ),
                    )
                    for name, svm_uuid, enabled, types in rows
                }
            return self._svm_cache

    # -- secret ---------------------------------------------------------------------------

    def _server_secret(self) -> bytes:
        with self._lock:
            if self._secret is None:
                try:
                    data = self._secret_path.read_bytes()
                except FileNotFoundError:
                    raise CatalogError(
                        f"{self._secret_path} is missing: run `ndmpd serve` once to initialise "
                        "the state directory"
                    ) from None
                except OSError as exc:
                    raise CatalogError(f"{self._secret_path}: cannot read: {exc}") from None
                if len(data) != SECRET_LEN:
                    raise CatalogError(
                        f"{self._secret_path}: corrupt (expected {SECRET_LEN} bytes)"
                    )
                self._secret = data
            return self._secret

    def _ensure_secret(self) -> None:
        if self._secret_path.exists():
            self._server_secret()
            return
        _write_private_atomic(self._secret_path, secrets.token_bytes(SECRET_LEN))
        self._server_secret()

    def _fernet(self) -> Fernet:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"ndmpd node ndmp password"
        ).derive(self._server_secret())
        return Fernet(base64.urlsafe_b64encode(key))

    # -- identity -------------------------------------------------------------------------

    def initialize(self, config: Config) -> FirstStart | None:
        """Create identities on the first start; later, only add UUIDs for SVMs new in config."""
        svm_names = tuple(svm.name for svm in config.svms)
        if not svm_names:
            raise CatalogError("the configuration has no SVM")
        with self._lock:
            self._ensure_secret()
            first = self._get_meta("node_uuid") is None
            with self._tx():
                if first:
                    self._db.execute(
                        "INSERT OR IGNORE INTO meta(key, value) VALUES('node_uuid', ?)",
                        (str(uuid.uuid4()),),
                    )
                    self._db.execute(
                        "INSERT OR IGNORE INTO meta(key, value) VALUES('ndmp_mode', ?)",
                        (config.ndmp.mode,),
                    )
                self._db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES('host_id', ?)",
                    (secrets.token_hex(4),),
                )
                for name in svm_names:
                    self._db.execute(
                        "INSERT OR IGNORE INTO svms(name, uuid) VALUES(?, ?)",
                        (name, str(uuid.uuid4())),
                    )
                self._drop_caches()
            self._configured_svms = svm_names
            if not first:
                return None
            env_pw = os.environ.get(ADMIN_PASSWORD_ENV)
            admin_pw = env_pw if env_pw else _random_password(20)
            if self.get_user(ADMIN_USER) is None:
                self.add_user(ADMIN_USER, "admin", None, admin_pw)
            else:  # a previous first start was interrupted after creating the user
                self.set_password(ADMIN_USER, admin_pw)
            return FirstStart(
                admin_user=ADMIN_USER,
                admin_password=admin_pw,
                admin_password_from_env=bool(env_pw),
                ndmp_user=ADMIN_USER,
                ndmp_svm=svm_names[0],
                ndmp_password=self.ndmp_password(ADMIN_USER, svm_names[0]),
            )

    def node_uuid(self) -> str:
        value = self._get_meta("node_uuid")
        if value is None:
            raise CatalogError("the catalog is not initialised (no node UUID)")
        return value

    def host_id(self) -> str:
        value = self._get_meta("host_id")
        if value is None:
            raise CatalogError("the catalog is not initialised (no host id)")
        return value

    def svm_uuid(self, name: str) -> str:
        entry = self._svms().get(name)
        if entry is None:
            raise NotFoundError(f"unknown SVM {name!r}")
        return entry[0]

    def svm_by_uuid(self, svm_uuid: str) -> str | None:
        for name, (u, _) in self._svms().items():
            if u == svm_uuid:
                return name
        return None

    def svm_names(self) -> tuple[str, ...]:
        """The configured SVMs (after `initialize`), else every SVM the catalog has seen."""
        if self._configured_svms is not None:
            return self._configured_svms
        return tuple(sorted(self._svms()))

    def _check_svm(self, svm: str) -> None:
        if svm not in self.svm_names():
            raise NotFoundError(f"unknown SVM {svm!r}")

    # -- users ----------------------------------------------------------------------------

    def _user_row(self, name: str) -> tuple[User, str] | None:
        if not isinstance(name, str) or not _USER_RE.fullmatch(name):
            return None  # never stored; also keeps undecodable wire names away from SQLite
        with self._lock:
            self._fresh()
            if len(self._user_cache) > _CACHE_LIMIT:
                self._user_cache.clear()
            if name not in self._user_cache:
                row = self._db.execute(
                    "SELECT name, role, svm, password_hash FROM users WHERE name=?", (name,)
                ).fetchone()
                self._user_cache[name] = (User(row[0], row[1], row[2]), row[3]) if row else None
            return self._user_cache[name]

    def add_user(self, name: str, role: str, svm: str | None, password: str) -> User:
        _check_user_name(name)
        if role not in ROLES:
            raise CatalogError(f"invalid role {role!r}: expected 'admin' or 'readonly'")
        if svm is not None:
            self._check_svm(svm)
        _check_password(password)
        hashed = _PasswordHash.make(password).encode()
        with self._tx():
            try:
                self._db.execute(
                    "INSERT INTO users(name, role, svm, password_hash, created) VALUES(?,?,?,?,?)",
                    (name, role, svm, hashed, time.time()),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExistsError(f"user {name!r} already exists") from None
            self._forget_user(name)
        return User(name, role, svm)  # type: ignore[arg-type]

    def remove_user(self, name: str) -> None:
        with self._tx():
            current = self._user_row(name)
            if current is None:
                raise NotFoundError(f"unknown user {name!r}")
            user = current[0]
            if user.role == "admin" and user.svm is None:
                (admins,) = self._db.execute(
                    "SELECT COUNT(*) FROM users WHERE role='admin' AND svm IS NULL"
                ).fetchone()
                if admins <= 1:
                    raise CatalogError(f"cannot remove {name!r}: it is the last cluster admin")
            self._db.execute("DELETE FROM users WHERE name=?", (name,))
            self._forget_user(name)

    def list_users(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT name, role, svm FROM users ORDER BY name").fetchall()
        return [User(n, r, s) for n, r, s in rows]

    def get_user(self, name: str) -> User | None:
        row = self._user_row(name)
        return row[0] if row else None

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        hashed = _PasswordHash.make(password).encode()
        with self._tx():
            cur = self._db.execute("UPDATE users SET password_hash=? WHERE name=?", (hashed, name))
            if cur.rowcount == 0:
                raise NotFoundError(f"unknown user {name!r}")
            self._forget_user(name)

    def verify_login(self, name: str, password: str) -> User | None:
        """Check a login password; a success is remembered (keyed) so REST calls skip scrypt."""
        row = self._user_row(name)
        if row is None:
            _PasswordHash(b"\0" * 16, b"", SCRYPT_N, SCRYPT_R, SCRYPT_P).check(password)
            return None
        user, stored = row
        tag = hmac.new(
            self._process_key, password.encode("utf-8", "surrogateescape"), "sha256"
        ).digest()
        with self._lock:
            cached = self._login_cache.get(name)
        if cached is not None and cached[0] == stored and hmac.compare_digest(cached[1], tag):
            return user
        if not _PasswordHash.decode(stored).check(password):
            return None
        with self._lock:
            self._login_cache[name] = (stored, tag)
        return user

    def _forget_user(self, name: str) -> None:
        self._user_cache.pop(name, None)
        self._login_cache.pop(name, None)
        for key in [k for k in self._ndmp_pw_cache if k[0] == name]:
            del self._ndmp_pw_cache[key]

    # -- NDMP passwords -------------------------------------------------------------------

    def _may_use_svm(self, user: User, svm: str) -> bool:
        return user.svm is None or user.svm == svm

    def ndmp_password(self, user: str, svm: str) -> str:
        """ONTAP's `generate-password`: derived, stable, per SVM, new after a login change."""
        self._check_svm(svm)
        row = self._user_row(user)
        if row is None:
            raise NotFoundError(f"unknown user {user!r}")
        if not self._may_use_svm(row[0], svm):
            raise NotFoundError(f"user {user!r} is not a user of SVM {svm!r}")
        if "plaintext_sso" in self.svm_settings(svm).authentication_types:
            raise PasswordUnavailableError(
                f"SVM {svm!r} uses plaintext_sso: no NDMP-specific password can be generated"
            )
        return self._derive(user, svm, row[1])

    def _derive(self, user: str, svm: str, stored_hash: str) -> str:
        salt = _PasswordHash.decode(stored_hash).salt
        msg = b"\0".join(
            [b"ndmpd-ndmp-password-v1", user.encode(), self.svm_uuid(svm).encode(), salt]
        )
        value = int.from_bytes(hmac.new(self._server_secret(), msg, "sha256").digest(), "big")
        chars = []
        for _ in range(NDMP_PASSWORD_LEN):
            value, index = divmod(value, len(_ALPHABET))
            chars.append(_ALPHABET[index])
        return "".join(chars)

    def ndmp_secret_for(self, auth_id: str, svm: str) -> str | None:
        """The password an SVM-scope NDMP session compares against; None: refuse the login."""
        key = (auth_id, svm)
        with self._lock:
            self._fresh()
            if key in self._ndmp_pw_cache:
                return self._ndmp_pw_cache[key]
            if len(self._ndmp_pw_cache) > _CACHE_LIMIT:  # bound what failed logins can fill
                self._ndmp_pw_cache.clear()
            result: str | None = None
            row = self._user_row(auth_id)
            if row is not None and svm in self.svm_names() and self._may_use_svm(row[0], svm):
                result = self._derive(auth_id, svm, row[1])
            self._ndmp_pw_cache[key] = result
            return result

    # -- NDMP settings --------------------------------------------------------------------

    def ndmp_mode(self) -> Literal["svm", "node"]:
        mode = self._get_meta("ndmp_mode")
        return "node" if mode == "node" else "svm"

    def set_ndmp_mode(self, mode: str) -> None:
        if mode not in ("svm", "node"):
            raise CatalogError(f"invalid NDMP mode {mode!r}: expected 'svm' or 'node'")
        self._set_meta("ndmp_mode", mode)

    def svm_settings(self, svm: str) -> SvmNdmpSettings:
        entry = self._svms().get(svm)
        if entry is None:
            raise NotFoundError(f"unknown SVM {svm!r}")
        return entry[1]

    def set_svm_settings(
        self,
        svm: str,
        enabled: bool | None = None,
        authentication_types: Iterable[str] | None = None,
    ) -> SvmNdmpSettings:
        current = self.svm_settings(svm)
        types = current.authentication_types
        if authentication_types is not None:
            types = _check_auth_types(authentication_types)
            if "plaintext_sso" in types and len(types) > 1:
                raise CatalogError(
                    "plaintext_sso cannot be combined with other authentication types"
                )
        new = SvmNdmpSettings(
            enabled=current.enabled if enabled is None else bool(enabled),
            authentication_types=types,
        )
        with self._tx():
            self._db.execute(
                "UPDATE svms SET ndmp_enabled=?, ndmp_auth_types=? WHERE name=?",
                (int(new.enabled), ",".join(new.authentication_types), svm),
            )
            self._svm_cache = None
            self._ndmp_pw_cache.clear()
        return new

    def node_settings(self) -> NodeNdmpSettings:
        enabled = self._get_meta("node_ndmp_enabled")
        types = self._get_meta("node_ndmp_auth_types")
        return NodeNdmpSettings(
            enabled=enabled != "0",
            authentication_types=(
                tuple(t for t in types.split(",") if t)
                if types is not None
                else NodeNdmpSettings.authentication_types
            ),
            user=self._get_meta("node_ndmp_user"),
        )

    def set_node_settings(
        self,
        enabled: bool | None = None,
        authentication_types: Iterable[str] | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> NodeNdmpSettings:
        """Change only what is given; `challenge` stays on in node scope, as in ONTAP."""
        current = self.node_settings()
        types = current.authentication_types
        if authentication_types is not None:
            types = _check_auth_types(authentication_types)
            if "challenge" not in types:
                raise CatalogError("challenge authentication cannot be disabled in node scope")
        if user is not None and not user:
            raise CatalogError("the node NDMP user must not be empty")
        new_user = current.user if user is None else user
        new_enabled = current.enabled if enabled is None else bool(enabled)
        if new_enabled and enabled and new_user is None:
            raise CatalogError("a user must be set before NDMP can be enabled on the node")
        token = None
        if password is not None:
            _check_password(password)
            token = self._fernet().encrypt(password.encode("utf-8", "surrogateescape")).decode()
        with self._tx():
            self._set_meta("node_ndmp_enabled", "1" if new_enabled else "0")
            self._set_meta("node_ndmp_auth_types", ",".join(types))
            if new_user is not None:
                self._set_meta("node_ndmp_user", new_user)
            if token is not None:
                self._set_meta("node_ndmp_password", token)
        return NodeNdmpSettings(enabled=new_enabled, authentication_types=types, user=new_user)

    def node_password(self) -> str | None:
        token = self._get_meta("node_ndmp_password")
        if token is None:
            return None
        try:
            return self._fernet().decrypt(token.encode()).decode("utf-8", "surrogateescape")
        except InvalidToken:
            raise CatalogError(
                "the stored node NDMP password cannot be decrypted (secret.key changed?)"
            ) from None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the catalog lock; caches are dropped on rollback."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.nested = False

    def __enter__(self) -> None:
        cat = self.catalog
        cat._lock.acquire()
        try:
            cat._fresh()
            self.nested = cat._db.in_transaction
            if not self.nested:
                cat._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            cat._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        cat = self.catalog
        try:
            if self.nested:
                return
            if exc_type is None:
                cat._db.execute("COMMIT")
                # Our own commit bumps no data_version for us; remember it stays current.
            else:
                cat._db.execute("ROLLBACK")
                cat._drop_caches()
        finally:
            cat._lock.release()


def _check_user_name(name: str) -> None:
    if not isinstance(name, str) or not _USER_RE.fullmatch(name):
        raise CatalogError(
            f"invalid user name {name!r}: 1-64 letters, digits or '_', '.', '@', '\\', '-'"
        )


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not password:
        raise CatalogError("the password must not be empty")
    if "\0" in password or "\n" in password or "\r" in password:
        raise CatalogError("the password must not contain NUL or line breaks")


def _check_auth_types(types: Iterable[str]) -> tuple[str, ...]:
    if isinstance(types, str):
        raise CatalogError("authentication_types must be a list")
    result: list[str] = []
    for t in types:
        if t not in AUTH_TYPES:
            raise CatalogError(
                f"invalid authentication type {t!r}: expected one of {', '.join(AUTH_TYPES)}"
            )
        if t not in result:
            result.append(t)
    if not result:
        raise CatalogError("at least one authentication type is required")
    return tuple(result)


def _random_password(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _touch_private(path: Path) -> None:
    """Create `path` mode 0600 before SQLite does, so it never exists with wider permissions."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot create: {exc}") from None


def _write_private_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # fails if another process won the race; its secret stands
    except FileExistsError:
        pass
    except OSError as exc:
        raise CatalogError(f"{path}: cannot write: {exc}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
