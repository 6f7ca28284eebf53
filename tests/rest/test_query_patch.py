"""PATCH body validation against the record schemas."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.rest.errors import RestError
from ndmpd.rest.query import validate_patch
from ndmpd.rest.schema import (
    CLUSTER_NDMP_PROPERTIES,
    NDMP_NODE,
    NDMP_SESSION,
    NDMP_SVM,
    SVM,
    Record,
    integer,
    obj,
    string,
)


@pytest.mark.parametrize(
    ("body", "record"),
    [
        ({"mode": "node"}, CLUSTER_NDMP_PROPERTIES),
        ({"mode": "svm"}, CLUSTER_NDMP_PROPERTIES),
        ({}, CLUSTER_NDMP_PROPERTIES),
        (
            {"authentication_types": ["plaintext"], "enabled": False, "password": "pw"},
            NDMP_NODE,
        ),
        ({"user": "user22"}, NDMP_NODE),
        ({"enabled": False}, NDMP_SVM),
        ({"authentication_types": ["challenge"]}, NDMP_SVM),
        ({"authentication_types": []}, NDMP_SVM),
    ],
)
def test_valid_bodies_are_returned_unchanged(body: dict[str, Any], record: Record) -> None:
    got = validate_patch(body, record)
    assert got == body and got is not body


@pytest.mark.parametrize(
    ("body", "record", "code", "target"),
    [
        ({"mode": "cluster"}, CLUSTER_NDMP_PROPERTIES, "262185", "mode"),
        ({"mode": 1}, CLUSTER_NDMP_PROPERTIES, "262185", "mode"),
        ({"mode": None}, CLUSTER_NDMP_PROPERTIES, "262185", "mode"),
        ({"mode": ["svm"]}, CLUSTER_NDMP_PROPERTIES, "262255", "mode"),
        ({"bogus": 1}, NDMP_NODE, "262179", "bogus"),
        ({"_links": {}}, NDMP_NODE, "262179", "_links"),
        ({"node": {"uuid": "N1"}}, NDMP_NODE, "262196", "node"),
        ({"enabled": "true"}, NDMP_NODE, "262185", "enabled"),
        ({"enabled": 1}, NDMP_NODE, "262185", "enabled"),
        ({"user": 5}, NDMP_NODE, "262185", "user"),
        ({"authentication_types": "plaintext"}, NDMP_NODE, "262254", "authentication_types"),
        ({"authentication_types": ["md5"]}, NDMP_NODE, "262185", "authentication_types"),
        (
            {"authentication_types": ["challenge", "challenge"]},
            NDMP_SVM,
            "262222",
            "authentication_types",
        ),
        ({"svm": {"name": "x"}}, NDMP_SVM, "262196", "svm"),
        ({"id": "2000"}, NDMP_SESSION, "262196", "id"),
        ({"data": {"state": "idle"}}, NDMP_SESSION, "262196", "data"),
        ({"ndmp": {"allowed": True}}, SVM, "262196", "ndmp"),
    ],
)
def test_bad_bodies(body: dict[str, Any], record: Record, code: str, target: str) -> None:
    with pytest.raises(RestError) as info:
        validate_patch(body, record)
    e = info.value
    assert (e.status, e.code, e.target) == (400, code, target)


@pytest.mark.parametrize("body", [None, [], "x", 3, [{"enabled": True}]])
def test_body_must_be_an_object(body: object) -> None:
    with pytest.raises(RestError) as info:
        validate_patch(body, NDMP_SVM)
    assert (info.value.status, info.value.code) == (400, "262199")


def test_nested_writable_objects_and_their_errors() -> None:
    rec = Record(
        "nested",
        (
            string("name", identity=True),
            obj("limits", integer("max", writable=True), integer("used")),
        ),
    )
    assert rec.get("limits").writable and not rec.get("limits.used").writable
    assert validate_patch({"limits": {"max": 5}}, rec) == {"limits": {"max": 5}}
    for body, code, target in [
        ({"limits": {"used": 1}}, "262196", "limits.used"),
        ({"limits": {"nope": 1}}, "262179", "limits.nope"),
        ({"limits": {"max": True}}, "262185", "limits.max"),
        ({"limits": 5}, "262185", "limits"),
        ({"name": "x"}, "262196", "name"),
    ]:
        with pytest.raises(RestError) as info:
            validate_patch(body, rec)
        assert (info.value.code, info.value.target) == (code, target)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(["enabled", "authentication_types", "user", "password", "node", "x"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=4) | JSON)
def test_any_json_is_validated_or_rejected_cleanly(body: object) -> None:
    try:
        got = validate_patch(body, NDMP_NODE)
    except RestError as e:
        assert e.status == 400 and e.code.isdigit()
        return
    assert isinstance(body, dict) and got == body
