"""schemathesis against our own OpenAPI document on a live server: no 5xx, no schema violation.

Bounded (a few examples per operation, deterministic generation) so it stays well under a
minute; it mutates settings, so it gets a server of its own.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.serverproc import ADMIN_PASSWORD, start_server

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)


def _schemathesis() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("schemathesis")
    if found is None:
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    return [found]


@pytest.mark.timeout(120)
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    cmd = _schemathesis()
    srv = start_server(tmp_path / "srv", log_level="INFO")
    try:
        assert srv.rest_url
        auth = ("admin", ADMIN_PASSWORD)
        doc = httpx.get(f"{srv.rest_url}/docs/api", auth=auth).json()
        spec = tmp_path / "openapi.json"
        spec.write_text(json.dumps(doc))
        token = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
        out = subprocess.run(
            [
                *cmd,
                "run",
                str(spec),
                "--url",
                srv.rest_url,
                "-H",
                f"Authorization: Basic {token}",
                "--checks",
                CHECKS,
                "--max-examples",
                "12",
                "--phases",
                "examples,fuzzing",
                "--request-timeout",
                "5",
                "--generation-deterministic",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=100,
            cwd=tmp_path,
        )
        report = out.stdout[-5000:] + out.stderr[-2000:]
        assert out.returncode == 0, report
        assert "Tested: 20" in out.stdout, report
        assert "Traceback" not in srv.log_text()
        # still alive and answering after the fuzzing
        assert httpx.get(f"{srv.rest_url}/api/cluster", auth=auth).status_code == 200
    finally:
        srv.stop()
