"""Filter expressions (spec §3.5): every operator, quoting, errors, and a reference model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ndmpd.rest.errors import RestError
from ndmpd.rest.query import apply_query, match_filters, parse_query
from ndmpd.rest.schema import (
    NDMP_NODE,
    NDMP_PASSWORD,
    NDMP_SESSION,
    NDMP_SVM,
    Field,
    Kind,
    Record,
    array,
    boolean,
    enum,
    integer,
    obj,
    string,
)

from .test_schema import record_strategy


def session(i: int, **over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": str(2000 + i),
        "uuid": "N1",
        "node": {"uuid": "N1", "name": f"node{i % 2 + 1}"},
        "backup_engine": "dump",
        "client_address": f"10.0.0.{i}",
        "client_port": 40000 + i,
        "data_path": f"/svm1/vol{i}",
        "tape_device": f"nrst{i}a",
        "data": {"state": ["active", "halted", "idle"][i % 3], "bytes_processed": 1024 * i},
        "mover": {"state": "active", "connection": {"type": "tcp", "port": 18600 + i}},
        "_links": {"self": {"href": f"/api/protocols/ndmp/sessions/N1/{2000 + i}"}},
    }
    rec.update(over)
    return rec


SESSIONS = [session(i) for i in range(6)]


def ids(params: list[tuple[str, str]], records: list[dict[str, Any]] = SESSIONS) -> list[str]:
    q = parse_query([*params, ("fields", "id")], NDMP_SESSION)
    body = apply_query(records, q, base_path="/x", hal=False)
    return [r["id"] for r in body["records"]]


def err(params: list[tuple[str, str]], record: Record = NDMP_SESSION) -> RestError:
    with pytest.raises(RestError) as info:
        parse_query(params, record)
    return info.value


# -- operators -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("id", "2003")], ["2003"]),
        ([("id", "200")], []),
        ([("data_path", "/svm1/vol*")], [str(2000 + i) for i in range(6)]),
        ([("data_path", "*3")], ["2003"]),
        ([("data_path", "*vol*4*")], ["2004"]),
        ([("client_port", "<40002")], ["2000", "2001"]),
        ([("client_port", "<=40002")], ["2000", "2001", "2002"]),
        ([("client_port", ">40004")], ["2005"]),
        ([("client_port", ">=40004")], ["2004", "2005"]),
        ([("client_port", "40001..40003")], ["2001", "2002", "2003"]),
        ([("client_port", "!40001..40004")], ["2000", "2005"]),
        ([("data.state", "!idle")], ["2000", "2001", "2003", "2004"]),
        ([("data.state", "active|halted")], ["2000", "2001", "2003", "2004"]),
        ([("client_port", "40000|40002..40003|>40004")], ["2000", "2002", "2003", "2005"]),
        ([("node.name", "node2")], ["2001", "2003", "2005"]),
        ([("node.name", "!node*")], []),
        ([("tape_device", "nrst1a..nrst3a")], ["2001", "2002", "2003"]),
        ([("data.bytes_processed", "2KB..3KB")], ["2002", "2003"]),
        ([("data.bytes_processed", ">=4kb")], ["2004", "2005"]),
        ([("mover.connection.port", "1860*")], [str(2000 + i) for i in range(6)]),
        ([("mover.connection.port", "18603")], ["2003"]),
        ([("data.state", "active"), ("node.name", "node1")], ["2000"]),  # AND across fields
        ([("data.state", "idle"), ("node.name", "node1")], ["2002"]),
        ([("data.state", "idle"), ("client_port", ">40002")], ["2005"]),
        ([("backup_engine", "dump")], [str(2000 + i) for i in range(6)]),
        ([("backup_engine", "d*")], [str(2000 + i) for i in range(6)]),
        ([("data.state", "a*|h*")], ["2000", "2001", "2003", "2004"]),
        ([("data.state", "<b")], ["2000", "2003"]),  # enums compare as strings
    ],
)
def test_operators(params: list[tuple[str, str]], expected: list[str]) -> None:
    assert ids(params) == expected


def test_null_and_unset_fields() -> None:
    records = [
        session(0),
        session(1, client_port=None),
        {k: v for k, v in session(2).items() if k != "client_port"},
        session(3, data={"bytes_processed": 7}),
    ]
    assert ids([("client_port", "null")], records) == ["2001", "2002"]
    assert ids([("client_port", "NULL")], records) == ["2001", "2002"]
    assert ids([("client_port", "!null")], records) == ["2000", "2003"]
    # `<` skips unset fields; `|null` brings them in
    assert ids([("client_port", "<50000")], records) == ["2000", "2003"]
    assert ids([("client_port", "<50000|null")], records) == ["2000", "2001", "2002", "2003"]
    # negation does not select unset fields
    assert ids([("data.state", "!idle")], records) == ["2000", "2001"]
    assert ids([("data.state", "!idle|null")], records) == ["2000", "2001", "2003"]
    assert ids([("data.state", "*")], records) == ["2000", "2001", "2002"]
    assert ids([("svm.name", "null")], records) == ["2000", "2001", "2002", "2003"]
    assert ids([("svm.uuid", "*")], records) == []


def test_quoting_and_braces() -> None:
    records = [
        session(0, data_path="joe*"),
        session(1, data_path="joey"),
        session(2, data_path="a|b"),
        session(3, data_path="{jim}"),
        session(4, data_path="null"),
        session(5, data_path="x..y"),
    ]
    assert ids([("data_path", "joe*")], records) == ["2000", "2001"]
    assert ids([("data_path", '"joe*"')], records) == ["2000"]
    assert ids([("data_path", "{joe*}")], records) == ["2000"]
    assert ids([("data_path", "{a|b}")], records) == ["2002"]
    assert ids([("data_path", '"a|b"')], records) == ["2002"]
    assert ids([("data_path", "a|b")], records) == []
    assert ids([("data_path", "{{jim}}")], records) == ["2003"]
    assert ids([("data_path", "{{{jim}}}")], records) == ["2003"]
    assert ids([("data_path", "{{*")], records) == ["2003"]
    assert ids([("data_path", '"null"')], records) == ["2004"]
    assert ids([("data_path", "null")], records) == []
    assert ids([("data_path", '"x..y"')], records) == ["2005"]
    assert ids([("data_path", "{x..y}|{joey}")], records) == ["2001", "2005"]
    assert ids([("data_path", '!"joe*"')], records) == ["2001", "2002", "2003", "2004", "2005"]
    assert ids([("data_path", '"jo"*')], records) == ["2000", "2001"]
    assert ids([("data_path", '>="x"')], records) == ["2003", "2005"]


def test_booleans_are_case_insensitive() -> None:
    svms = [
        {"svm": {"name": "svm1", "uuid": "S1"}, "enabled": True},
        {"svm": {"name": "svm2", "uuid": "S2"}, "enabled": False},
        {"svm": {"name": "svm3", "uuid": "S3"}},
    ]

    def names(value: str) -> list[str]:
        q = parse_query([("enabled", value)], NDMP_SVM)
        return [r["svm"]["name"] for r in svms if match_filters(r, q)]

    assert names("True") == ["svm1"]
    assert names("true") == ["svm1"]
    assert names("FALSE") == ["svm2"]
    assert names("!true") == ["svm2"]
    assert names("true|null") == ["svm1", "svm3"]
    assert names("t*") == ["svm1"]


def test_array_fields_match_any_element() -> None:
    svms = [
        {"svm": {"name": "svm1"}, "authentication_types": ["challenge"]},
        {"svm": {"name": "svm2"}, "authentication_types": ["plaintext", "challenge"]},
        {"svm": {"name": "svm3"}, "authentication_types": []},
        {"svm": {"name": "svm4"}},
    ]

    def names(value: str) -> list[str]:
        q = parse_query([("authentication_types", value)], NDMP_SVM)
        return [r["svm"]["name"] for r in svms if match_filters(r, q)]

    assert names("challenge") == ["svm1", "svm2"]
    assert names("plaintext") == ["svm2"]
    assert names("plain*") == ["svm2"]
    assert names("!plaintext") == ["svm1", "svm3"]
    assert names("null") == ["svm4"]
    assert names("!null") == ["svm1", "svm2", "svm3"]


def test_has_filters_and_match_filters() -> None:
    assert not parse_query([], NDMP_SESSION).has_filters
    assert not parse_query([("fields", "*"), ("max_records", "3")], NDMP_SESSION).has_filters
    q = parse_query([("id", "2001"), ("uuid", "N1")], NDMP_SESSION)
    assert q.has_filters
    assert [r["id"] for r in SESSIONS if match_filters(r, q)] == ["2001"]
    assert match_filters(SESSIONS[0], parse_query([], NDMP_SESSION))


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "record", "code", "target"),
    [
        ([("type.name", "x")], NDMP_SESSION, "262179", "type.name"),
        ([("data", "x")], NDMP_SESSION, "262179", "data"),  # an object is not filterable
        ([("data.bogus", "x")], NDMP_SESSION, "262179", "data.bogus"),
        ([("password", "x")], NDMP_NODE, "262202", "password"),
        ([("password", "x")], NDMP_PASSWORD, "262202", "password"),
        ([("client_port", "abc")], NDMP_SESSION, "262185", "client_port"),
        ([("client_port", ">1.5")], NDMP_SESSION, "262185", "client_port"),
        ([("client_port", "1..")], NDMP_SESSION, "262185", "client_port"),
        ([("data_path", "..b")], NDMP_SESSION, "262185", "data_path"),
        ([("client_port", "1XB")], NDMP_SESSION, "262185", "client_port"),
        ([("enabled", "yes")], NDMP_SVM, "262185", "enabled"),
        ([("data_path", '"abc')], NDMP_SESSION, "262185", "data_path"),
        ([("data_path", "{abc")], NDMP_SESSION, "262185", "data_path"),
        ([("id", "1"), ("id", "2")], NDMP_SESSION, "262188", "id"),
    ],
)
def test_filter_errors(
    params: list[tuple[str, str]], record: Record, code: str, target: str
) -> None:
    e = err(params, record)
    assert (e.status, e.code, e.target) == (400, code, target)
    assert e.envelope()["error"]["code"] == code
    assert e.envelope()["error"]["target"] == target


def test_write_only_field_is_not_a_filter() -> None:
    rec = Record(
        "t", (string("name", identity=True), string("token", writable=True, write_only=True))
    )
    e = err([("token", "x")], rec)
    assert (e.status, e.code, e.target) == (400, "262250", "token")


# -- hypothesis: any text is either accepted or a RestError ---------------------------------

FILTER_TEXT = st.text(alphabet='ab01*<>=!|."{}-KBkbtrueflsnul ', max_size=14)
FILTER_FIELDS = [f.path for f in NDMP_SESSION.leaves] + ["bogus", "data", "node"]


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(FILTER_FIELDS), value=FILTER_TEXT, records=st.data())
def test_any_expression_is_parsed_or_rejected_cleanly(
    name: str, value: str, records: st.DataObject
) -> None:
    try:
        q = parse_query([(name, value)], NDMP_SESSION)
    except RestError as e:
        assert e.status == 400 and e.code.isdigit()
        return
    recs = records.draw(st.lists(record_strategy(NDMP_SESSION), max_size=3))
    for r in recs:
        assert isinstance(match_filters(r, q), bool)


# -- hypothesis: matching agrees with a reference model ---------------------------------------

MODEL = Record(
    "model",
    (
        string("s", identity=True),
        integer("n"),
        boolean("b"),
        enum("e", ("idle", "active", "halted")),
        array("a", Field("", Kind.ENUM, enum=("plaintext", "challenge", "plaintext_sso"))),
        array("ai", Field("", Kind.INTEGER)),
        obj("o", string("s"), integer("n")),
    ),
)
WORD = st.text(alphabet='ab{}"|*.!<>', max_size=4)
MODEL_RECORDS = record_strategy(MODEL, st.text(alphabet='ab{}"|*.', max_size=4))


@dataclass(frozen=True)
class RefTerm:
    negated: bool
    op: str  # null exact glob lt le gt ge range
    args: tuple[Any, ...]  # operands; for glob a tuple of str pieces and None for '*'


def _glob_ref(pieces: tuple[str | None, ...], text: str) -> bool:
    """Straightforward backtracking glob over literal pieces and stars."""
    if not pieces:
        return text == ""
    head, rest = pieces[0], pieces[1:]
    if head is None:
        return any(_glob_ref(rest, text[i:]) for i in range(len(text) + 1))
    return text.startswith(head) and _glob_ref(rest, text[len(head) :])


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _scalar_ref(t: RefTerm, v: Any) -> bool:
    if t.op == "exact":
        return v == t.args[0] and type(v) is type(t.args[0])
    if t.op == "glob":
        return _glob_ref(t.args, _text(v))
    if t.op == "range":
        return t.args[0] <= v <= t.args[1]
    x = t.args[0]
    return {"lt": v < x, "le": v <= x, "gt": v > x, "ge": v >= x}[t.op]


def reference(terms: list[RefTerm], value: Any) -> bool:
    for t in terms:
        if t.op == "null":
            if (value is None) != t.negated:
                return True
            continue
        if value is None:
            continue
        elems = value if isinstance(value, list) else [value]
        if any(_scalar_ref(t, e) for e in elems) != t.negated:
            return True
    return False


def _lit(text: str, draw: st.DrawFn) -> str:
    """Render literal text so the parser reads it back unchanged."""
    forms = ["{" + text.replace("{", "{{").replace("}", "}}") + "}"]
    if '"' not in text:
        forms.append(f'"{text}"')
    if text.isalnum() and text.lower() != "null":
        forms.append(text)
    return draw(st.sampled_from(forms))


def _operand(kind: Kind, draw: st.DrawFn) -> tuple[Any, str]:
    if kind is Kind.INTEGER:
        n = draw(st.integers(-5, 5))
        if draw(st.booleans()):
            return n * 1024, f"{n}{draw(st.sampled_from(['KB', 'kb', 'Kb']))}"
        return n, str(n)
    if kind is Kind.BOOLEAN:
        b = draw(st.booleans())
        return b, draw(st.sampled_from([str(b), str(b).lower(), str(b).upper()]))
    if kind is Kind.ENUM:
        text = draw(st.sampled_from(["idle", "active", "halted", "plaintext", "challenge", "x"]))
    else:
        text = draw(WORD)
    return text, _lit(text, draw)


@st.composite
def ref_term(draw: st.DrawFn, f: Field) -> tuple[RefTerm, str]:
    kind = f.scalar.kind
    negated = draw(st.booleans())
    ops = ["null", "exact", "glob", "lt", "le", "gt", "ge", "range"]
    op = draw(st.sampled_from(ops))
    prefix = "!" if negated else ""
    if op == "null":
        return RefTerm(negated, "null", ()), prefix + draw(st.sampled_from(["null", "NULL"]))
    if op == "glob":
        pieces: list[str | None] = []
        rendered: list[str] = []
        for _ in range(draw(st.integers(1, 3))):
            if draw(st.booleans()):
                pieces.append(None)
                rendered.append("*")
            else:
                text = draw(
                    st.text(
                        alphabet="ab01-t" if kind is not Kind.STRING else 'ab{}"|*.', max_size=3
                    )
                )
                pieces.append(text)
                rendered.append(_lit(text, draw) if text else "")
        if None not in pieces:
            pieces.append(None)
            rendered.append("*")
        return RefTerm(negated, "glob", tuple(pieces)), prefix + "".join(rendered)
    if op == "range":
        lo, lo_text = _operand(kind, draw)
        hi, hi_text = _operand(kind, draw)
        if kind in (Kind.STRING, Kind.ENUM) and (lo == "" or hi == ""):
            return RefTerm(negated, "exact", (lo,)), prefix + lo_text  # `..` needs two bounds
        return RefTerm(negated, "range", (lo, hi)), f"{prefix}{lo_text}..{hi_text}"
    value, text = _operand(kind, draw)
    if op == "exact":
        if kind is Kind.STRING and text == "":
            text = '""'
        return RefTerm(negated, "exact", (value,)), prefix + text
    symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
    return RefTerm(negated, op, (value,)), prefix + symbol + text


@st.composite
def ref_filter(draw: st.DrawFn) -> tuple[Field, list[RefTerm], str]:
    f = draw(st.sampled_from([f for f in MODEL.leaves]))
    pairs = draw(st.lists(ref_term(f), min_size=1, max_size=3))
    return f, [t for t, _ in pairs], "|".join(text for _, text in pairs)


def _value(record: dict[str, Any], f: Field) -> Any:
    v: Any = record
    for k in f.keys:
        v = v.get(k) if isinstance(v, dict) else None
    return v


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=ref_filter(), records=st.lists(MODEL_RECORDS, min_size=1, max_size=8))
def test_matching_agrees_with_reference(spec, records: list[dict[str, Any]]) -> None:
    f, terms, expression = spec
    q = parse_query([(f.path, expression)], MODEL)
    for r in records:
        assert match_filters(r, q) == reference(terms, _value(r, f)), (expression, r)


def test_many_stars_stay_fast() -> None:
    value = "a" * 3000
    records = [session(0, data_path=value), session(1, data_path=value + "b")]
    t0 = time.perf_counter()
    assert ids([("data_path", "*a" * 40 + "*c")], records) == []
    assert ids([("data_path", "*a" * 40 + "*b")], records) == ["2001"]
    assert time.perf_counter() - t0 < 0.5


def test_values_of_another_type_never_match() -> None:
    odd = [session(0, client_port="40000"), session(1, data_path=7, data={"state": 3})]
    assert ids([("client_port", "<50000")], odd) == ["2001"]
    assert ids([("client_port", "!<50000")], odd) == []
    assert ids([("data_path", "/svm*")], odd) == ["2000"]
    assert ids([("data_path", "7*")], odd) == ["2001"]
    assert ids([("data.state", ">a")], odd) == ["2000"]
