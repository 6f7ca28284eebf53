"""The one exception a request handler raises to answer with an NDMP error."""

from __future__ import annotations

from ndmpd.protocol.constants import Error


class NdmpError(Exception):
    """Answer the current request with ``error``; ``detail`` goes to the log (and LOG_MESSAGE
    where the handler posts one), never into the reply."""

    def __init__(self, error: Error, detail: str = "") -> None:
        super().__init__(detail or error.name)
        self.error = error
        self.detail = detail
