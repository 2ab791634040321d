"""Certificates made in code for the TLS tests: a CA, a server certificate for ``localhost``, a client one."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any


def certificate(name: str, issuer: tuple[Any, Any] | None = None, ca: bool = False) -> tuple[bytes, bytes, Any, Any]:
    """(certificate PEM, key PEM, subject, key); self-signed unless ``issuer`` is (subject, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = (issuer[0], issuer[1]) if issuer else (subject, key)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, subject, key


def make_pki() -> dict[str, bytes]:
    """PEM bytes: ``ca``, ``server_cert``/``server_key`` (for localhost), ``client_cert``/``client_key``."""
    ca_cert, _, ca_subject, ca_key = certificate("modelserve test CA", ca=True)
    server_cert, server_key, _, _ = certificate("localhost", (ca_subject, ca_key))
    client_cert, client_key, _, _ = certificate("client", (ca_subject, ca_key))
    return {
        "ca": ca_cert,
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
    }


def ssl_config(tmp_path: Path, pki: dict[str, bytes], client_verify: bool) -> Path:
    """An SSLConfig text file (TF Serving's --ssl_config_file) holding the server's PEM and the CA."""

    def quoted(pem: bytes) -> str:
        return '"' + pem.decode().replace("\n", "\\n") + '"'

    path = tmp_path / "ssl.config"
    path.write_text(
        f"server_key: {quoted(pki['server_key'])}\nserver_cert: {quoted(pki['server_cert'])}\n"
        f"custom_ca: {quoted(pki['ca'])}\nclient_verify: {'true' if client_verify else 'false'}\n"
    )
    return path


def write_pem_files(folder: Path, pki: dict[str, bytes]) -> dict[str, Path]:
    """Each PEM of ``pki`` as a file (what curl and ssl want); returns name -> path."""
    paths = {}
    for name, pem in pki.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(pem)
    return paths
