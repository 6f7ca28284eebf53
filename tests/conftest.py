"""Fixtures shared by the integration tests: a real server process and the ndmjob peer."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import NDMJOB, ServerProcess, start_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh ndmpd with SVM svm1 / volume vol1 and drives nrst0a..nrst3a."""
    proc = start_server(tmp_path / "srv")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a module's read-only tests (faster than one per test)."""
    proc = start_server(tmp_path_factory.mktemp("shared"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def ndmjob() -> str:
    if not os.access(NDMJOB, os.X_OK):
        pytest.fail(f"{NDMJOB} is missing: `make test` installs it (apt-get install amanda-common)")
    return NDMJOB


@pytest.fixture(scope="session")
def gmalloc_shim(tmp_path_factory: pytest.TempPathFactory) -> str:
    """LD_PRELOAD library working around ndmjob's zero-length TAPE_WRITE bug (see README).

    Debian's libndmjob allocates the request buffer with glib's g_malloc, which returns NULL
    for 0 bytes, and then treats that NULL as a failure: the client never sends the
    zero-length TAPE_WRITE its own tape test asks for and aborts the suite. The shim makes
    g_malloc(0) return a real pointer; nothing else changes.
    """
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.fail("a C compiler is needed to build the ndmjob g_malloc(0) shim")
    d = tmp_path_factory.mktemp("shim")
    src = d / "gmalloc0.c"
    src.write_text("#include <stdlib.h>\nvoid *g_malloc(size_t n) { return malloc(n ? n : 1); }\n")
    lib = d / "gmalloc0.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)], check=True)
    return str(lib)


def run_ndmjob(
    args: list[str], *, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [NDMJOB, *args], capture_output=True, text=True, timeout=timeout, env=full
    )
