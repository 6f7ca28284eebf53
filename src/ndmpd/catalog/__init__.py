"""Configuration (TOML) and persistent state (SQLite catalog) of one ndmpd node."""

from ndmpd.catalog.config import (
    Config,
    DataPath,
    NdmpConfig,
    NodeConfig,
    RestConfig,
    SvmConfig,
    TapeConfig,
    VolumeConfig,
    load_config,
)
from ndmpd.catalog.errors import (
    AlreadyExistsError,
    CatalogError,
    ConfigError,
    DataPathError,
    NotFoundError,
    PasswordUnavailableError,
)
from ndmpd.catalog.store import (
    Catalog,
    FirstStart,
    NodeNdmpSettings,
    SvmNdmpSettings,
    User,
)

__all__ = [
    "AlreadyExistsError",
    "Catalog",
    "CatalogError",
    "Config",
    "ConfigError",
    "DataPath",
    "DataPathError",
    "FirstStart",
    "NdmpConfig",
    "NodeConfig",
    "NodeNdmpSettings",
    "NotFoundError",
    "PasswordUnavailableError",
    "RestConfig",
    "SvmConfig",
    "SvmNdmpSettings",
    "TapeConfig",
    "User",
    "VolumeConfig",
    "load_config",
]
