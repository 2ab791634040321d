"""TLS for the REST listener from TF Serving's ``--ssl_config_file`` (the same SSLConfig gRPC uses).

SSLConfig holds PEM text, not file names: ``server_key`` and ``server_cert``,
``custom_ca`` (the CAs client certificates must chain to) and
``client_verify`` (require one: mutual TLS). gRPC takes the PEM as it is
(``api.grpc_server.server_credentials``); Python's ``ssl`` loads a key pair
only from files, so it is written for that moment into a private temporary
folder and removed at once.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Any

from ..errors import InvalidArgument
from ..protos import pb
from ..protos.text import read_text_proto


def read_ssl_config(path: str) -> Any:
    """The SSLConfig message of ``--ssl_config_file``."""
    return read_text_proto(path, pb.SSLConfig())


def describe(config: Any) -> str:
    """'mutual TLS' or 'TLS', for the start-up log."""
    return "mutual TLS" if config.client_verify else "TLS"


def server_context(config: Any) -> ssl.SSLContext:
    """A server SSLContext: TLS 1.2 or later, HTTP/1.1 by ALPN, and client certificates as gRPC asks
    them: required and verified with ``client_verify``, verified when sent if only ``custom_ca`` is set."""
    if not config.server_key or not config.server_cert:
        raise InvalidArgument("--ssl_config_file: server_key and server_cert are both needed")
    if config.client_verify and not config.custom_ca:
        raise InvalidArgument("--ssl_config_file: client_verify needs custom_ca (the CAs of client certificates)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory(prefix="modelserve-tls-") as folder:  # mode 0700
        cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        for path, text in ((cert, config.server_cert), (key, config.server_key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as stream:
                stream.write(text)
        try:
            context.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise InvalidArgument(f"--ssl_config_file: server_key and server_cert do not load: {exc}") from None
    if config.custom_ca:
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except ssl.SSLError as exc:
            raise InvalidArgument(f"--ssl_config_file: custom_ca does not load: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED if config.client_verify else ssl.CERT_OPTIONAL
    return context
