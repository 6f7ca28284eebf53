"""ONTAP's REST query language over lists of JSON records: fields, filters, order_by and paging.

Framework-free: the REST app hands in the percent-decoded query parameters and full records
(nested dicts, as they would be serialised), and gets back the collection envelope or the
projected instance. Everything is compiled once per request by `parse_query`, so evaluating a
thousand records is a few closure calls each and no deep copies.

Choices where ONTAP is undocumented (spec §3, §9), in one place:

* A query key given twice (or both `order_by` and `$orderBy`) is rejected with 262188, as ONTAP
  documents; the `netapp-ontap` client never sends duplicates (it keeps the last value).
* Unset fields (absent or JSON null) match only `null`; every other term, negated or not, is
  false for them (`!idle` does not select a session without `data.state`). `!null` selects set
  fields. An array matches a term if any element does; `!x` on an array means no element is x.
* String and enum filters are case-sensitive; booleans are case-insensitive (`True`, `false`).
* Explicit `fields=` always keeps the identity fields (as ONTAP keeps keys) unless they are
  excluded with `!`; a list of exclusions only is applied to `*`. A write-only field named in
  `fields` is 262249; `_links` may be named and is ignored.
* Instance GETs (`collection=False`) default to `fields=*`, as ONTAP's instance GET does; filters
  on an instance GET act as conditions: a record that fails them is 404 code 4. Paging parameters
  are validated but ignored there.
* `return_records=false` returns the count of every remaining match (`max_records` ignored,
  no `next`), because `count_collection()` reads `num_records` and never follows `next`.
* `start.index` counts matches after filtering, sorting and `offset`; `max_records=0` is
  rejected so that a `next` link always makes progress.
* Unset values sort after every set value in ascending order (before them in descending).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from ndmpd.rest.errors import RestError
from ndmpd.rest.schema import Field, Kind, Record

Params = Sequence[tuple[str, str]]
Json = dict[str, Any]

_BOOL_PARAMS = (
    "ignore_unknown_fields",
    "return_records",
    "pretty",
    "continue_on_failure",
    "serial_records",
)
_INT_PARAMS = ("max_records", "offset", "return_timeout", "start.index")
_CONTROL_PARAMS = frozenset({"fields", "order_by", *_BOOL_PARAMS, *_INT_PARAMS})
_ORDER_BY_ALIAS = "$orderBy"
RETURN_TIMEOUT_MAX = 120
START_INDEX = "start.index"

_SIZE_SUFFIXES = {"": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}
_INT_RE = re.compile(r"\s*([+-]?\d+)\s*([kKmMgGtTpP][bB])?\s*")


def parse_int(text: str) -> int | None:
    """An integer with an optional KB/MB/GB/TB/PB suffix (powers of 1024), else None."""
    m = _INT_RE.fullmatch(text)
    if m is None:
        return None
    return int(m.group(1)) * _SIZE_SUFFIXES[(m.group(2) or "").lower()]


def parse_bool(text: str) -> bool | None:
    low = text.strip().lower()
    if low == "true":
        return True
    if low == "false":
        return False
    return None


# -- filters ----------------------------------------------------------------------------------

Pred = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class _Seg:
    """A run of filter text; `quoted` text is literal (no wildcard or operator meaning)."""

    text: str
    quoted: bool


@dataclass(frozen=True, slots=True)
class Term:
    """One `|` alternative: `null`, or a predicate on a set value, possibly negated."""

    negated: bool
    null: bool
    pred: Pred | None


def _split_alternatives(value: str, target: str) -> list[list[_Seg]]:
    """Split on unquoted `|`, resolving `"..."`, `{...}` and doubled braces into literal runs."""
    alts: list[list[_Seg]] = []
    segs: list[_Seg] = []
    raw: list[str] = []
    i, n = 0, len(value)

    def flush_raw() -> None:
        if raw:
            segs.append(_Seg("".join(raw), False))
            raw.clear()

    while i < n:
        c = value[i]
        if c == "|":
            flush_raw()
            alts.append(segs)
            segs = []
            i += 1
        elif c == '"':
            end = value.find('"', i + 1)
            if end < 0:
                raise RestError.invalid_value(value, target, "Unterminated quote.")
            flush_raw()
            segs.append(_Seg(value[i + 1 : end], True))
            i = end + 1
        elif c in "{}" and value.startswith(c * 2, i):
            flush_raw()
            segs.append(_Seg(c, True))
            i += 2
        elif c == "{":
            flush_raw()
            lit: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise RestError.invalid_value(value, target, "Unterminated brace.")
                d = value[i]
                if d in "{}" and value.startswith(d * 2, i):
                    lit.append(d)
                    i += 2
                elif d == "}":
                    i += 1
                    break
                else:
                    lit.append(d)
                    i += 1
            segs.append(_Seg("".join(lit), True))
        else:
            raw.append(c)
            i += 1
    flush_raw()
    alts.append(segs)
    return alts


def _joined(segs: Sequence[_Seg]) -> str:
    return "".join(s.text for s in segs)


def _strip_prefix(segs: list[_Seg], k: int) -> list[_Seg]:
    first = segs[0]
    rest = first.text[k:]
    return ([_Seg(rest, False)] if rest else []) + segs[1:]


def _scalar_text(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


def _operand(text: str, kind: Kind, target: str) -> Any:
    if kind is Kind.INTEGER:
        num = parse_int(text)
        if num is None:
            raise RestError.invalid_value(text, target, "An integer is expected.")
        return num
    if kind is Kind.BOOLEAN:
        flag = parse_bool(text)
        if flag is None:
            raise RestError.invalid_value(text, target, 'Expected "true" or "false".')
        return flag
    return text


def _glob(segs: Sequence[_Seg]) -> Pred:
    """A `*` matcher without backtracking: literal pieces found greedily, left to right.

    Greedy leftmost search is exact for patterns whose only wildcard is `*`, and it stays
    linear in the value for any number of stars, unlike a regex (`*a*a*a*...` is a ReDoS).
    """
    pieces = [""]
    for s in segs:
        if s.quoted:
            pieces[-1] += s.text
        else:
            first, *rest = s.text.split("*")
            pieces[-1] += first
            pieces.extend(rest)
    head, *middle, tail = pieces
    fixed = len(head) + len(tail)

    def match(v: Any) -> bool:
        text = v if isinstance(v, str) else _scalar_text(v)
        if len(text) < fixed or not text.startswith(head) or not text.endswith(tail):
            return False
        pos, end = len(head), len(text) - len(tail)
        for piece in middle:
            found = text.find(piece, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True

    return match


_COMPARATORS: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
    ("<=", operator.le),
    (">=", operator.ge),
    ("<", operator.lt),
    (">", operator.gt),
)


def _compile_term(segs: list[_Seg], f: Field, target: str) -> Term:
    kind = f.scalar.kind
    negated = False
    if segs and not segs[0].quoted and segs[0].text.startswith("!"):
        negated = True
        segs = _strip_prefix(segs, 1)
    if len(segs) == 1 and not segs[0].quoted and segs[0].text.lower() == "null":
        return Term(negated, True, None)
    if segs and not segs[0].quoted:
        for op_text, op in _COMPARATORS:
            if segs[0].text.startswith(op_text):
                bound = _operand(_joined(_strip_prefix(segs, len(op_text))), kind, target)
                return Term(negated, False, lambda v, b=bound, op=op: op(v, b))
    for idx, s in enumerate(segs):
        if not s.quoted and ".." in s.text:
            left, right = s.text.split("..", 1)
            lo_text = _joined([*segs[:idx], _Seg(left, False)])
            hi_text = _joined([_Seg(right, False), *segs[idx + 1 :]])
            if not lo_text or not hi_text:
                raise RestError.invalid_value(
                    _joined(segs), target, "A range needs a lower and an upper bound."
                )
            lo = _operand(lo_text, kind, target)
            hi = _operand(hi_text, kind, target)
            return Term(negated, False, lambda v, lo=lo, hi=hi: lo <= v <= hi)
    if any(not s.quoted and "*" in s.text for s in segs):
        return Term(negated, False, _glob(segs))
    exact = _operand(_joined(segs), kind, target)
    if kind is Kind.BOOLEAN:
        return Term(negated, False, lambda v, b=exact: v is b)
    return Term(negated, False, lambda v, x=exact: v == x)


def _getter(keys: tuple[str, ...]) -> Callable[[Json], Any]:
    """A fast path lookup; absent, JSON null and non-object parents all read as None."""
    if len(keys) == 1:
        (k,) = keys
        return lambda r: r.get(k)

    def get(r: Json) -> Any:
        v: Any = r
        for k in keys:
            if not isinstance(v, dict):
                return None
            v = v.get(k)
        return v

    return get


@dataclass(frozen=True, slots=True)
class FieldFilter:
    """A compiled `<field>=<expression>` query parameter."""

    field: Field
    expression: str
    terms: tuple[Term, ...]
    get: Callable[[Json], Any]

    def matches(self, record: Json) -> bool:
        value = self.get(record)
        unset = value is None
        is_array = self.field.kind is Kind.ARRAY
        for t in self.terms:
            if t.null:
                if unset != t.negated:
                    return True
                continue
            if unset:
                continue
            assert t.pred is not None
            try:
                if is_array:
                    hit = isinstance(value, list) and any(t.pred(e) for e in value if e is not None)
                else:
                    hit = t.pred(value)
            except TypeError:  # a value of another type than the schema's never matches
                continue
            if hit != t.negated:
                return True
        return False


def compile_filter(f: Field, expression: str) -> FieldFilter:
    """Compile one filter expression (spec §3.5) for field `f`; bad input is a RestError."""
    alts = _split_alternatives(expression, f.path)
    terms = tuple(_compile_term(a, f, f.path) for a in alts)
    return FieldFilter(f, expression, terms, _getter(f.keys))


# -- fields selection -----------------------------------------------------------------------

# A compiled projection: (key, sub-projection or None for a copied leaf, copy-deeply flag).
Projection = tuple[tuple[str, "Projection | None", bool], ...]


def _expand_fields(text: str) -> list[tuple[bool, str]]:
    """`a,!b,c.{d,e.{f}}` -> [(excluded, dotted name), ...]; braces must balance (262286)."""
    pos = 0
    n = len(text)

    def parse_list(prefix: str, neg: bool) -> list[tuple[bool, str]]:
        nonlocal pos
        items = parse_item(prefix, neg)
        while pos < n and text[pos] == ",":
            pos += 1
            items += parse_item(prefix, neg)
        return items

    def parse_item(prefix: str, neg: bool) -> list[tuple[bool, str]]:
        nonlocal pos
        while pos < n and text[pos] == "!":
            neg = True
            pos += 1
        start = pos
        while pos < n and text[pos] not in ",{}":
            pos += 1
        token = text[start:pos].strip()
        name = f"{prefix}.{token}" if prefix and token else (prefix or token)
        if pos < n and text[pos] == "{":
            pos += 1
            inner = parse_list(name.rstrip("."), neg)
            if pos >= n or text[pos] != "}":
                raise RestError.mismatched_braces(text)
            pos += 1
            if pos < n and text[pos] not in ",}":
                raise RestError.invalid_field_value(text, "fields")
            return inner
        return [(neg, name)] if token else []

    items = parse_list("", False)
    if pos != n:
        raise RestError.mismatched_braces(text)
    return items


def _leaves(f: Field, costly: bool) -> Iterable[Field]:
    if f.kind is Kind.OBJECT:
        for c in f.children:
            if c.gettable and (costly or not c.costly):
                yield from _leaves(c, costly)
    else:
        yield f


def _all_leaves(record: Record, costly: bool) -> list[Field]:
    out: list[Field] = []
    for f in record.fields:
        if f.gettable and (costly or not f.costly):
            out.extend(_leaves(f, costly))
    return out


def _build_projection(
    fields: tuple[Field, ...], chosen: set[str], hal: bool, links: bool, *, top: bool = False
) -> Projection:
    """Compile the chosen leaves; an embedded object's `_links` ride along with any member."""
    entries: list[tuple[str, Projection | None, bool]] = []
    for f in fields:
        if f.kind is Kind.OBJECT:
            sub = _build_projection(f.children, chosen, hal, f.links)
            if sub:
                entries.append((f.name, sub, False))
        elif f.path in chosen:
            entries.append((f.name, None, f.kind is Kind.ARRAY))
    if (entries or top) and hal and links:
        entries.append(("_links", None, True))
    return tuple(entries)


def _clone(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clone(x) for x in v]
    return v


def _apply_projection(src: Json, proj: Projection) -> Json:
    out: Json = {}
    for key, sub, deep in proj:
        v = src.get(key)
        if v is None:
            continue
        if sub is None:
            out[key] = _clone(v) if deep else v
        elif isinstance(v, dict):
            o = _apply_projection(v, sub)
            if o:
                out[key] = o
    return out


def _selected_paths(record: Record, text: str | None, collection: bool, ignore: bool) -> set[str]:
    """The set of selected leaf paths for a `fields` value (None: the default set)."""
    identity: set[str] = set()
    for f in record.identity:
        identity.update(leaf.path for leaf in _leaves(f, True) if leaf.gettable)
    items = _expand_fields(text) if text else []
    if not items:
        if collection:
            return identity
        return {f.path for f in _all_leaves(record, costly=False)}
    included: set[str] = set()
    excluded: set[str] = set()
    has_inclusion = has_exclusion = False
    for neg, name in items:
        if name in ("*", "**"):
            paths = {f.path for f in _all_leaves(record, costly=name == "**")}
        elif name == "_links":
            paths = set()
        else:
            f = record.get(name)
            if f is None:
                if ignore:
                    continue
                raise RestError.invalid_field_value(name, "fields")
            if not f.gettable:
                raise RestError.field_not_readable(name)
            paths = {leaf.path for leaf in _leaves(f, costly=True) if leaf.gettable}
        if neg:
            has_exclusion = True
            excluded |= paths
        else:
            has_inclusion = True
            included |= paths
    if has_inclusion:
        return (included | identity) - excluded
    if has_exclusion:
        return {f.path for f in _all_leaves(record, costly=False)} - excluded
    return _selected_paths(record, None, collection, ignore)


# -- the query ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortKey:
    field: Field
    descending: bool
    get: Callable[[Json], Any]


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed, validated request query, compiled against one record schema."""

    record: Record
    collection: bool
    params: tuple[tuple[str, str], ...]  # as given (decoded), for self/next links
    filters: tuple[FieldFilter, ...]
    order_by: tuple[SortKey, ...]
    selected: frozenset[str]  # selected leaf paths
    projection_hal: Projection
    projection_plain: Projection
    max_records: int | None = None
    offset: int = 0
    start_index: int = 0
    return_records: bool | None = None  # None: not given (GET default true, PATCH/DELETE false)
    return_timeout: int | None = None  # None: not given (GET default 15 s)
    ignore_unknown_fields: bool = False
    pretty: bool = False
    continue_on_failure: bool | None = None
    serial_records: bool | None = None

    @property
    def has_filters(self) -> bool:
        return bool(self.filters)

    def selects(self, path: str) -> bool:
        """Whether the response needs `path` (or part of it), so callers can skip costly work."""
        return path in self.selected or any(p.startswith(path + ".") for p in self.selected)


def _parse_order_by(record: Record, value: str) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for item in value.split(","):
        words = item.split()
        if not words:
            continue
        if len(words) > 2:
            raise RestError.invalid_value(item.strip(), "order_by")
        desc = False
        if len(words) == 2:
            direction = words[1].lower()
            if direction not in ("asc", "desc"):
                raise RestError.invalid_value(item.strip(), "order_by", 'Use "asc" or "desc".')
            desc = direction == "desc"
        f = record.get(words[0])
        if f is None or f.kind is Kind.OBJECT or not f.gettable:
            raise RestError.order_by_not_allowed(words[0])
        keys.append(SortKey(f, desc, _getter(f.keys)))
    return tuple(keys)


def parse_query(params: Params, schema: Record, *, collection: bool = True) -> Query:
    """Validate and compile percent-decoded query parameters for `schema` (see module notes)."""
    seen: dict[str, str] = {}
    for key, value in params:
        canon = "order_by" if key == _ORDER_BY_ALIAS else key
        if canon in seen:
            raise RestError.duplicate_field(key)
        seen[canon] = value

    filters: list[FieldFilter] = []
    control: dict[str, Any] = {}
    for key, value in seen.items():
        if key in _BOOL_PARAMS:
            flag = parse_bool(value)
            if flag is None:
                raise RestError.invalid_value(value, key, 'Expected "true" or "false".')
            control[key] = flag
        elif key in _INT_PARAMS:
            num = parse_int(value)
            low = 1 if key == "max_records" else 0
            high = RETURN_TIMEOUT_MAX if key == "return_timeout" else None
            if num is None or num < low or (high is not None and num > high):
                bounds = f"{low}..{high}" if high is not None else f"at least {low}"
                raise RestError.invalid_value(value, key, f"Expected an integer, {bounds}.")
            control[key] = num
        elif key not in _CONTROL_PARAMS:
            f = schema.get(key)
            if f is None or f.kind is Kind.OBJECT:
                raise RestError.unexpected_argument(key)
            if f.secret:
                raise RestError.secret_in_url(key)
            if not f.gettable:
                raise RestError.filter_not_readable(key)
            filters.append(compile_filter(f, value))

    ignore = control.get("ignore_unknown_fields", False)
    selected = _selected_paths(schema, seen.get("fields"), collection, ignore)
    order_by = _parse_order_by(schema, seen["order_by"]) if "order_by" in seen else ()
    return Query(
        record=schema,
        collection=collection,
        params=tuple(params),
        filters=tuple(filters),
        order_by=order_by,
        selected=frozenset(selected),
        projection_hal=_build_projection(schema.fields, selected, True, schema.links, top=True),
        projection_plain=_build_projection(schema.fields, selected, False, False),
        max_records=control.get("max_records"),
        offset=control.get("offset", 0),
        start_index=control.get(START_INDEX, 0),
        return_records=control.get("return_records"),
        return_timeout=control.get("return_timeout"),
        ignore_unknown_fields=ignore,
        pretty=control.get("pretty", False),
        continue_on_failure=control.get("continue_on_failure"),
        serial_records=control.get("serial_records"),
    )


def match_filters(record: Json, query: Query) -> bool:
    """AND of every field filter (true when there are none)."""
    return all(f.matches(record) for f in query.filters)


def _sort(records: list[Json], keys: tuple[SortKey, ...]) -> list[Json]:
    for key in reversed(keys):
        get = key.get

        def sort_key(r: Json, get: Callable[[Json], Any] = get) -> tuple[Any, ...]:
            v = get(r)
            if v is None:
                return (1,)
            if isinstance(v, list):
                return (0, tuple(_scalar_text(e) for e in v))
            return (0, v)

        records.sort(key=sort_key, reverse=key.descending)
    return records


def project(record: Json, query: Query, *, hal: bool) -> Json:
    """The instance GET body: the record reduced to the selected fields.

    Filters on an instance GET are conditions: a record that does not match is "entry doesn't
    exist" (404, code 4), as if the keyed query found nothing.
    """
    if query.filters and not match_filters(record, query):
        raise RestError.not_found()
    return _apply_projection(record, query.projection_hal if hal else query.projection_plain)


def _href(base_path: str, params: Iterable[tuple[str, str]]) -> str:
    qs = urlencode(list(params), quote_via=quote)
    return f"{base_path}?{qs}" if qs else base_path


def apply_query(records: Iterable[Json], query: Query, *, base_path: str, hal: bool) -> Json:
    """Filter, sort, page and project `records` into ONTAP's collection envelope.

    `base_path` is the request path (e.g. `/api/protocols/ndmp/sessions`); the `next` link
    repeats every original parameter with a new `start.index`, and appears only when more
    matches follow, so a client following it always terminates. Without HAL (plain JSON) every
    `_links` except the collection's `next` is dropped.
    """
    filters = query.filters
    if filters:
        matched = [r for r in records if all(f.matches(r) for f in filters)]
    else:
        matched = list(records)
    if query.order_by:
        _sort(matched, query.order_by)
    start = query.offset + query.start_index
    total = len(matched)
    out: Json = {}
    next_index: int | None = None
    if query.return_records is False:
        out["num_records"] = max(0, total - start)
    else:
        end = total if query.max_records is None else min(total, start + query.max_records)
        proj = query.projection_hal if hal else query.projection_plain
        page = [_apply_projection(r, proj) for r in matched[start:end]]
        out["records"] = page
        out["num_records"] = len(page)
        if end < total:
            next_index = query.start_index + len(page)
    links: Json = {}
    if hal:
        links["self"] = {"href": _href(base_path, query.params)}
    if next_index is not None:
        kept = [(k, v) for k, v in query.params if k != START_INDEX]
        links["next"] = {"href": _href(base_path, [*kept, (START_INDEX, str(next_index))])}
    if links:
        out["_links"] = links
    return out


# -- PATCH bodies ---------------------------------------------------------------------------


def _validate_value(value: Any, f: Field, path: str) -> Any:
    kind = f.kind
    if value is None:
        raise RestError.invalid_value("null", path)
    if kind is Kind.ARRAY:
        if not isinstance(value, list):
            raise RestError.array_expected(path)
        assert f.item is not None
        items = [_validate_value(v, f.item, path) for v in value]
        seen: set[Any] = set()
        for v in items:
            if isinstance(v, str | int) and v in seen:
                raise RestError.duplicate_value(v, path)
            seen.add(v)
        return items
    if isinstance(value, list):
        raise RestError.array_unexpected(path)
    if kind is Kind.OBJECT:
        if not isinstance(value, dict):
            raise RestError.invalid_value(value, path, "An object is expected.")
        return _validate_object(value, f.children, path)
    if kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise RestError.invalid_value(value, path, "A boolean is expected.")
    elif kind is Kind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RestError.invalid_value(value, path, "An integer is expected.")
    elif not isinstance(value, str):
        raise RestError.invalid_value(value, path, "A string is expected.")
    elif kind is Kind.ENUM and value not in f.enum:
        raise RestError.invalid_value(value, path, "Valid values: " + ", ".join(f.enum) + ".")
    return value


def _validate_object(body: dict[str, Any], fields: tuple[Field, ...], prefix: str) -> Json:
    by_name = {f.name: f for f in fields}
    out: Json = {}
    for key, value in body.items():
        path = f"{prefix}.{key}" if prefix else key
        f = by_name.get(key)
        if f is None:
            raise RestError.unexpected_argument(path)
        if not f.writable:
            raise RestError.field_not_settable(path)
        out[key] = _validate_value(value, f, path)
    return out


def validate_patch(body: object, schema: Record) -> Json:
    """Check a PATCH body against `schema`; returns a validated copy.

    Unknown fields (including `_links`) are 262179, read-only fields 262196, wrong types 262185
    (262254/262255 for array mismatches), repeated array values 262222; write-only fields are
    accepted. An empty object is returned as `{}`: whether that is a no-op is the caller's call
    (spec §8.4 Q3).
    """
    if not isinstance(body, dict):
        raise RestError.malformed_body()
    return _validate_object(body, schema.fields, "")
