"""Record schemas: their shape, and what we emit checked against ONTAP's own swagger subset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ndmpd.rest.query import apply_query, parse_query, project
from ndmpd.rest.schema import (
    CLUSTER,
    CLUSTER_NDMP_PROPERTIES,
    CLUSTER_NODE,
    NDMP_NODE,
    NDMP_PASSWORD,
    NDMP_SESSION,
    NDMP_SVM,
    RECORDS,
    SVM,
    Field,
    Kind,
    Record,
    openapi_collection_schema,
    openapi_error_schema,
    openapi_schema,
)

SWAGGER = Path("/work/shared/reference/ontap-ndmp-swagger-subset.yaml")
# Fields absent from the 9.7/9.8-era swagger subset: our documented extension, and the session
# `uuid` that ONTAP 9.9 added (spec §0, S3).
EXTENSIONS = {"ndmp_session": {"ndmpd_backup_engine", "uuid"}}
IN_SWAGGER = ("cluster_ndmp_properties", "ndmp_node", "ndmp_svm", "ndmp_session")


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    if not SWAGGER.exists():
        pytest.skip("swagger subset not available")
    return yaml.safe_load(SWAGGER.read_text())["definitions"]


# -- a schema-driven record strategy (also used by the query tests) --------------------------

TEXT = st.text(alphabet='ab*|{}"!<>.,: 01', max_size=6)


def _links(path: str) -> dict[str, Any]:
    return {"self": {"href": f"/api/{path}"}}


def value_strategy(f: Field, text: st.SearchStrategy[str] = TEXT) -> st.SearchStrategy[Any]:
    """Any valid value of `f`, objects with any subset of their members set."""
    if f.kind is Kind.OBJECT:
        members = {c.name: value_strategy(c, text) for c in f.children if c.gettable}
        base = st.fixed_dictionaries({}, optional=members)
        if f.links:
            return base.map(lambda d, n=f.name: {**d, "_links": _links(n)})
        return base
    if f.kind is Kind.ARRAY:
        assert f.item is not None
        return st.lists(value_strategy(f.item, text), max_size=3)
    if f.kind is Kind.ENUM:
        return st.sampled_from(f.enum)
    if f.kind is Kind.INTEGER:
        return st.integers(min_value=-(2**40), max_value=2**40)
    if f.kind is Kind.BOOLEAN:
        return st.booleans()
    return text


def record_strategy(record: Record, text: st.SearchStrategy[str] = TEXT) -> st.SearchStrategy:
    """Full records of `record`: every readable field optional, plus the record's own link."""
    members = {f.name: value_strategy(f, text) for f in record.fields if f.gettable}
    return st.fixed_dictionaries({"_links": st.just(_links(record.name))}, optional=members)


# -- a small swagger 2 / OpenAPI checker ------------------------------------------------------


def check(value: Any, sch: dict[str, Any], defs: dict[str, Any], path: str, extra: set[str]):
    """Assert `value` fits `sch` (types, enums, known properties); `extra` are allowed unknowns."""
    if "$ref" in sch:
        sch = defs[sch["$ref"].rsplit("/", 1)[-1]]
    assert value is not None, f"{path}: null emitted"
    if "enum" in sch:
        assert value in sch["enum"], f"{path}: {value!r} not in {sch['enum']}"
    kind = sch.get("type", "object" if "properties" in sch else None)
    if kind == "string":
        assert isinstance(value, str), f"{path}: {value!r} is not a string"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: {value!r}"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: {value!r} is not a boolean"
    elif kind == "array":
        assert isinstance(value, list), f"{path}: {value!r} is not an array"
        for i, item in enumerate(value):
            check(item, sch["items"], defs, f"{path}[{i}]", extra)
    elif kind == "object":
        assert isinstance(value, dict), f"{path}: {value!r} is not an object"
        props = sch.get("properties", {})
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            if key not in props:
                assert sub in extra, f"{sub}: not in the schema"
                continue
            check(item, props[key], defs, sub, extra)
    assert not sch.get("writeOnly") and not sch.get("x-ntap-writeOnly"), f"{path}: write-only"


# -- tests ------------------------------------------------------------------------------------


def test_every_record_is_registered() -> None:
    assert set(RECORDS) == {
        "ndmp_session",
        "ndmp_node",
        "ndmp_svm",
        "ndmp_password",
        "cluster_ndmp_properties",
        "cluster",
        "cluster_node",
        "svm",
    }


@pytest.mark.parametrize(
    ("record", "identity"),
    [
        (NDMP_SESSION, {"id", "uuid", "node", "svm"}),
        (NDMP_NODE, {"node"}),
        (NDMP_SVM, {"svm"}),
        (NDMP_PASSWORD, {"svm", "user"}),
        (CLUSTER_NDMP_PROPERTIES, {"mode"}),
        (CLUSTER, {"name", "uuid"}),
        (CLUSTER_NODE, {"name", "uuid"}),
        (SVM, {"name", "uuid"}),
    ],
)
def test_identity_fields(record: Record, identity: set[str]) -> None:
    assert {f.path for f in record.identity} == identity


def test_session_fields_are_those_of_the_spec() -> None:
    top = [f.name for f in NDMP_SESSION.fields]
    assert top == [
        "id",
        "uuid",
        "node",
        "svm",
        "backup_engine",
        "ndmpd_backup_engine",
        "client_address",
        "client_port",
        "source_address",
        "data_path",
        "tape_device",
        "tape_mode",
        "data",
        "mover",
        "scsi",
    ]
    assert NDMP_SESSION.get("backup_engine").enum == ("dump", "smtape")
    assert NDMP_SESSION.get("ndmpd_backup_engine").kind is Kind.STRING
    assert NDMP_SESSION.get("mover.connection.port").kind is Kind.INTEGER
    assert NDMP_SESSION.get("id").kind is Kind.STRING
    assert not any(f.writable for f in NDMP_SESSION.walk())


def test_access_rules() -> None:
    password = NDMP_NODE.get("password")
    assert password.write_only and password.writable and not password.gettable
    assert NDMP_NODE.get("node").writable is False
    assert NDMP_NODE.get("node.uuid").writable is False
    assert {f.path for f in NDMP_NODE.walk() if f.writable} == {
        "enabled",
        "authentication_types",
        "user",
        "password",
    }
    assert {f.path for f in NDMP_SVM.walk() if f.writable} == {"enabled", "authentication_types"}
    assert {f.path for f in CLUSTER_NDMP_PROPERTIES.walk() if f.writable} == {"mode"}
    assert NDMP_PASSWORD.get("password").gettable
    assert SVM.get("ndmp.allowed").kind is Kind.BOOLEAN
    assert [c.name for c in CLUSTER.get("version").children] == [
        "full",
        "generation",
        "major",
        "minor",
    ]


@pytest.mark.parametrize("name", IN_SWAGGER)
def test_enums_and_types_agree_with_swagger(name: str, definitions: dict[str, Any]) -> None:
    """Every field we describe that ONTAP also defines has ONTAP's type and enum."""
    record = RECORDS[name]

    def resolve(sch: dict[str, Any]) -> dict[str, Any]:
        return definitions[sch["$ref"].rsplit("/", 1)[-1]] if "$ref" in sch else sch

    for f in record.walk():
        sch: dict[str, Any] | None = definitions[name]
        for key in f.keys:
            props = resolve(sch).get("properties", {}) if sch else {}
            sch = props.get(key)
        if sch is None:
            assert f.path in EXTENSIONS.get(name, set()), f"{name}.{f.path} not in swagger"
            continue
        sch = resolve(sch)
        if f.kind is Kind.ARRAY:
            assert sch["type"] == "array"
            assert f.item is not None
            assert tuple(resolve(sch["items"])["enum"]) == f.item.enum
        elif f.kind is Kind.ENUM:
            assert tuple(sch["enum"]) == f.enum, f.path
        elif f.kind is Kind.OBJECT:
            assert sch.get("type", "object") == "object"
        else:
            assert sch["type"] == str(f.kind), f.path
        writeonly = bool(sch.get("x-ntap-writeOnly"))
        assert writeonly == f.write_only, f.path


@pytest.mark.parametrize("name", IN_SWAGGER)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_emitted_records_fit_swagger(name: str, data: st.DataObject, definitions) -> None:
    record = RECORDS[name]
    full = data.draw(record_strategy(record))
    extra = EXTENSIONS.get(name, set())
    for fields in ("**", "*", None):
        params = [("fields", fields)] if fields else []
        for hal in (True, False):
            body = project(full, parse_query(params, record, collection=False), hal=hal)
            check(body, definitions[name], definitions, "", extra)
            assert ("password" in body) is False or record is NDMP_PASSWORD


@settings(max_examples=25, deadline=None)
@given(records=st.lists(record_strategy(NDMP_SESSION), max_size=6), page=st.integers(1, 4))
def test_emitted_collection_fits_swagger(records: list, page: int, definitions) -> None:
    query = parse_query([("fields", "*"), ("max_records", str(page))], NDMP_SESSION)
    body = apply_query(records, query, base_path="/api/protocols/ndmp/sessions", hal=True)
    # the checker names array members by index; allow the extensions at any index
    extra: set[str] = set()
    extra |= {
        f"records[{i}].{name}" for i in range(len(records)) for name in EXTENSIONS["ndmp_session"]
    }
    check(body, definitions["ndmp_session_response"], definitions, "", extra)


@pytest.mark.parametrize("name", sorted(RECORDS))
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_emitted_records_fit_our_openapi(name: str, data: st.DataObject) -> None:
    record = RECORDS[name]
    full = data.draw(record_strategy(record))
    body = project(full, parse_query([("fields", "**")], record, collection=False), hal=True)
    check(body, openapi_schema(record), {}, "", set())


def test_openapi_fragments() -> None:
    node = openapi_schema(NDMP_NODE)
    assert node["type"] == "object"
    assert node["properties"]["password"]["writeOnly"] is True
    assert node["properties"]["node"]["readOnly"] is True
    assert "readOnly" not in node["properties"]["enabled"]
    assert node["properties"]["authentication_types"]["items"]["enum"] == [
        "plaintext",
        "challenge",
        "plaintext_sso",
    ]
    assert node["properties"]["_links"]["readOnly"] is True
    assert "_links" in node["properties"]["node"]["properties"]
    session = openapi_schema(NDMP_SESSION)
    assert session["properties"]["data"]["properties"]["state"]["enum"][0] == "active"
    assert session["properties"]["client_port"]["type"] == "integer"
    coll = openapi_collection_schema(NDMP_SESSION)
    assert coll["properties"]["records"]["items"] == session
    assert set(coll["properties"]["_links"]["properties"]) == {"self", "next"}
    err = openapi_error_schema()
    assert err["properties"]["error"]["properties"]["code"]["type"] == "string"
