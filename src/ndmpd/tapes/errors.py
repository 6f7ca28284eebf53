"""The one exception the tape layer raises; the session copies ``error`` into its reply."""

from __future__ import annotations

from ndmpd.protocol.constants import Error


class TapeError(Exception):
    """A tape operation failed with an NDMP error code (spec §9 says which)."""

    def __init__(self, error: Error, message: str = "") -> None:
        super().__init__(message or error.name)
        self.error = error

    def __repr__(self) -> str:
        return f"TapeError({self.error.name}, {str(self)!r})"
