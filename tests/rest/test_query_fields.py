"""`fields=` selection (spec §3.4): defaults, `*`/`**`, lists, braces, exclusions, HAL links."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.rest.errors import RestError
from ndmpd.rest.query import apply_query, parse_query, project
from ndmpd.rest.schema import (
    NDMP_NODE,
    NDMP_PASSWORD,
    NDMP_SESSION,
    NDMP_SVM,
    Record,
    integer,
    string,
)

N1 = "9b372ce7-3a4b-11e9-a7f8-0050568e3d73"
NODE_REF = {"uuid": N1, "name": "node1", "_links": {"self": {"href": f"/api/cluster/nodes/{N1}"}}}
FULL_SESSION: dict[str, Any] = {
    "id": "2000",
    "uuid": N1,
    "node": NODE_REF,
    "backup_engine": "dump",
    "client_address": "10.0.0.5",
    "client_port": 40123,
    "source_address": "10.0.0.1",
    "data_path": "/svm1/vol1",
    "tape_device": "nrst0a",
    "tape_mode": "write",
    "data": {
        "operation": "backup",
        "state": "active",
        "reason": "not_available",
        "bytes_processed": 5000,
        "connection": {"type": "tcp", "address": "10.0.0.7", "port": 18600},
    },
    "mover": {
        "mode": "read",
        "state": "active",
        "reason": "not_available",
        "bytes_moved": 645120,
        "connection": {"type": "tcp", "address": "10.0.0.7", "port": 18600},
    },
    "scsi": {"device_id": "", "host_adapter": 0, "target_id": 0, "lun_id": 0},
    "_links": {"self": {"href": f"/api/protocols/ndmp/sessions/{N1}/2000"}},
}
NODE_RECORD = {
    "node": NODE_REF,
    "enabled": True,
    "user": "ndmp",
    "password": "never-shown",
    "authentication_types": ["plaintext", "challenge"],
    "_links": {"self": {"href": f"/api/protocols/ndmp/nodes/{N1}"}},
}


def select(
    fields: str | None,
    record: dict[str, Any] = FULL_SESSION,
    schema: Record = NDMP_SESSION,
    *,
    hal: bool = True,
    collection: bool = True,
    extra: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    params = ([("fields", fields)] if fields is not None else []) + (extra or [])
    q = parse_query(params, schema, collection=collection)
    if collection:
        body = apply_query([record], q, base_path="/api/x", hal=hal)
        assert body["num_records"] == 1
        return body["records"][0]
    return project(record, q, hal=hal)


def test_collection_default_is_identity_plus_links() -> None:
    assert select(None) == {
        "id": "2000",
        "uuid": N1,
        "node": NODE_REF,
        "_links": FULL_SESSION["_links"],
    }
    assert select(None, NODE_RECORD, NDMP_NODE) == {
        "node": NODE_REF,
        "_links": NODE_RECORD["_links"],
    }
    assert select("") == select(None)


def test_instance_default_is_star() -> None:
    body = select(None, NODE_RECORD, NDMP_NODE, collection=False)
    assert body == {k: v for k, v in NODE_RECORD.items() if k != "password"}
    password = {
        "svm": {"uuid": "S1", "name": "svm1"},
        "user": "ndmpuser",
        "password": "a1B2c3D4e5F6g7H8",
    }
    assert select(None, password, NDMP_PASSWORD, collection=False) == password


def test_star_is_every_readable_field_and_never_write_only() -> None:
    assert select("*") == FULL_SESSION
    body = select("*", NODE_RECORD, NDMP_NODE)
    assert "password" not in body
    assert body["enabled"] is True and body["user"] == "ndmp"
    assert "password" not in select("**", NODE_RECORD, NDMP_NODE)


def test_double_star_adds_costly_fields() -> None:
    schema = Record(
        "costly",
        (string("name", identity=True), integer("size"), integer("footprint", costly=True)),
        links=False,
    )
    rec = {"name": "a", "size": 1, "footprint": 2}
    assert select("*", rec, schema) == {"name": "a", "size": 1}
    assert select("**", rec, schema) == rec
    assert select("footprint", rec, schema) == {"name": "a", "footprint": 2}
    assert select(None, rec, schema, collection=False) == {"name": "a", "size": 1}


def test_lists_dotted_names_and_whole_objects() -> None:
    body = select("client_port,data.state,mover")
    assert body["client_port"] == 40123
    assert body["data"] == {"state": "active"}
    assert body["mover"] == FULL_SESSION["mover"]
    assert body["id"] == "2000" and body["node"] == NODE_REF  # identity always kept
    assert "scsi" not in body and "tape_device" not in body


def test_braces_expand() -> None:
    body = select("data.{state,reason,connection.{port}},mover.connection.address")
    assert body["data"] == {
        "state": "active",
        "reason": "not_available",
        "connection": {"port": 18600},
    }
    assert body["mover"] == {"connection": {"address": "10.0.0.7"}}


def test_exclusions() -> None:
    body = select("mover,!mover.connection")
    assert body["mover"] == {
        "mode": "read",
        "state": "active",
        "reason": "not_available",
        "bytes_moved": 645120,
    }
    body = select("*,!data,!scsi,!node.name")
    assert "data" not in body and "scsi" not in body
    assert body["node"] == {"uuid": N1, "_links": NODE_REF["_links"]}
    # exclusions alone are applied to `*`
    body = select("!mover,!data")
    assert set(body) == set(FULL_SESSION) - {"mover", "data"}
    # identity fields can be excluded explicitly
    assert "uuid" not in select("id,!uuid")
    assert select("data.{!state,reason}")["data"] == {"reason": "not_available"}


def test_links_are_hal_only() -> None:
    body = select("node,client_port", hal=False)
    assert body == {
        "id": "2000",
        "uuid": N1,
        "node": {"uuid": N1, "name": "node1"},
        "client_port": 40123,
    }
    assert select("_links", hal=True)["_links"] == FULL_SESSION["_links"]
    plain = select("*", hal=False, collection=False)
    assert "_links" not in plain and "_links" not in plain["node"]


def test_projection_copies_mutable_values() -> None:
    body = select("*", NODE_RECORD, NDMP_NODE)
    body["authentication_types"].append("plaintext_sso")
    body["_links"]["self"]["href"] = "changed"
    body["node"]["_links"]["self"]["href"] = "changed"
    assert NODE_RECORD["authentication_types"] == ["plaintext", "challenge"]
    assert NODE_RECORD["_links"]["self"]["href"].endswith(N1)
    assert NODE_REF["_links"]["self"]["href"].endswith(N1)


def test_unset_fields_are_left_out() -> None:
    rec = {
        "svm": {"uuid": "S1", "name": "svm1"},
        "enabled": None,
        "_links": {"self": {"href": "/s"}},
    }
    assert select("*", rec, NDMP_SVM) == {
        "svm": {"uuid": "S1", "name": "svm1"},
        "_links": {"self": {"href": "/s"}},
    }


def test_selects_reports_what_is_needed() -> None:
    q = parse_query([("fields", "data.state")], NDMP_SESSION)
    assert q.selects("data") and q.selects("data.state") and q.selects("id")
    assert not q.selects("mover") and not q.selects("data.reason")


@pytest.mark.parametrize(
    ("fields", "schema", "code", "message"),
    [
        ("size", NDMP_SESSION, "262197", 'The value "size" is invalid for field "fields"'),
        (
            "id,data.bogus",
            NDMP_SESSION,
            "262197",
            'The value "data.bogus" is invalid for field "fields"',
        ),
        ("password", NDMP_NODE, "262249", None),
        ("data.{state", NDMP_SESSION, "262286", None),
        ("data.state}", NDMP_SESSION, "262286", None),
        ("data.{state}x", NDMP_SESSION, "262197", None),
    ],
)
def test_fields_errors(fields: str, schema: Record, code: str, message: str | None) -> None:
    with pytest.raises(RestError) as info:
        parse_query([("fields", fields)], schema)
    e = info.value
    assert (e.status, e.code, e.target) == (400, code, "fields")
    if message:
        assert e.message == message


def test_ignore_unknown_fields() -> None:
    body = select("size,client_port", extra=[("ignore_unknown_fields", "true")])
    assert body["client_port"] == 40123
    body = select("size", extra=[("ignore_unknown_fields", "True")])
    assert body == select(None)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab.{},!*_ ", max_size=16)
    | st.lists(
        st.sampled_from([f.path for f in NDMP_SESSION.walk()] + ["*", "**", "!data", "x"])
    ).map(",".join)
)
def test_any_fields_value_is_parsed_or_rejected_cleanly(fields: str) -> None:
    try:
        q = parse_query([("fields", fields)], NDMP_SESSION)
    except RestError as e:
        assert e.status == 400 and e.target == "fields"
        return
    body = project(FULL_SESSION, q, hal=True)
    assert "_links" in body
    assert set(body) <= set(FULL_SESSION)


def test_excluding_everything_leaves_the_self_link() -> None:
    body = select("!id,!uuid,!node,!svm,!data,!mover,!scsi,!client_port", collection=False)
    assert "_links" in body and "id" not in body and "node" not in body
    assert select("!id,!uuid,!node,!svm,!data,!mover,!scsi", hal=False, collection=False)
