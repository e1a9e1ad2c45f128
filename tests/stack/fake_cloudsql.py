"""A stand-in for Cloud SQL in front of the local PostgreSQL, for the connector seam's tests.

The Cloud SQL Python Connector talks to two things: the Cloud SQL Admin API (instance metadata
and the server CA; an ephemeral client certificate signed for its public key, with the OAuth
token bound in for IAM database authentication) and the instance's server-side proxy on port
3307 (TLS 1.3, client certificate required). ``FakeCloudSql`` serves both, in threads of the
test process: an HTTP server for the two Admin API calls, and a TLS listener on
``<loopback address>:3307`` that checks the client certificate against its CA and forwards the
bytes to PostgreSQL. Only the test's own connector is pointed at it (``sqladmin_api_endpoint``).

It records what the connector asked for (``ephemeral_requests``: whether an access token came
with the key, i.e. IAM authentication), so a test can tell the connector path really ran.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import re
import socket
import ssl
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = ["FakeCloudSql"]

PROXY_PORT = 3307  # the connector always dials the instance's server-side proxy on 3307
_SETTINGS = re.compile(r"/sql/v1beta4/projects/([^/]+)/instances/([^/:]+)/connectSettings")
_EPHEMERAL = re.compile(r"/sql/v1beta4/projects/([^/]+)/instances/([^/:]+):generateEphemeralCert")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, public_key, issuer, signing_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signing_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


class FakeCloudSql:
    """One fake instance ``project:region:instance`` whose proxy forwards to ``postgres``
    (``(host, port)``). Use as a context manager; ``admin_endpoint`` is the Admin API base URL."""

    def __init__(self, project: str, region: str, instance: str, postgres: tuple[str, int]):
        self.connection_name = f"{project}:{region}:{instance}"
        self._project, self._region, self._instance = project, region, instance
        self._postgres = postgres
        self.ephemeral_requests: list[dict] = []
        self.proxied_connections = 0
        self._ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._ca = _certificate(
            _name("fake-cloudsql-ca"),
            self._ca_key.public_key(),
            _name("fake-cloudsql-ca"),
            self._ca_key,
            ca=True,
        )
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        server = _certificate(
            _name(self.connection_name),
            server_key.public_key(),
            self._ca.subject,
            self._ca_key,
            ca=False,
        )
        self._files = tempfile.TemporaryDirectory()
        folder = Path(self._files.name)
        (folder / "server.pem").write_text(_pem(server))
        (folder / "server.key").write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / "ca.pem").write_text(_pem(self._ca))
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_3
        self._tls.verify_mode = ssl.CERT_REQUIRED  # the connector's ephemeral certificate
        self._tls.load_cert_chain(folder / "server.pem", folder / "server.key")
        self._tls.load_verify_locations(folder / "ca.pem")
        self._listener = self._bind_proxy()
        self.proxy_address = self._listener.getsockname()[0]
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.admin_endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._stopping = threading.Event()

    @staticmethod
    def _bind_proxy() -> socket.socket:
        # A loopback address of its own, so port 3307 is free whatever else runs here.
        rng = random.Random()
        for _ in range(50):
            address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                listener.bind((address, PROXY_PORT))
            except OSError:
                listener.close()
                continue
            listener.listen(16)
            listener.settimeout(0.2)
            return listener
        raise RuntimeError("no free loopback address for the fake Cloud SQL proxy")

    # --- the Admin API -------------------------------------------------------------------

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _known(self, match) -> bool:
                return bool(match) and match.groups() == (fake._project, fake._instance)

            def do_GET(self) -> None:
                if not self._known(_SETTINGS.fullmatch(self.path)):
                    return self._json(404, {"error": {"message": "instance not found"}})
                self._json(
                    200,
                    {
                        "kind": "sql#connectSettings",
                        "region": fake._region,
                        "databaseVersion": "POSTGRES_15",
                        "backendType": "SECOND_GEN",
                        "ipAddresses": [{"type": "PRIVATE", "ipAddress": fake.proxy_address}],
                        "serverCaCert": {"cert": _pem(fake._ca)},
                    },
                )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._known(_EPHEMERAL.fullmatch(self.path)):
                    return self._json(404, {"error": {"message": "instance not found"}})
                fake.ephemeral_requests.append(
                    {
                        "access_token": bool(body.get("access_token")),
                        "authorization": self.headers.get("Authorization", "").startswith(
                            "Bearer "
                        ),
                    }
                )
                client_key = serialization.load_pem_public_key(body["public_key"].encode())
                cert = _certificate(
                    _name("ephemeral"), client_key, fake._ca.subject, fake._ca_key, ca=False
                )
                self._json(200, {"ephemeralCert": {"cert": _pem(cert)}})

            def log_message(self, *args) -> None:
                return

        return Handler

    # --- the server-side proxy -----------------------------------------------------------

    def _serve_proxy(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._forward, args=(raw,), daemon=True).start()

    def _forward(self, raw: socket.socket) -> None:
        try:
            client = self._tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.proxied_connections += 1
        upstream = socket.create_connection(self._postgres)

        def pump(source, target) -> None:
            try:
                while data := source.recv(65536):
                    target.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (source, target):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)
        client.close()
        upstream.close()

    def __enter__(self) -> FakeCloudSql:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        threading.Thread(target=self._serve_proxy, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        self._listener.close()
        self._files.cleanup()
