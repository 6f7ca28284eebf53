"""ONTAP JSON records built from live state: sessions, NDMP settings, cluster, nodes, SVMs.

Each record is computed at request time from the one source of truth (the live `Session`, the
catalog), fully populated with every `_links`; the query core then projects it. Records are
built directly as plain dicts, so listing a thousand sessions costs a thousand small dicts.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from ndmpd import __version__
from ndmpd.protocol.constants import (
    AddrType,
    DataHaltReason,
    DataOperation,
    DataState,
    MoverHaltReason,
    MoverMode,
    MoverPauseReason,
    MoverState,
    TapeOpenMode,
)

if TYPE_CHECKING:
    from ndmpd.catalog.store import Catalog
    from ndmpd.server.listener import NdmpServer
    from ndmpd.server.session import Session

Json = dict[str, Any]

ONTAP_RELEASE = (9, 19, 1)
"""The ONTAP release whose REST API we speak (spec §0, S1/S4)."""

SESSIONS_PATH = "/api/protocols/ndmp/sessions"
NDMP_NODES_PATH = "/api/protocols/ndmp/nodes"
NDMP_SVMS_PATH = "/api/protocols/ndmp/svms"
CLUSTER_NODES_PATH = "/api/cluster/nodes"
SVMS_PATH = "/api/svm/svms"

_DATA_STATE = {
    DataState.IDLE: "idle",
    DataState.ACTIVE: "active",
    DataState.HALTED: "halted",
    DataState.LISTEN: "listening",
    DataState.CONNECTED: "connected",
}
_DATA_HALT = {
    DataHaltReason.NA: "not_available",
    DataHaltReason.SUCCESSFUL: "successful",
    DataHaltReason.ABORTED: "aborted",
    DataHaltReason.INTERNAL_ERROR: "internal_error",
    DataHaltReason.CONNECT_ERROR: "connect_error",
}
_DATA_OPERATION = {
    DataOperation.NOACTION: "none",
    DataOperation.BACKUP: "backup",
    DataOperation.RECOVER: "restore",
    DataOperation.RECOVER_FILEHIST: "restore",
}
_MOVER_STATE = {
    MoverState.IDLE: "idle",
    MoverState.LISTEN: "listening",
    MoverState.ACTIVE: "active",
    MoverState.PAUSED: "paused",
    MoverState.HALTED: "halted",
}
_MOVER_PAUSE = {
    MoverPauseReason.NA: "not_available",
    MoverPauseReason.EOM: "end_of_media",
    MoverPauseReason.EOF: "end_of_file",
    MoverPauseReason.SEEK: "seek",
    MoverPauseReason.MEDIA_ERROR: "media_error",
    MoverPauseReason.EOW: "end_of_window",
}
_MOVER_HALT = {
    MoverHaltReason.NA: "not_available",
    MoverHaltReason.CONNECT_CLOSED: "connection_closed",
    MoverHaltReason.ABORTED: "aborted",
    MoverHaltReason.INTERNAL_ERROR: "internal_error",
    MoverHaltReason.CONNECT_ERROR: "connect_error",
    MoverHaltReason.MEDIA_ERROR: "media_error",
}
_MOVER_MODE = {MoverMode.READ: "read", MoverMode.WRITE: "write"}
_TAPE_MODE = {TapeOpenMode.READ: "read", TapeOpenMode.RDWR: "write", TapeOpenMode.RAW: "raw"}


def links(href: str) -> Json:
    return {"self": {"href": href}}


def key(value: str) -> str:
    """A path key as the `netapp-ontap` client encodes it (form encoding, spec §8.1)."""
    return quote_plus(value, safe="")


def node_ref(node_uuid: str, name: str) -> Json:
    return {"uuid": node_uuid, "name": name, "_links": links(f"{CLUSTER_NODES_PATH}/{node_uuid}")}


def svm_ref(svm_uuid: str, name: str) -> Json:
    return {"uuid": svm_uuid, "name": name, "_links": links(f"{SVMS_PATH}/{svm_uuid}")}


@dataclass(frozen=True, slots=True)
class View:
    """What one request needs to know to build records: read once, not once per record."""

    mode: str  # "svm" | "node"
    node_uuid: str
    node_name: str
    svms: dict[str, str]  # name -> uuid, configured SVMs only
    user_svm: str | None  # the requesting user's SVM (None: a cluster user)

    def sees_svm(self, name: str) -> bool:
        return self.user_svm is None or self.user_svm == name

    def owner_uuid(self, session: Session) -> str:
        if self.mode == "node":
            return self.node_uuid
        return self.svms.get(session.svm, "")

    def svm_name_by_uuid(self, svm_uuid: str) -> str | None:
        for name, u in self.svms.items():
            if u == svm_uuid:
                return name
        return None


def make_view(catalog: Catalog, server: NdmpServer, user_svm: str | None) -> View:
    svms: dict[str, str] = {}
    for name in server.svm_names:
        svms[name] = catalog.svm_uuid(name)
    return View(
        mode=catalog.ndmp_mode(),
        node_uuid=catalog.node_uuid(),
        node_name=server.config.node.name,
        svms=svms,
        user_svm=user_svm,
    )


def _connection(addr: Any) -> Json | None:
    """An NDMP `Addr` as `ndmp_connect`; None for types the REST enum lacks (IPC, FC)."""
    addr_type = getattr(addr, "addr_type", None)
    if addr_type == AddrType.LOCAL:
        return {"type": "local"}
    if addr_type == AddrType.TCP:
        out: Json = {"type": "tcp"}
        tcp = getattr(addr, "tcp_addr", None) or []
        if tcp:
            out["address"] = str(ipaddress.IPv4Address(tcp[0].ip_addr & 0xFFFFFFFF))
            out["port"] = int(tcp[0].port)
        return out
    return None


def session_href(owner_uuid: str, session_id: str) -> str:
    return f"{SESSIONS_PATH}/{owner_uuid}/{key(session_id)}"


def session_record(session: Session, view: View) -> Json:
    """The full `ndmp_session` of a live session (spec §4.5, mapping §4.6)."""
    sid = str(session.id)
    owner = view.owner_uuid(session)
    rec: Json = {"id": sid, "uuid": owner, "node": node_ref(view.node_uuid, view.node_name)}
    if view.mode == "svm" and session.svm in view.svms:
        rec["svm"] = svm_ref(view.svms[session.svm], session.svm)
    data = session.data
    butype = data.butype
    if butype == "dump":
        rec["backup_engine"] = "dump"
    if butype:
        rec["ndmpd_backup_engine"] = butype
    if session.client_address:
        rec["client_address"] = session.client_address
        rec["client_port"] = session.client_port
    if session.source_address:
        rec["source_address"] = session.source_address
    if data.data_path:
        rec["data_path"] = data.data_path
    tape = session.tape
    if tape.device is not None:
        rec["tape_device"] = tape.device
        if tape.mode is not None and tape.mode in _TAPE_MODE:
            rec["tape_mode"] = _TAPE_MODE[tape.mode]
    state = data.state
    drec: Json = {
        "operation": _DATA_OPERATION.get(data.operation, "none"),
        "state": _DATA_STATE.get(state, "idle"),
        "reason": (
            _DATA_HALT.get(data.halt_reason, "not_available")
            if state == DataState.HALTED
            else "not_available"
        ),
        "bytes_processed": int(data.bytes_processed),
    }
    conn = _connection(data.addr)
    if conn is not None:
        drec["connection"] = conn
    rec["data"] = drec
    mover = session.mover
    mstate = mover.state
    if mstate == MoverState.PAUSED:
        reason = _MOVER_PAUSE.get(mover.pause_reason, "not_available")
    elif mstate == MoverState.HALTED:
        reason = _MOVER_HALT.get(mover.halt_reason, "not_available")
    else:
        reason = "not_available"
    mrec: Json = {"state": _MOVER_STATE.get(mstate, "idle"), "reason": reason}
    mode = _MOVER_MODE.get(mover.mode)
    if mode is not None:
        mrec["mode"] = mode
    mrec["bytes_moved"] = int(mover.bytes_moved)
    conn = _connection(mover.addr)
    if conn is not None:
        mrec["connection"] = conn
    rec["mover"] = mrec
    rec["scsi"] = {"device_id": "", "host_adapter": 0, "target_id": 0, "lun_id": 0}
    rec["_links"] = links(session_href(owner, sid))
    return rec


def visible_sessions(server: NdmpServer, view: View) -> list[Session]:
    """Live sessions the requesting user may see, in id order."""
    sessions = list(server.sessions.values())
    if view.user_svm is not None:
        sessions = [s for s in sessions if s.svm == view.user_svm]
    sessions.sort(key=lambda s: s.id)
    return sessions


def cluster_ndmp_record(mode: str) -> Json:
    return {"mode": mode, "_links": links("/api/protocols/ndmp")}


def ndmp_node_record(catalog: Catalog, view: View) -> Json:
    settings = catalog.node_settings()
    rec: Json = {
        "node": node_ref(view.node_uuid, view.node_name),
        "enabled": settings.enabled,
        "authentication_types": list(settings.authentication_types),
    }
    if settings.user:
        rec["user"] = settings.user
    rec["_links"] = links(f"{NDMP_NODES_PATH}/{view.node_uuid}")
    return rec


def ndmp_svm_record(catalog: Catalog, name: str, svm_uuid: str) -> Json:
    settings = catalog.svm_settings(name)
    return {
        "svm": svm_ref(svm_uuid, name),
        "enabled": settings.enabled,
        "authentication_types": list(settings.authentication_types),
        "_links": links(f"{NDMP_SVMS_PATH}/{svm_uuid}"),
    }


def ndmp_password_record(name: str, svm_uuid: str, user: str, password: str) -> Json:
    return {
        "svm": svm_ref(svm_uuid, name),
        "user": user,
        "password": password,
        "_links": links(f"{NDMP_SVMS_PATH}/{svm_uuid}/passwords/{key(user)}"),
    }


def cluster_uuid(node_uuid: str) -> str:
    """A one-node cluster's UUID: stable, derived from the node's, and distinct from it."""
    return str(uuid.uuid5(uuid.UUID(node_uuid), "ndmpd-cluster"))


def version_record() -> Json:
    gen, major, minor = ONTAP_RELEASE
    return {
        "full": f"NetApp Release {gen}.{major}.{minor}: ndmpd {__version__}",
        "generation": gen,
        "major": major,
        "minor": minor,
    }


def cluster_record(view: View) -> Json:
    return {
        "name": view.node_name,
        "uuid": cluster_uuid(view.node_uuid),
        "version": version_record(),
        "_links": links("/api/cluster"),
    }


def cluster_node_record(view: View) -> Json:
    return {
        "name": view.node_name,
        "uuid": view.node_uuid,
        "_links": links(f"{CLUSTER_NODES_PATH}/{view.node_uuid}"),
    }


def svm_record(name: str, svm_uuid: str) -> Json:
    return {
        "name": name,
        "uuid": svm_uuid,
        "state": "running",
        "ndmp": {"allowed": True},
        "_links": links(f"{SVMS_PATH}/{svm_uuid}"),
    }
