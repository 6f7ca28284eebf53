"""The REST server's certificate: the configured one, or a self-signed one made at first start.

The self-signed pair lives in the state directory (`tls.crt`, `tls.key` mode 0600) and is reused
afterwards, so clients that pinned it keep working across restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from ndmpd.catalog.config import Config

CERT_NAME = "tls.crt"
KEY_NAME = "tls.key"
VALID_DAYS = 3650


def certificate_paths(config: Config) -> tuple[Path, Path]:
    """(certificate, key) to serve: the configured files, else the self-signed pair."""
    if config.rest.cert and config.rest.key:
        return Path(config.rest.cert), Path(config.rest.key)
    cert = config.state_dir / CERT_NAME
    key = config.state_dir / KEY_NAME
    if not (cert.exists() and key.exists()):
        make_self_signed(cert, key, config.node.name)
    return cert, key


def make_self_signed(cert_path: Path, key_path: Path, common_name: str) -> None:
    """A P-256 key and a self-signed certificate for the node name, localhost and this host."""
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    dns = ["localhost"]
    for name in (common_name, host):
        if name and name not in dns and _dns_ok(name):
            dns.append(name)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "ndmpd")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key_path, key_bytes, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _dns_ok(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return False
    except ValueError:
        pass
    return all(c.isalnum() or c in "-." for c in name) and len(name) <= 253


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically, created with `mode` from the start (a key is never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
