"""Fixtures shared by the engine tests: the awkward source tree (built once per session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from trees import build_awkward_tree


@pytest.fixture(scope="session")
def awkward_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The awkward tree without a socket (tar skips sockets). Read it, do not modify it."""
    return build_awkward_tree(tmp_path_factory.mktemp("awkward") / "src")


@pytest.fixture(scope="session")
def awkward_tree_with_socket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The awkward tree plus a Unix socket, for engines that keep sockets (dump)."""
    return build_awkward_tree(tmp_path_factory.mktemp("awkward") / "src", socket_file=True)
