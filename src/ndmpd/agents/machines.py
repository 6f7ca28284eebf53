"""The data and mover state machines, every transition in one table each (spec §7 and §8).

Theory of operation. Each service of a session is in exactly one state. Two kinds of things
move it: requests from the DMA (``Message`` members) and events from the data path
(``Event`` members: a peer connected, the stream ended, the tape hit a filemark...). The
tables below say, for each state, which requests are valid and where each request or event
leads; a request absent from a state's row is answered with ILLEGAL_STATE_ERR, an event absent
from a row is a bug and is refused loudly. The services (``data.py``, ``mover.py``) only ask
``next_state`` and do the work; they never decide validity themselves, so reading this file
against the spec is reading the whole behaviour. Requests that never change state and are
valid in every state (the GET_STATE polls) are listed in ``ALWAYS``.

Entering HALTED always posts NOTIFY_*_HALTED; entering PAUSED posts NOTIFY_MOVER_PAUSED;
entering IDLE resets every variable (the mover keeps its record size).
"""

from __future__ import annotations

from enum import Enum

from ndmpd.protocol.constants import DataState as D
from ndmpd.protocol.constants import Message as M
from ndmpd.protocol.constants import MoverState as S


class Event(Enum):
    PEER_CONNECTED = "peer connected to our listen address"
    STARTED = "operation started"
    FINISHED = "operation finished (successfully or not)"
    CONNECTION_CLOSED = "the data connection was closed by the peer"
    CONNECTION_ERROR = "the data connection failed"
    INTERNAL_ERROR = "internal error"
    PAUSE = "end of medium, filemark, end of window or seek"
    KILLED = "the administrator killed the session"


class IllegalTransition(Exception):
    """A request or event that the table does not allow in the current state."""


_STAY = None  # the request is valid and leaves the state unchanged

# ---- data service (spec §7) -----------------------------------------------------------
DATA_ALWAYS = frozenset({M.DATA_GET_STATE})

DATA_TABLE: dict[D, dict[M | Event, D | None]] = {
    D.IDLE: {
        M.DATA_LISTEN: D.LISTEN,
        M.DATA_CONNECT: D.CONNECTED,
    },
    D.LISTEN: {
        Event.PEER_CONNECTED: D.CONNECTED,
        M.DATA_ABORT: D.HALTED,
        Event.CONNECTION_ERROR: D.HALTED,
        Event.KILLED: D.HALTED,
    },
    D.CONNECTED: {
        M.DATA_START_BACKUP: D.ACTIVE,
        M.DATA_START_RECOVER: D.ACTIVE,
        M.DATA_START_RECOVER_FILEHIST: D.ACTIVE,
        M.DATA_ABORT: D.HALTED,  # ndmjob refuses this; the spec and the DMA's retry loop want it
        Event.CONNECTION_CLOSED: D.HALTED,
        Event.CONNECTION_ERROR: D.HALTED,
        Event.KILLED: D.HALTED,
    },
    D.ACTIVE: {
        M.DATA_GET_ENV: _STAY,
        M.DATA_ABORT: D.HALTED,
        Event.FINISHED: D.HALTED,
        Event.CONNECTION_ERROR: D.HALTED,
        Event.INTERNAL_ERROR: D.HALTED,
        Event.KILLED: D.HALTED,
    },
    D.HALTED: {
        M.DATA_GET_ENV: _STAY,
        M.DATA_STOP: D.IDLE,
        M.DATA_ABORT: _STAY,  # already halted: harmless, answer NO_ERR
        Event.KILLED: _STAY,
    },
}

# ---- mover (spec §8) --------------------------------------------------------------------
MOVER_ALWAYS = frozenset({M.MOVER_GET_STATE})

MOVER_TABLE: dict[S, dict[M | Event, S | None]] = {
    S.IDLE: {
        M.MOVER_SET_RECORD_SIZE: _STAY,
        M.MOVER_SET_WINDOW: _STAY,
        M.MOVER_LISTEN: S.LISTEN,
        M.MOVER_CONNECT: S.ACTIVE,
    },
    S.LISTEN: {
        Event.PEER_CONNECTED: S.ACTIVE,
        M.MOVER_ABORT: S.HALTED,
        Event.CONNECTION_ERROR: S.HALTED,
        Event.KILLED: S.HALTED,
    },
    S.ACTIVE: {
        M.MOVER_READ: _STAY,
        M.MOVER_ABORT: S.HALTED,
        Event.PAUSE: S.PAUSED,
        Event.CONNECTION_CLOSED: S.HALTED,
        Event.CONNECTION_ERROR: S.HALTED,
        Event.INTERNAL_ERROR: S.HALTED,
        Event.KILLED: S.HALTED,
    },
    S.PAUSED: {
        M.MOVER_SET_WINDOW: _STAY,
        M.MOVER_CONTINUE: S.ACTIVE,
        M.MOVER_READ: _STAY,
        M.MOVER_CLOSE: S.HALTED,
        M.MOVER_ABORT: S.HALTED,
        Event.CONNECTION_CLOSED: S.HALTED,
        Event.CONNECTION_ERROR: S.HALTED,
        Event.INTERNAL_ERROR: S.HALTED,
        Event.KILLED: S.HALTED,
    },
    S.HALTED: {
        M.MOVER_STOP: S.IDLE,
        M.MOVER_ABORT: _STAY,
        Event.CONNECTION_CLOSED: _STAY,
        Event.CONNECTION_ERROR: _STAY,
        Event.INTERNAL_ERROR: _STAY,
        Event.KILLED: _STAY,
    },
}


def allowed(table: dict, state: object, what: M | Event) -> bool:
    return what in table[state]


def next_state(table: dict, state: object, what: M | Event) -> object:
    """The state after ``what``; raises IllegalTransition when the table has no entry."""
    row = table[state]
    if what not in row:
        raise IllegalTransition(f"{what} in {state}")
    target = row[what]
    return state if target is None else target
