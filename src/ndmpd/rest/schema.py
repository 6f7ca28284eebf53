"""Declarative field descriptions of every REST record, the single source for queries and docs.

The query engine (fields, filters, order_by), PATCH validation and the OpenAPI document all read
these descriptions, so a field's type, enum and access rules are written once (spec §4).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    ENUM = "enum"
    ARRAY = "array"
    OBJECT = "object"


SCALAR_KINDS = frozenset({Kind.STRING, Kind.INTEGER, Kind.BOOLEAN, Kind.ENUM})


@dataclass(frozen=True, slots=True)
class Field:
    """One property; `path` is the dotted name from the record root (set by `Record`)."""

    name: str
    kind: Kind
    enum: tuple[str, ...] = ()
    item: Field | None = None  # element type of an ARRAY (a nameless scalar Field)
    children: tuple[Field, ...] = ()  # members of an OBJECT
    readable: bool = True
    writable: bool = False
    write_only: bool = False
    costly: bool = False  # returned only with `fields=**` or by name
    identity: bool = False  # returned by default in collections
    secret: bool = False  # never accepted in a URL
    links: bool = False  # an OBJECT that carries its own `_links.self` (node/svm references)
    description: str = ""
    path: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.path.split("."))

    @property
    def is_scalar(self) -> bool:
        return self.kind in SCALAR_KINDS

    @property
    def scalar(self) -> Field:
        """The field whose type the filter/sort operands use: itself, or an array's element."""
        return self.item if self.kind is Kind.ARRAY and self.item is not None else self

    @property
    def gettable(self) -> bool:
        return self.readable and not self.write_only


def string(name: str, **kw: Any) -> Field:
    return Field(name, Kind.STRING, **kw)


def integer(name: str, **kw: Any) -> Field:
    return Field(name, Kind.INTEGER, **kw)


def boolean(name: str, **kw: Any) -> Field:
    return Field(name, Kind.BOOLEAN, **kw)


def enum(name: str, values: tuple[str, ...], **kw: Any) -> Field:
    return Field(name, Kind.ENUM, enum=values, **kw)


def array(name: str, of: Field, **kw: Any) -> Field:
    return Field(name, Kind.ARRAY, item=of, **kw)


def obj(name: str, *children: Field, **kw: Any) -> Field:
    return Field(name, Kind.OBJECT, children=children, **kw)


def _bind(f: Field, prefix: str) -> Field:
    path = f"{prefix}.{f.name}" if prefix else f.name
    children = tuple(_bind(c, path) for c in f.children)
    writable = f.writable or any(c.writable for c in children)
    return replace(f, path=path, children=children, writable=writable)


@dataclass(frozen=True)
class Record:
    """A record type: its top-level fields and lookups by dotted path."""

    name: str
    fields: tuple[Field, ...]
    links: bool = True  # records carry `_links.self`
    description: str = ""
    by_path: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bound = tuple(_bind(f, "") for f in self.fields)
        object.__setattr__(self, "fields", bound)
        index: dict[str, Field] = {}
        for f in self.walk():
            index[f.path] = f
        object.__setattr__(self, "by_path", index)

    def walk(self, fields: tuple[Field, ...] | None = None) -> Iterator[Field]:
        """Every field, parents before children."""
        for f in self.fields if fields is None else fields:
            yield f
            yield from self.walk(f.children)

    def get(self, path: str) -> Field | None:
        return self.by_path.get(path)

    @property
    def identity(self) -> tuple[Field, ...]:
        return tuple(f for f in self.walk() if f.identity)

    @property
    def leaves(self) -> tuple[Field, ...]:
        return tuple(f for f in self.walk() if f.kind is not Kind.OBJECT)


# -- enums (spec §4) ------------------------------------------------------------------------

NDMP_MODE = ("svm", "node")
NDMP_AUTH_TYPE = ("plaintext", "challenge", "plaintext_sso")
NDMP_STATE = ("active", "connected", "halted", "idle", "listening", "paused")
NDMP_REASON = (
    "aborted",
    "connection_closed",
    "connect_error",
    "end_of_file",
    "end_of_media",
    "end_of_window",
    "internal_error",
    "media_error",
    "not_available",
    "seek",
    "successful",
)
NDMP_MOVER_MODE = ("read", "write", "data", "raw")
NDMP_ADDR_TYPE = ("local", "tcp")
NDMP_DATA_OPERATION = ("backup", "restore", "none")
NDMP_BACKUP_ENGINE = ("dump", "smtape")
SVM_STATE = ("starting", "running", "stopping", "stopped", "deleting", "initializing")


def _node_ref(**kw: Any) -> Field:
    return obj(
        "node",
        string("name"),
        string("uuid"),
        links=True,
        description="The node (reference to /api/cluster/nodes/{uuid}).",
        **kw,
    )


def _svm_ref(**kw: Any) -> Field:
    return obj(
        "svm",
        string("name"),
        string("uuid"),
        links=True,
        description="The SVM (reference to /api/svm/svms/{uuid}).",
        **kw,
    )


def _connection() -> Field:
    return obj(
        "connection",
        enum("type", NDMP_ADDR_TYPE),
        string("address"),
        integer("port"),
        description="The NDMP data connection.",
    )


def _auth_types(**kw: Any) -> Field:
    return array(
        "authentication_types",
        Field("", Kind.ENUM, enum=NDMP_AUTH_TYPE),
        writable=True,
        description="NDMP authentication types.",
        **kw,
    )


CLUSTER_NDMP_PROPERTIES = Record(
    "cluster_ndmp_properties",
    (
        enum(
            "mode",
            NDMP_MODE,
            writable=True,
            identity=True,
            description="Whether NDMP is node-scoped or SVM-scoped.",
        ),
    ),
    description="The cluster-wide NDMP mode (/api/protocols/ndmp).",
)

NDMP_NODE = Record(
    "ndmp_node",
    (
        _node_ref(identity=True),
        boolean("enabled", writable=True, description="Whether the NDMP service runs."),
        _auth_types(),
        string("user", writable=True, description="The NDMP user of the node."),
        string(
            "password",
            writable=True,
            write_only=True,
            secret=True,
            description="The NDMP password; it can be set but is never returned.",
        ),
    ),
    description="NDMP configuration of one node (node scope).",
)

NDMP_SVM = Record(
    "ndmp_svm",
    (
        _svm_ref(identity=True),
        boolean("enabled", writable=True, description="Whether NDMP is enabled on the SVM."),
        _auth_types(),
    ),
    description="NDMP configuration of one SVM (SVM scope).",
)

NDMP_PASSWORD = Record(
    "ndmp_password",
    (
        _svm_ref(identity=True),
        string("user", identity=True, description="The NDMP user."),
        string("password", secret=True, description="The generated NDMP password."),
    ),
    description="A generated NDMP password of an SVM user.",
)

NDMP_SESSION = Record(
    "ndmp_session",
    (
        string("id", identity=True, description="The NDMP session identifier (a string)."),
        string(
            "uuid",
            identity=True,
            description="The owner UUID: the node UUID in node scope, the SVM UUID in SVM scope.",
        ),
        _node_ref(identity=True),
        _svm_ref(identity=True),
        enum(
            "backup_engine",
            NDMP_BACKUP_ENGINE,
            description="The backup engine; left out for engines outside the ONTAP enum.",
        ),
        string(
            "ndmpd_backup_engine",
            description="ndmpd extension: the engine actually used (`dump` or `tar`).",
        ),
        string("client_address", description="The DMA peer address."),
        integer("client_port", description="The DMA peer port."),
        string("source_address", description="The local address of the control connection."),
        string("data_path", description="The path being backed up or restored."),
        string("tape_device", description="The tape device, e.g. nrst0a."),
        enum("tape_mode", NDMP_MOVER_MODE, description="The mode the tape was opened in."),
        obj(
            "data",
            enum("operation", NDMP_DATA_OPERATION),
            enum("state", NDMP_STATE),
            enum("reason", NDMP_REASON),
            integer("bytes_processed"),
            _connection(),
            description="State of the NDMP data server.",
        ),
        obj(
            "mover",
            enum("mode", NDMP_MOVER_MODE),
            enum("state", NDMP_STATE),
            enum("reason", NDMP_REASON),
            integer("bytes_moved"),
            _connection(),
            description="State of the NDMP tape mover.",
        ),
        obj(
            "scsi",
            string("device_id"),
            integer("host_adapter"),
            integer("target_id"),
            integer("lun_id"),
            description="The SCSI (robot) device.",
        ),
    ),
    description="One NDMP session.",
)

CLUSTER = Record(
    "cluster",
    (
        string("name", identity=True),
        string("uuid", identity=True),
        obj(
            "version",
            string("full"),
            integer("generation"),
            integer("major"),
            integer("minor"),
        ),
    ),
    description="The cluster (/api/cluster).",
)

CLUSTER_NODE = Record(
    "cluster_node",
    (string("name", identity=True), string("uuid", identity=True)),
    description="A cluster node (/api/cluster/nodes).",
)

SVM = Record(
    "svm",
    (
        string("name", identity=True),
        string("uuid", identity=True),
        enum("state", SVM_STATE),
        obj("ndmp", boolean("allowed", description="Whether NDMP may be used on the SVM.")),
    ),
    description="An SVM (/api/svm/svms).",
)

RECORDS: dict[str, Record] = {
    r.name: r
    for r in (
        CLUSTER_NDMP_PROPERTIES,
        NDMP_NODE,
        NDMP_SVM,
        NDMP_PASSWORD,
        NDMP_SESSION,
        CLUSTER,
        CLUSTER_NODE,
        SVM,
    )
}


# -- OpenAPI 3 / JSON-schema fragments --------------------------------------------------------

_HREF = {"type": "object", "properties": {"href": {"type": "string", "example": "/api/..."}}}


def _links_schema(*, collection: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {"self": _HREF}
    if collection:
        props["next"] = _HREF
    return {"type": "object", "readOnly": True, "properties": props}


def _field_schema(f: Field, record_writable: bool = True) -> dict[str, Any]:
    out: dict[str, Any]
    if f.kind is Kind.OBJECT:
        props = {c.name: _field_schema(c) for c in f.children}
        if f.links:
            props["_links"] = _links_schema()
        out = {"type": "object", "properties": props}
    elif f.kind is Kind.ARRAY:
        assert f.item is not None
        out = {"type": "array", "items": _field_schema(f.item)}
    elif f.kind is Kind.ENUM:
        out = {"type": "string", "enum": list(f.enum)}
    else:
        out = {"type": str(f.kind)}
    if f.description:
        out["description"] = f.description
    if f.name and not f.writable:
        out["readOnly"] = True
    if f.write_only:
        out["writeOnly"] = True
    if f.secret:
        out["format"] = "password"
    return out


def openapi_schema(record: Record) -> dict[str, Any]:
    """The record as an OpenAPI 3 schema object (readOnly/writeOnly/enum from the description)."""
    props = {f.name: _field_schema(f) for f in record.fields}
    if record.links:
        props["_links"] = _links_schema()
    out: dict[str, Any] = {"type": "object", "properties": props}
    if record.description:
        out["description"] = record.description
    return out


def openapi_collection_schema(record: Record) -> dict[str, Any]:
    """The `{records, num_records, _links}` envelope of a collection GET of `record`."""
    return {
        "type": "object",
        "properties": {
            "records": {"type": "array", "items": openapi_schema(record)},
            "num_records": {"type": "integer", "description": "Number of records."},
            "_links": _links_schema(collection=True),
        },
    }


def openapi_error_schema() -> dict[str, Any]:
    """ONTAP's `error_response`: `code` is a string of digits."""
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string", "example": "entry doesn't exist"},
                    "code": {"type": "string", "example": "4"},
                    "target": {"type": "string", "example": "uuid"},
                },
            }
        },
    }
