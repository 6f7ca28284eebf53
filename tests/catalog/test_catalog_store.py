"""The SQLite catalog: persistence, file modes, users, NDMP passwords and settings."""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ndmpd.catalog.config import Config, load_config
from ndmpd.catalog.errors import (
    AlreadyExistsError,
    CatalogError,
    NotFoundError,
    PasswordUnavailableError,
)
from ndmpd.catalog.store import Catalog, FirstStart, NodeNdmpSettings, SvmNdmpSettings

TWO_SVMS = """
[ndmp]
mode = "{mode}"
[[svm]]
name = "svm1"
  [[svm.volume]]
  name = "vol1"
  path = "/srv/a"
[[svm]]
name = "svm2"
"""


def make_config(tmp_path: Path, mode: str = "svm", extra: str = "") -> Config:
    path = tmp_path / "c.toml"
    path.write_text(TWO_SVMS.format(mode=mode) + extra)
    return load_config(path, tmp_path / "state")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def catalog(config: Config) -> Iterator[Catalog]:
    cat = Catalog(config.state_dir)
    first = cat.initialize(config)
    assert first is not None
    yield cat
    cat.close()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_then_persistence(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NDMPD_ADMIN_PASSWORD", raising=False)
    old_umask = os.umask(0o022)
    try:
        with Catalog(config.state_dir) as cat:
            first = cat.initialize(config)
            assert isinstance(first, FirstStart)
            ids = (cat.node_uuid(), cat.svm_uuid("svm1"), cat.svm_uuid("svm2"), cat.host_id())
    finally:
        os.umask(old_umask)
    assert first.admin_user == "admin" and first.ndmp_user == "admin"
    assert first.ndmp_svm == "svm1"
    assert not first.admin_password_from_env and len(first.admin_password) >= 16
    assert re.fullmatch(r"[A-Za-z0-9]{16}", first.ndmp_password)
    assert len(set(ids)) == 4
    assert re.fullmatch(r"[0-9a-f-]{36}", ids[0])

    state = config.state_dir
    assert mode_of(state) == 0o700
    assert mode_of(state / "catalog.sqlite3") == 0o600
    assert mode_of(state / "secret.key") == 0o600
    assert (state / "secret.key").stat().st_size == 32

    with Catalog(state) as cat:
        assert cat.initialize(config) is None
        assert (cat.node_uuid(), cat.svm_uuid("svm1"), cat.svm_uuid("svm2"), cat.host_id()) == ids
        assert cat.svm_by_uuid(ids[1]) == "svm1"
        assert cat.svm_by_uuid("00000000-0000-0000-0000-000000000000") is None
        assert cat.verify_login("admin", first.admin_password) is not None
        assert cat.ndmp_password("admin", "svm1") == first.ndmp_password
        for suffix in ("-wal", "-shm"):
            side = state / f"catalog.sqlite3{suffix}"
            if side.exists():
                assert mode_of(side) & 0o077 == 0


def test_admin_password_from_environment(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDMPD_ADMIN_PASSWORD", "s3cret-from-env")
    with Catalog(config.state_dir) as cat:
        first = cat.initialize(config)
        assert first is not None
        assert first.admin_password == "s3cret-from-env" and first.admin_password_from_env
        assert cat.verify_login("admin", "s3cret-from-env") is not None


def test_new_svm_in_config_gets_a_uuid_old_ones_keep_theirs(
    tmp_path: Path, catalog: Catalog
) -> None:
    before = catalog.svm_uuid("svm1")
    catalog.close()
    bigger = make_config(tmp_path, extra='[[svm]]\nname = "svm3"\n')
    with Catalog(bigger.state_dir) as cat:
        assert cat.initialize(bigger) is None
        assert cat.svm_uuid("svm1") == before
        assert cat.svm_uuid("svm3") not in (before, cat.svm_uuid("svm2"))
        assert cat.svm_names() == ("svm1", "svm2", "svm3")
    with pytest.raises(NotFoundError):
        Catalog(bigger.state_dir).svm_uuid("svm4")


def test_users(catalog: Catalog) -> None:
    alice = catalog.add_user("alice", "readonly", "svm1", "pw-alice")
    assert alice.svm == "svm1" and alice.role == "readonly"
    catalog.add_user("bob", "admin", None, "pw-bob")
    assert [(u.name, u.role, u.svm) for u in catalog.list_users()] == [
        ("admin", "admin", None),
        ("alice", "readonly", "svm1"),
        ("bob", "admin", None),
    ]
    assert catalog.get_user("alice") == alice
    assert catalog.get_user("carol") is None

    with pytest.raises(AlreadyExistsError, match="'alice' already exists"):
        catalog.add_user("alice", "admin", None, "x")
    with pytest.raises(CatalogError, match="invalid role 'root'"):
        catalog.add_user("carol", "root", None, "x")
    with pytest.raises(NotFoundError, match="unknown SVM 'svm9'"):
        catalog.add_user("carol", "admin", "svm9", "x")
    with pytest.raises(CatalogError, match="invalid user name"):
        catalog.add_user("a:b", "admin", None, "x")
    with pytest.raises(CatalogError, match="must not be empty"):
        catalog.add_user("carol", "admin", None, "")
    with pytest.raises(NotFoundError, match="unknown user 'carol'"):
        catalog.remove_user("carol")
    with pytest.raises(NotFoundError):
        catalog.set_password("carol", "x")

    catalog.remove_user("alice")
    assert catalog.get_user("alice") is None
    catalog.remove_user("bob")
    with pytest.raises(CatalogError, match="last cluster admin"):
        catalog.remove_user("admin")
    assert catalog.get_user("admin") is not None


def test_verify_login(catalog: Catalog) -> None:
    catalog.add_user("alice", "admin", None, "correct horse")
    assert catalog.verify_login("alice", "correct horse") is not None
    assert catalog.verify_login("alice", "correct horse") is not None  # cached path
    assert catalog.verify_login("alice", "Correct horse") is None
    assert catalog.verify_login("nobody", "correct horse") is None
    catalog.set_password("alice", "battery staple")
    assert catalog.verify_login("alice", "correct horse") is None
    assert catalog.verify_login("alice", "battery staple") is not None
    raw = (catalog.state_dir / "catalog.sqlite3").read_bytes()
    assert b"battery staple" not in raw and b"correct horse" not in raw


def test_ndmp_password_rules(catalog: Catalog) -> None:
    catalog.add_user("alice", "readonly", "svm1", "login-pw")
    pw = catalog.ndmp_password("alice", "svm1")
    assert re.fullmatch(r"[A-Za-z0-9]{16}", pw)
    assert catalog.ndmp_password("alice", "svm1") == pw  # stable
    assert pw != "login-pw"
    assert catalog.ndmp_secret_for("alice", "svm1") == pw
    # scoped to its SVM
    with pytest.raises(NotFoundError, match="not a user of SVM 'svm2'"):
        catalog.ndmp_password("alice", "svm2")
    assert catalog.ndmp_secret_for("alice", "svm2") is None
    # the cluster admin is an NDMP user of every SVM, with a different password per SVM
    a1, a2 = catalog.ndmp_password("admin", "svm1"), catalog.ndmp_password("admin", "svm2")
    assert a1 != a2 and pw not in (a1, a2)
    assert catalog.ndmp_secret_for("admin", "svm2") == a2
    with pytest.raises(NotFoundError):
        catalog.ndmp_password("nobody", "svm1")
    with pytest.raises(NotFoundError):
        catalog.ndmp_password("alice", "svm9")
    assert catalog.ndmp_secret_for("nobody", "svm1") is None
    assert catalog.ndmp_secret_for("alice", "svm9") is None
    # a new login password (even the same text: a new salt) yields a new NDMP password
    catalog.set_password("alice", "login-pw")
    new = catalog.ndmp_password("alice", "svm1")
    assert new != pw and re.fullmatch(r"[A-Za-z0-9]{16}", new)
    assert catalog.ndmp_secret_for("alice", "svm1") == new
    catalog.remove_user("alice")
    assert catalog.ndmp_secret_for("alice", "svm1") is None


def test_ndmp_password_survives_restart(config: Config, catalog: Catalog) -> None:
    catalog.add_user("alice", "readonly", "svm1", "login-pw")
    pw = catalog.ndmp_password("alice", "svm1")
    catalog.close()
    with Catalog(config.state_dir) as again:
        assert again.initialize(config) is None
        assert again.ndmp_password("alice", "svm1") == pw


def test_missing_secret_is_a_clear_error(config: Config, catalog: Catalog) -> None:
    catalog.close()
    (config.state_dir / "secret.key").unlink()
    with Catalog(config.state_dir) as cat, pytest.raises(CatalogError, match=r"secret\.key"):
        cat.ndmp_password("admin", "svm1")


def test_other_process_changes_are_seen(config: Config, catalog: Catalog) -> None:
    """The CLI removes a user while the server runs: the server must stop accepting it."""
    catalog.add_user("alice", "readonly", "svm1", "login-pw")
    assert catalog.ndmp_secret_for("alice", "svm1") is not None
    assert catalog.svm_settings("svm1").enabled
    with Catalog(config.state_dir) as other:
        other.initialize(config)
        other.remove_user("alice")
        other.set_svm_settings("svm1", enabled=False)
    assert catalog.ndmp_secret_for("alice", "svm1") is None
    assert catalog.svm_settings("svm1").enabled is False


def test_settings_defaults_and_persistence(config: Config, catalog: Catalog) -> None:
    assert catalog.ndmp_mode() == "svm"
    assert catalog.svm_settings("svm1") == SvmNdmpSettings(True, ("challenge",))
    assert catalog.node_settings() == NodeNdmpSettings(True, ("plaintext", "challenge"), None)
    assert catalog.node_password() is None

    catalog.set_ndmp_mode("node")
    assert catalog.set_svm_settings("svm2", authentication_types=["plaintext", "challenge"]) == (
        SvmNdmpSettings(True, ("plaintext", "challenge"))
    )
    catalog.set_svm_settings("svm1", enabled=False)
    catalog.set_node_settings(enabled=False, authentication_types=["challenge"], user="ndmp")
    catalog.close()

    with Catalog(config.state_dir) as again:
        assert again.initialize(config) is None
        assert again.ndmp_mode() == "node"  # the stored mode beats the config's
        assert again.svm_settings("svm1") == SvmNdmpSettings(False, ("challenge",))
        assert again.svm_settings("svm2") == SvmNdmpSettings(True, ("plaintext", "challenge"))
        assert again.node_settings() == NodeNdmpSettings(False, ("challenge",), "ndmp")


def test_initial_mode_comes_from_config(tmp_path: Path) -> None:
    config = make_config(tmp_path, mode="node")
    with Catalog(config.state_dir) as cat:
        cat.initialize(config)
        assert cat.ndmp_mode() == "node"


def test_settings_validation(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="invalid NDMP mode"):
        catalog.set_ndmp_mode("cluster")
    with pytest.raises(CatalogError, match="invalid authentication type 'md5'"):
        catalog.set_svm_settings("svm1", authentication_types=["md5"])
    with pytest.raises(CatalogError, match="plaintext_sso cannot be combined"):
        catalog.set_svm_settings("svm1", authentication_types=["plaintext_sso", "challenge"])
    with pytest.raises(CatalogError, match="at least one"):
        catalog.set_svm_settings("svm1", authentication_types=[])
    with pytest.raises(NotFoundError):
        catalog.set_svm_settings("svm9", enabled=True)
    with pytest.raises(CatalogError, match="challenge authentication cannot be disabled"):
        catalog.set_node_settings(authentication_types=["plaintext"])
    with pytest.raises(CatalogError, match="a user must be set"):
        catalog.set_node_settings(enabled=True)
    assert catalog.svm_settings("svm1") == SvmNdmpSettings()


def test_plaintext_sso_means_no_ndmp_password(catalog: Catalog) -> None:
    catalog.set_svm_settings("svm2", authentication_types=["plaintext_sso"])
    with pytest.raises(PasswordUnavailableError, match="plaintext_sso"):
        catalog.ndmp_password("admin", "svm2")
    assert catalog.ndmp_password("admin", "svm1")


def test_node_password_is_encrypted_and_round_trips(config: Config, catalog: Catalog) -> None:
    catalog.set_node_settings(user="ndmp", password="node-secret-123")
    assert catalog.node_password() == "node-secret-123"
    assert catalog.node_settings().user == "ndmp"
    catalog.set_node_settings(enabled=False)  # other changes keep the password
    assert catalog.node_password() == "node-secret-123"
    catalog.close()
    db = config.state_dir / "catalog.sqlite3"
    data = db.read_bytes() + (Path(f"{db}-wal").read_bytes() if Path(f"{db}-wal").exists() else b"")
    assert b"node-secret-123" not in data
    with Catalog(config.state_dir) as again:
        assert again.node_password() == "node-secret-123"
    # another server secret cannot decrypt it: a clear error, not garbage
    (config.state_dir / "secret.key").write_bytes(b"\x01" * 32)
    with Catalog(config.state_dir) as again, pytest.raises(CatalogError, match="decrypt"):
        again.node_password()


def test_threads_share_one_catalog(catalog: Catalog) -> None:
    errors: list[BaseException] = []
    expected = catalog.ndmp_password("admin", "svm1")

    def reader() -> None:
        try:
            for _ in range(300):
                assert catalog.ndmp_secret_for("admin", "svm1") == expected
                assert catalog.svm_settings("svm1").enabled
        except BaseException as exc:
            errors.append(exc)

    def writer(i: int) -> None:
        try:
            catalog.add_user(f"user{i}", "readonly", "svm2", f"pw{i}")
            for _ in range(20):
                catalog.set_svm_settings("svm2", enabled=bool(i % 2))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads += [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert {u.name for u in catalog.list_users()} >= {f"user{i}" for i in range(4)}


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "catalog.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match="cannot open the catalog"):
        Catalog(state)


@pytest.mark.parametrize("auth_id", ["caf\udce9", "", "a:b", "x" * 65, "admin\0"])
def test_odd_wire_user_names_are_refused_not_crashed(catalog: Catalog, auth_id: str) -> None:
    assert catalog.ndmp_secret_for(auth_id, "svm1") is None
    assert catalog.verify_login(auth_id, "pw") is None
    assert catalog.get_user(auth_id) is None
