"""order_by, paging through `start.index`, return_records, parameters, and the client's queries."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.rest.errors import RestError
from ndmpd.rest.query import apply_query, parse_query, project
from ndmpd.rest.schema import (
    CLUSTER_NDMP_PROPERTIES,
    NDMP_NODE,
    NDMP_PASSWORD,
    NDMP_SESSION,
    NDMP_SVM,
    Record,
)

BASE = "/api/protocols/ndmp/sessions"


def session(i: int, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": str(2000 + i),
        "uuid": "N1",
        "node": {"uuid": "N1", "name": f"node{i % 2 + 1}"},
        "client_port": 40000 + (i * 7) % 10,
        "backup_engine": "dump",
        "tape_mode": ["write", "read", "raw"][i % 3],
        "data": {"state": ["idle", "active", "halted"][i % 3], "bytes_processed": 1000 * (i % 4)},
        "_links": {"self": {"href": f"{BASE}/N1/{2000 + i}"}},
    }
    rec.update(over)
    return rec


SESSIONS = [session(i) for i in range(10)]


def run(params: list[tuple[str, str]], records=SESSIONS, *, hal: bool = True) -> dict[str, Any]:
    return apply_query(records, parse_query(params, NDMP_SESSION), base_path=BASE, hal=hal)


def ids(params: list[tuple[str, str]], records=SESSIONS) -> list[str]:
    return [r["id"] for r in run(params, records)["records"]]


def follow(href: str) -> list[tuple[str, str]]:
    """What the server receives when the client GETs an href: the path and decoded params."""
    parts = urlsplit(href)
    assert parts.path == BASE and not parts.scheme and not parts.netloc
    return parse_qsl(parts.query, keep_blank_values=True)


# -- order_by --------------------------------------------------------------------------------


def test_order_by_numeric_and_direction() -> None:
    ports = [r["client_port"] for r in SESSIONS]
    got = run([("order_by", "client_port"), ("fields", "client_port")])["records"]
    assert [r["client_port"] for r in got] == sorted(ports)
    got = run([("order_by", "client_port desc"), ("fields", "client_port")])["records"]
    assert [r["client_port"] for r in got] == sorted(ports, reverse=True)
    big = [session(0, client_port=9), session(1, client_port=10), session(2, client_port=100)]
    assert ids([("order_by", "client_port")], big) == ["2000", "2001", "2002"]  # not "10"<"9"


def test_order_by_several_keys_is_stable() -> None:
    expected = sorted(SESSIONS, key=lambda r: (r["data"]["state"], -r["data"]["bytes_processed"]))
    assert ids([("order_by", "data.state,data.bytes_processed desc")]) == [
        r["id"] for r in expected
    ]
    # equal keys keep the input order, in both directions
    assert ids([("order_by", "uuid")]) == [r["id"] for r in SESSIONS]
    assert ids([("order_by", "uuid desc")]) == [r["id"] for r in SESSIONS]
    assert ids([("$orderBy", "id DESC")]) == [r["id"] for r in reversed(SESSIONS)]
    assert ids([("order_by", "tape_mode asc, id desc")]) == [
        r["id"]
        for r in sorted(reversed(SESSIONS), key=lambda r: r["tape_mode"])  # enums: alphabetical
    ]


def test_order_by_puts_unset_values_last_ascending_first_descending() -> None:
    recs = [session(0, client_port=5), session(1, client_port=None), session(2, client_port=1)]
    del recs[1]["client_port"]
    assert ids([("order_by", "client_port")], recs) == ["2002", "2000", "2001"]
    assert ids([("order_by", "client_port desc")], recs) == ["2001", "2000", "2002"]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("bogus", "262268"),
        ("data", "262268"),
        ("node", "262268"),
        ("id sideways", "262185"),
        ("id asc extra", "262185"),
    ],
)
def test_order_by_errors(value: str, code: str) -> None:
    with pytest.raises(RestError) as info:
        parse_query([("order_by", value)], NDMP_SESSION)
    assert (info.value.status, info.value.code, info.value.target) == (400, code, "order_by")


def test_order_by_on_write_only_field_is_rejected() -> None:
    with pytest.raises(RestError) as info:
        parse_query([("order_by", "password")], NDMP_NODE)
    assert info.value.code == "262268"


# -- paging ----------------------------------------------------------------------------------


def test_envelope_without_paging() -> None:
    body = run([])
    assert body["num_records"] == 10 and len(body["records"]) == 10
    assert body["_links"] == {"self": {"href": BASE}}
    assert body["records"][0]["_links"] == SESSIONS[0]["_links"]
    assert run([], [])["records"] == [] and run([], [])["num_records"] == 0


def test_paging_follows_next_to_the_end() -> None:
    params = [("max_records", "2"), ("data.state", "!idle"), ("fields", "*")]
    seen: list[str] = []
    hrefs: list[str] = []
    body = run(params)
    while True:
        seen += [r["id"] for r in body["records"]]
        assert body["num_records"] == len(body["records"]) == 2
        nxt = body["_links"].get("next")
        if nxt is None:
            break
        hrefs.append(nxt["href"])
        body = run(follow(nxt["href"]))
    expected = [r["id"] for r in SESSIONS if r["data"]["state"] != "idle"]
    assert seen == expected
    assert len(expected) == 6 and len(hrefs) == 2
    assert hrefs[0] == f"{BASE}?max_records=2&data.state=%21idle&fields=%2A&start.index=2"
    assert hrefs[1] == f"{BASE}?max_records=2&data.state=%21idle&fields=%2A&start.index=4"


def test_next_is_absent_when_the_page_ends_exactly() -> None:
    body = run([("max_records", "5")])
    body = run(follow(body["_links"]["next"]["href"]))
    assert body["num_records"] == 5 and "next" not in body["_links"]
    assert run([("max_records", "10")])["_links"].keys() == {"self"}


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 25),
    page=st.integers(1, 7),
    offset=st.integers(0, 5),
    order=st.sampled_from([None, "client_port", "id desc", "data.state,id"]),
    hal=st.booleans(),
)
def test_paging_visits_every_match_once(
    n: int, page: int, offset: int, order: str | None, hal: bool
) -> None:
    records = [session(i) for i in range(n)]
    params = [("max_records", str(page)), ("offset", str(offset))]
    if order:
        params.append(("order_by", order))
    everything = apply_query(
        records, parse_query(params[1:], NDMP_SESSION), base_path=BASE, hal=hal
    )["records"]
    got: list[dict[str, Any]] = []
    body = apply_query(records, parse_query(params, NDMP_SESSION), base_path=BASE, hal=hal)
    for _ in range(n + 2):
        got += body["records"]
        links = body.get("_links", {})
        assert ("self" in links) == hal
        if "next" not in links:
            break
        body = apply_query(
            records,
            parse_query(follow(links["next"]["href"]), NDMP_SESSION),
            base_path=BASE,
            hal=hal,
        )
    else:
        pytest.fail("next links did not terminate")
    assert got == everything
    assert len(got) == max(0, n - offset)


def test_return_records_false_counts_every_match() -> None:
    body = run([("return_records", "false")])
    assert body == {"num_records": 10, "_links": {"self": {"href": f"{BASE}?return_records=false"}}}
    body = run([("return_records", "False"), ("data.state", "idle"), ("max_records", "1")])
    assert body["num_records"] == 4 and "records" not in body and "next" not in body["_links"]
    assert run([("return_records", "false")], hal=False) == {"num_records": 10}
    assert run([("return_records", "true"), ("max_records", "2")])["num_records"] == 2


def test_plain_json_keeps_only_next() -> None:
    body = run([("max_records", "4")], hal=False)
    assert body["_links"] == {"next": {"href": f"{BASE}?max_records=4&start.index=4"}}
    assert all("_links" not in r and "_links" not in r["node"] for r in body["records"])
    assert "_links" not in run([], hal=False)


def test_offset_skips_after_filter_and_sort() -> None:
    assert (
        ids([("offset", "2"), ("order_by", "id desc")]) == [r["id"] for r in reversed(SESSIONS)][2:]
    )
    assert ids([("offset", "50")]) == []


# -- parameters ------------------------------------------------------------------------------


def test_control_parameters_are_parsed() -> None:
    q = parse_query(
        [
            ("return_timeout", "120"),
            ("pretty", "TRUE"),
            ("continue_on_failure", "true"),
            ("serial_records", "false"),
            ("max_records", "1KB"),
        ],
        NDMP_SESSION,
    )
    assert q.return_timeout == 120 and q.pretty and q.max_records == 1024
    assert q.continue_on_failure is True and q.serial_records is False
    assert q.return_records is None and not q.has_filters
    assert parse_query([("return_timeout", "0")], NDMP_SESSION).return_timeout == 0


@pytest.mark.parametrize(
    ("params", "code", "target"),
    [
        ([("return_timeout", "121")], "262185", "return_timeout"),
        ([("return_timeout", "-1")], "262185", "return_timeout"),
        ([("return_timeout", "soon")], "262185", "return_timeout"),
        ([("max_records", "0")], "262185", "max_records"),
        ([("max_records", "x")], "262185", "max_records"),
        ([("offset", "-3")], "262185", "offset"),
        ([("start.index", "one")], "262185", "start.index"),
        ([("return_records", "maybe")], "262185", "return_records"),
        ([("pretty", "1")], "262185", "pretty"),
        ([("fields", "id"), ("fields", "uuid")], "262188", "fields"),
        ([("order_by", "id"), ("$orderBy", "uuid")], "262188", "$orderBy"),
        ([("query", "x")], "262179", "query"),
        ([("start.key", "x")], "262179", "start.key"),
    ],
)
def test_parameter_errors(params: list[tuple[str, str]], code: str, target: str) -> None:
    with pytest.raises(RestError) as info:
        parse_query(params, NDMP_SESSION)
    e = info.value
    assert (e.status, e.code, e.target) == (400, code, target)
    assert e.envelope() == {"error": {"message": e.message, "code": code, "target": target}}


def test_unexpected_argument_is_worded_as_ontap() -> None:
    with pytest.raises(RestError) as info:
        parse_query([("type.name", "x")], NDMP_SESSION)
    assert info.value.envelope() == {
        "error": {
            "message": 'Unexpected argument "type.name".',
            "code": "262179",
            "target": "type.name",
        }
    }


# -- instance GETs ---------------------------------------------------------------------------


def test_instance_get_with_filters_is_a_condition() -> None:
    rec = SESSIONS[1]
    q = parse_query([("data.state", "active"), ("fields", "id")], NDMP_SESSION, collection=False)
    assert project(rec, q, hal=True) == {
        "id": "2001",
        "uuid": "N1",
        "node": rec["node"],
        "_links": rec["_links"],
    }
    q = parse_query([("data.state", "idle")], NDMP_SESSION, collection=False)
    with pytest.raises(RestError) as info:
        project(rec, q, hal=True)
    assert (info.value.status, info.value.code) == (404, "4")
    assert info.value.message == "entry doesn't exist"


def test_instance_get_validates_but_ignores_paging() -> None:
    q = parse_query([("max_records", "1"), ("order_by", "id")], NDMP_SESSION, collection=False)
    assert project(SESSIONS[0], q, hal=False)["id"] == "2000"


# -- the exact queries of the netapp-ontap client (spec §8.2), percent-decoded -------------

CLIENT_QUERIES: list[tuple[Record, str, bool]] = [
    (NDMP_SESSION, "", True),
    (NDMP_SESSION, "fields=%2A", True),
    (NDMP_SESSION, "max_records=1", True),
    (NDMP_SESSION, "max_records=1&start.index=1", True),
    (NDMP_SESSION, "max_records=1&start.index=2", True),
    (NDMP_SESSION, "fields=id%2Cnode.name&order_by=id%20desc&return_timeout=15", True),
    (NDMP_SESSION, "node.name=node1&data.state=%21idle", True),
    (NDMP_SESSION, "return_records=false", True),
    (NDMP_SESSION, "return_records=False", True),
    (NDMP_SESSION, "id=2000&fields=%2A", True),
    (NDMP_SESSION, "fields=%2A", False),
    (NDMP_SESSION, "id=2001", True),
    (NDMP_SESSION, "id=2001&uuid=N1", True),
    (NDMP_SESSION, "fields=node.name", True),
    (NDMP_SESSION, "order_by=id+desc", True),
    (CLUSTER_NDMP_PROPERTIES, "", False),
    (NDMP_NODE, "fields=%2A", True),
    (NDMP_NODE, "", False),
    (NDMP_NODE, "fields=enabled%2Cuser", False),
    (NDMP_NODE, "node.name=node1", True),
    (NDMP_SVM, "", True),
    (NDMP_SVM, "enabled=True", True),
    (NDMP_SVM, "", False),
    (NDMP_SVM, "fields=%2A", False),
    (NDMP_SVM, "svm.name=svm1&fields=%2A", True),
    (NDMP_SVM, "svm.name=svm%2A", True),
    (NDMP_PASSWORD, "", False),
]


@pytest.mark.parametrize(("record", "qs", "collection"), CLIENT_QUERIES)
def test_client_queries_are_accepted(record: Record, qs: str, collection: bool) -> None:
    q = parse_query(parse_qsl(qs, keep_blank_values=True), record, collection=collection)
    assert q.collection is collection


def test_client_find_and_count_answers() -> None:
    q = parse_query(parse_qsl("id=2003&fields=%2A"), NDMP_SESSION)
    body = apply_query(SESSIONS, q, base_path=BASE, hal=True)
    assert body["num_records"] == 1 and body["records"][0] == SESSIONS[3]
    q = parse_query(parse_qsl("node.name=node1&data.state=%21idle"), NDMP_SESSION)
    got = [r["id"] for r in apply_query(SESSIONS, q, base_path=BASE, hal=True)["records"]]
    assert got == [
        r["id"] for r in SESSIONS if r["node"]["name"] == "node1" and r["data"]["state"] != "idle"
    ]
    q = parse_query(parse_qsl("fields=id%2Cnode.name&order_by=id%20desc"), NDMP_SESSION)
    first = apply_query(SESSIONS, q, base_path=BASE, hal=True)["records"][0]
    assert first["id"] == "2009" and first["node"]["name"] == "node2"


# -- performance -----------------------------------------------------------------------------


def test_thousand_sessions_well_under_20ms() -> None:
    records = [
        {
            **session(i),
            "svm": {"uuid": "S1", "name": "svm1", "_links": {"self": {"href": "/api/svm/svms/S1"}}},
            "client_address": f"10.0.{i // 250}.{i % 250}",
            "source_address": "10.0.0.1",
            "data_path": f"/svm1/vol{i % 7}",
            "tape_device": f"nrst{i % 4}a",
            "mover": {
                "mode": "write",
                "state": "active",
                "reason": "not_available",
                "bytes_moved": i * 4096,
                "connection": {"type": "tcp", "address": "10.0.0.7", "port": 18600 + i % 100},
            },
            "scsi": {"device_id": "", "host_adapter": 0, "target_id": 0, "lun_id": 0},
        }
        for i in range(1000)
    ]
    params = [
        ("fields", "*"),
        ("data.state", "active|halted"),
        ("data_path", "/svm1/*"),
        ("mover.connection.port", ">=18600"),
        ("order_by", "data.bytes_processed desc,client_port"),
    ]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        body = apply_query(records, parse_query(params, NDMP_SESSION), base_path=BASE, hal=True)
        best = min(best, time.perf_counter() - t0)
    assert body["num_records"] > 600
    assert best < 0.020, f"{best * 1000:.1f} ms"
