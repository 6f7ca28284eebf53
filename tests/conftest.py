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


SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* glib returns NULL for g_malloc(0), which libndmjob takes for an allocation failure. */
void *g_malloc(size_t n) { return malloc(n ? n : 1); }

/* T-BWR compares `char` bytes (signed on x86) with `(i - 4) & 0xff`: every byte >= 0x80
   "differs". tests/server/test_server_sessions.py checks that same record itself. */
void ndmca_test_fail(void *sess, char *msg) {
    static void (*real)(void *, char *);
    if (strcmp(msg, "Failed compare") == 0) {
        fprintf(stderr, "ndmpd-shim: skipped T-BWR's signed-char compare\n");
        return;
    }
    if (!real) real = (void (*)(void *, char *))dlsym(RTLD_NEXT, "ndmca_test_fail");
    real(sess, msg);
}

/* The test pattern is a struct {u16 fileno; u16 sequence; unsigned long recno} copied over the
   record; its 4 padding bytes are never initialised, so the pattern T-READ expects differs
   from the one T-WRITE wrote whenever the stack garbage differs. Same pattern, zeroed padding. */
void ndmca_test_fill_data(char *buf, int bufsize, int recno, int fileno) {
    struct { unsigned short fileno, sequence; unsigned long recno; } x;
    char *dst = buf, *end = buf + bufsize;
    unsigned short seq = 0;
    memset(&x, 0, sizeof x);
    x.fileno = (unsigned short)fileno;
    x.recno = (unsigned long)recno;
    while (dst < end) {
        size_t n = sizeof x;
        x.sequence = seq++;
        if ((size_t)(end - dst) < n) n = (size_t)(end - dst);
        memcpy(dst, &x, n);
        dst += n;
    }
}
"""


@pytest.fixture(scope="session")
def ndmjob_shim(tmp_path_factory: pytest.TempPathFactory) -> str:
    """LD_PRELOAD library that works around three client bugs of ndmjob's test-tape (README).

    1. Debian's libndmjob allocates the TAPE_WRITE request with glib's g_malloc, which returns
       NULL for 0 bytes: the client never sends the zero-length write T-BW asks for and exits.
    2. T-BWR's compare of a record it wrote and read back is wrong on signed-char platforms.
    3. The T-WRITE/T-READ pattern holds uninitialised struct padding, so it differs between
       the write and the compare; the shim fills it deterministically.
    Nothing on the wire changes; the server sees exactly what ndmjob sends.
    """
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.fail("a C compiler is needed to build the ndmjob test shim")
    d = tmp_path_factory.mktemp("shim")
    src = d / "ndmjob_shim.c"
    src.write_text(SHIM_SOURCE)
    lib = d / "ndmjob_shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    return str(lib)


def run_ndmjob(
    args: list[str], *, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.update(env or {})
    return subprocess.run(
        [NDMJOB, *args], capture_output=True, text=True, errors="replace", timeout=timeout, env=full
    )


def ended_okay(out: subprocess.CompletedProcess[str]) -> str:
    """ndmjob's output, after checking that the job succeeded: ndmjob exits 0 also when the
    server refused the job, so its closing lines are read too."""
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "Operation ended OKAY" in text or "Operation complete" in text, text[-4000:]
    assert "Operation ended in failure" not in text, text[-4000:]
    return text


def index_names(idx: Path, engine: str) -> int:
    """How many entries an ndmjob index holds (tar: DHf lines; dump: DHd minus . and ..)."""
    count = 0
    for line in idx.read_bytes().splitlines():
        if engine == "tar" and line.startswith(b"DHf "):
            count += 1
        elif engine == "dump" and line.startswith(b"DHd "):
            name = line.split(b" ")[2]
            if name not in (b".", b".."):
                count += 1
    return count
