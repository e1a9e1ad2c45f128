"""A fake OAuth token endpoint and a service-account key that points at it (local stack only).

Beam's Cloud Storage and BigQuery clients look for Application Default Credentials and want
credentials that can refresh. With no credentials at all Beam retries ``google.auth.default()``
with backoff (about 23 s per client), and an ``authorized_user`` file always refreshes against
oauth2.googleapis.com. A ``service_account`` key whose ``token_uri`` is this loopback server
refreshes locally, needs only environment variables, and so also works in worker subprocesses.

    python tests/stack/fake_token_server.py --port 9099 --adc .local/stack/fake_adc.json

writes the key file (a fresh throwaway RSA key, never a real one) and serves
``{"access_token": "local-token", "expires_in": 3600}`` for every POST. GET answers ``ok``
(readiness probe). The emulators ignore the token.
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PROJECT = "local-project"
TOKEN = {"access_token": "local-token", "token_type": "Bearer", "expires_in": 3600}


def write_fake_adc(path: str, token_uri: str, project: str = PROJECT) -> None:
    """Writes a service-account key file with a throwaway RSA key and ``token_uri``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    document = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "local-stack-key",
        "private_key": pem,
        "client_email": f"local-pipeline@{project}.iam.gserviceaccount.com",
        "client_id": "100000000000000000000",
        "token_uri": token_uri,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(document, handle)
    os.replace(temporary, path)


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)  # the signed assertion; nothing to check
        self._answer(json.dumps(TOKEN).encode(), "application/json")

    def do_GET(self) -> None:
        self._answer(b"ok", "text/plain")

    def log_message(self, *args) -> None:  # no per-request logging
        return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--adc", required=True, help="where to write the key file")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), _Handler)
    write_fake_adc(args.adc, f"http://{args.host}:{args.port}/token")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
