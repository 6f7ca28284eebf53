"""Ansible's `netapp.ontap.na_ontap_ndmp` module, run by the real `ansible-playbook`, manages
the NDMP settings of an SVM of ndmpd as it would on ONTAP, and is idempotent.

The module always speaks HTTPS (its REST URL is `https://host:port/api/`), so the server runs
with TLS and its self-signed certificate; `validate_certs` stays on, with requests told to trust
exactly that certificate. Everything is local: connection local, no galaxy, no facts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ndmpd.rest.client import Endpoint, RestClient
from tests.serverproc import ADMIN_PASSWORD, ServerProcess, start_server

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

PLAY = """\
- hosts: localhost
  gather_facts: false
  connection: local
  vars:
    login: &login
      hostname: 127.0.0.1
      http_port: {port}
      username: admin
      password: "{{{{ lookup('env', 'NDMPD_TEST_REST_PASSWORD') }}}}"
      https: true
      validate_certs: true
      use_rest: always
  tasks:
    - name: NDMP settings of svm1
      netapp.ontap.na_ontap_ndmp:
        <<: *login
        vserver: svm1
        enable: {enable}
        authtype: {authtype}
    - name: generate the NDMP password of admin
      netapp.ontap.na_ontap_ndmp:
        <<: *login
        vserver: svm1
        ndmp_user: admin
      register: generated
    - name: keep it for the test
      ansible.builtin.copy:
        content: "{{{{ generated.password }}}}"
        dest: "{out}"
"""


def _ansible_env(home: Path, cert: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(home / "tmp"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_GALAXY_SERVER_LIST": "",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "NDMPD_TEST_REST_PASSWORD": ADMIN_PASSWORD,
            # requests (in the module) trusts exactly the server's certificate.
            "REQUESTS_CA_BUNDLE": str(cert),
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(var, None)
    return env


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path / "srv", tls=True, log_level="INFO")
    try:
        yield srv
    finally:
        srv.stop()


def play(server: ServerProcess, tmp_path: Path, *, enable: bool, authtype: list[str]) -> str:
    if not ANSIBLE_PLAYBOOK.exists():
        pytest.fail(f"{ANSIBLE_PLAYBOOK} is missing: the test extras install ansible")
    assert server.rest_url
    port = int(server.rest_url.rsplit(":", 1)[1])
    out = tmp_path / "generated.txt"
    book = tmp_path / "play.yml"
    book.write_text(
        PLAY.format(port=port, enable=str(enable).lower(), authtype=json.dumps(authtype), out=out)
    )
    home = tmp_path / "ansible-home"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    cert = server.base / "state" / "tls.crt"
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(book)],
        capture_output=True,
        text=True,
        env=_ansible_env(home, cert),
        cwd=tmp_path,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


def recap(output: str) -> dict[str, int]:
    m = re.search(r"localhost\s*:\s*(ok=\d+.*)", output)
    assert m, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


def test_na_ontap_ndmp_changes_svm_settings_then_reports_no_change(
    tls_server: ServerProcess, tmp_path: Path
) -> None:
    first = play(tls_server, tmp_path, enable=False, authtype=["challenge", "plaintext"])
    counts = recap(first)
    assert counts["failed"] == 0 and counts["changed"] >= 1, first
    assert re.search(r"changed: \[localhost\]", first.split("generate the NDMP")[0]), first

    endpoint = Endpoint(str(tls_server.rest_url), tls_server.base / "state" / "tls.crt")
    with RestClient(endpoint, "admin", ADMIN_PASSWORD) as client:
        svm = client.collection("/api/protocols/ndmp/svms", {"fields": "*", "svm.name": "svm1"})
    assert sorted(svm[0]["authentication_types"]) == ["challenge", "plaintext"]
    assert svm[0]["enabled"] is False
    # The password the module generated is the NDMP password of admin on svm1.
    assert (tmp_path / "generated.txt").read_text() == tls_server.ndmp_password()

    second = play(tls_server, tmp_path, enable=False, authtype=["plaintext", "challenge"])
    again = recap(second)
    # Only the file task could change, and it writes the same content: nothing changed.
    assert again["changed"] == 0 and again["failed"] == 0, second

    # And back: a change again, seen by the REST API.
    third = play(tls_server, tmp_path, enable=True, authtype=["challenge"])
    assert recap(third)["changed"] == 1, third
    with RestClient(endpoint, "admin", ADMIN_PASSWORD) as client:
        svm = client.collection("/api/protocols/ndmp/svms", {"fields": "*", "svm.name": "svm1"})
    assert svm[0]["authentication_types"] == ["challenge"]
    assert svm[0]["enabled"] is True
