"""PyPI's vulnerability API on loopback, for running the real pip-audit against it.

pip-audit asks https://pypi.org/pypi/NAME/VERSION/json (the address is fixed in its code).
This stand-in is an HTTPS proxy on 127.0.0.1 that answers every CONNECT itself: it ends the
TLS with a certificate for pypi.org signed by a throwaway CA, and answers the JSON API's
requests. pip-audit reaches it with HTTPS_PROXY and trusts the CA with REQUESTS_CA_BUNDLE
(:meth:`PyPIStandin.env`), so its network code runs unchanged: requests, TLS, HTTP.

``answers=None`` plays the machines this project runs on: every package answers 404, which
pip-audit reads as "not found on PyPI". A dict plays a reachable PyPI: 200 for every
package, with the vulnerabilities listed for ``answers[name]`` (PyPI's JSON shape).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST = "pypi.org"
JSON_PATH = re.compile(r"^/pypi/(?P<name>[^/]+)/(?P<version>[^/]+)/json$")


class PyPIStandin:
    """Use as a context manager; ``asked`` lists the (name, version) pairs requested."""

    def __init__(self, folder: Path, answers: dict[str, list[dict[str, Any]]] | None) -> None:
        self.ca = folder / "standin-ca.pem"
        context = _tls_context(folder, self.ca)
        self._server = _Proxy(context, answers)
        self.asked = self._server.asked

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What pip-audit's process needs to go through the stand-in."""
        return {"HTTPS_PROXY": self.url, "REQUESTS_CA_BUNDLE": str(self.ca), "NO_PROXY": ""}

    def __enter__(self) -> PyPIStandin:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, context: ssl.SSLContext, answers: dict[str, list[dict[str, Any]]] | None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.context = context
        self.answers = answers
        self.asked: list[tuple[str, str]] = []


class _Tunnel(socketserver.BaseRequestHandler):
    """A CONNECT to pypi.org:443, ended here: TLS, then the JSON API on that connection."""

    server: _Proxy

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        if not head.startswith(f"CONNECT {HOST}:443 ".encode()):
            self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold each answer back 40 ms (12 s for the whole lock).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.context.wrap_socket(self.request, server_side=True) as tls:
            _JsonApi(tls, self.client_address, self.server)


class _JsonApi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PyPI: one tunnel for every package
    server: _Proxy

    def do_GET(self) -> None:
        match = JSON_PATH.match(self.path)
        answers = self.server.answers
        if match is None or answers is None:
            self._send(404, {"message": "Not Found"})
            return
        name, version = match["name"], match["version"]
        self.server.asked.append((name, version))
        self._send(
            200,
            {"info": {"name": name, "version": version}, "vulnerabilities": answers.get(name, [])},
        )

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _tls_context(folder: Path, ca_file: Path) -> ssl.SSLContext:
    """A server context with a pypi.org certificate from a new CA, written to ``ca_file``."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pip-audit test CA")])
    now = dt.datetime.now(dt.UTC)
    # The extensions Python 3.13's strict verification (VERIFY_X509_STRICT) requires.
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    leaf = (
        _builder(leaf_name, ca_name, key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file.write_bytes(ca.public_bytes(pem))
    chain, key_file = folder / "standin-pypi.pem", folder / "standin-pypi.key"
    chain.write_bytes(leaf.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key_file)
    return context


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
