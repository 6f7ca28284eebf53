"""TLS with the self-signed certificate, and the slow-down of failed logins per address."""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import httpx
from cryptography import x509

from tests.rest.test_api_basics import client
from tests.serverproc import ADMIN_PASSWORD, ServerProcess, start_server


def test_self_signed_tls_made_once_and_reused(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "srv", tls=True)
    try:
        assert srv.rest_url and srv.rest_url.startswith("https://127.0.0.1:")
        state = tmp_path / "srv" / "state"
        cert_path, key_path = state / "tls.crt", state / "tls.key"
        assert os.stat(key_path).st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        ips = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
        assert {"127.0.0.1", "::1"} <= ips
        ctx = ssl.create_default_context(cafile=str(cert_path))
        r = httpx.get(f"{srv.rest_url}/api/cluster", auth=("admin", ADMIN_PASSWORD), verify=ctx)
        assert r.status_code == 200 and r.json()["version"]["major"] == 19
        with httpx.Client(verify=True) as strict:  # not trusted by the system store
            try:
                strict.get(f"{srv.rest_url}/api/cluster")
                raise AssertionError("a self-signed certificate was trusted")
            except httpx.ConnectError:
                pass
        first = cert_path.read_bytes()
    finally:
        srv.stop()
    again = start_server(tmp_path / "srv", tls=True)
    try:
        assert cert_path.read_bytes() == first  # reused, not made anew
        ctx = ssl.create_default_context(cafile=str(cert_path))
        r = httpx.get(f"{again.rest_url}/api/cluster", auth=("admin", ADMIN_PASSWORD), verify=ctx)
        assert r.status_code == 200
    finally:
        again.stop()


def test_failed_logins_are_slowed_per_address(shared_server: ServerProcess) -> None:
    url = shared_server.rest_url
    bad = httpx.Client(
        base_url=url,
        auth=("admin", "wrong"),
        transport=httpx.HTTPTransport(local_address="127.0.0.42"),
    )
    times = []
    for _ in range(6):
        start = time.monotonic()
        assert bad.get("/api/cluster").status_code == 401
        times.append(time.monotonic() - start)
    assert max(times[:3]) < 0.2  # a few mistakes cost nothing
    assert times[3] >= 0.2 and times[5] >= 0.9  # then 0.25 s, 0.5 s, 1 s...
    # another address is not affected
    with client(shared_server) as good:
        start = time.monotonic()
        assert good.get("/api/cluster").status_code == 200
        assert time.monotonic() - start < 0.2
    # a success from the slowed address resets it
    ok = httpx.Client(
        base_url=url,
        auth=("admin", ADMIN_PASSWORD),
        transport=httpx.HTTPTransport(local_address="127.0.0.42"),
    )
    assert ok.get("/api/cluster").status_code == 200
    start = time.monotonic()
    assert bad.get("/api/cluster").status_code == 401
    assert time.monotonic() - start < 0.2
    bad.close()
    ok.close()
