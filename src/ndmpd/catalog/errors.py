"""Exception types of the catalog package, kept apart so callers can import them cheaply."""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration file (or a command-line override) is unusable; the message says where."""


class DataPathError(ValueError):
    """A DMA-supplied path is not `/<svm>/<volume>[/path]` inside a configured volume."""


class CatalogError(Exception):
    """A catalog operation was refused (unknown user, duplicate, bad role, missing secret...)."""


class NotFoundError(CatalogError):
    """The user or SVM named does not exist (REST maps this to 404)."""


class AlreadyExistsError(CatalogError):
    """A user of that name exists already."""


class PasswordUnavailableError(CatalogError):
    """No NDMP-specific password can be generated (the SVM uses `plaintext_sso`)."""
