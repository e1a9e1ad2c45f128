"""Fault injection for the integration tests: PostgreSQL and a BigQuery emulator of the test's
own, started and stopped through ``tests/stack/local_stack.py`` (on other ports, in another
state directory: the shared stack the other tests use stays up), and a streaming run of the
pipeline in a process of its own that the test can watch while a service is down."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tests.support.gcp_stack import unavailable

__all__ = ["DedicatedServices", "check_credentials", "free_port", "streaming_process"]

ROOT = Path(__file__).resolve().parents[2]


def check_credentials() -> None:
    """What the dedicated services need of the shared stack: its fake credentials (the token
    server behind them). Skips (fails with ``CI=true``) without them."""
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        if not os.environ.get(name):
            unavailable(f"{name} not set")
    if os.environ.get("NO_GCE_CHECK") != "true":
        unavailable("NO_GCE_CHECK=true is not set (clients would probe the metadata server)")
    if not Path(os.environ["GOOGLE_APPLICATION_CREDENTIALS"]).exists():
        unavailable("the fake service-account key is missing")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DedicatedServices(NamedTuple):
    """PostgreSQL and the BigQuery emulator in ``state`` on ports of their own."""

    state: Path
    postgres_port: int
    bigquery_port: int
    bigquery_grpc_port: int

    @classmethod
    def allocate(cls, state: Path) -> DedicatedServices:
        return cls(state, free_port(), free_port(), free_port())

    def _env(self) -> dict[str, str]:
        shared = Path(os.environ.get("LOCAL_STACK_DIR", ROOT / ".local" / "stack"))
        venv = Path(os.environ.get("BQEMULATOR_VENV", shared / "bqv"))
        if not (venv / ".installed").exists():
            unavailable(f"no bqemulator venv at {venv} (the shared stack creates it)")
        return {
            **os.environ,
            "LOCAL_STACK_DIR": str(self.state),
            "BQEMULATOR_VENV": str(venv),
            "STACK_POSTGRES_PORT": str(self.postgres_port),
            "STACK_BIGQUERY_PORT": str(self.bigquery_port),
            "STACK_BIGQUERY_GRPC_PORT": str(self.bigquery_grpc_port),
        }

    def _stack(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "tests.stack.local_stack", *args],
            cwd=ROOT,
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=180,
        )

    def up(self, *names: str, keep_data: bool = False) -> None:
        self._stack("up", *names, *(["--keep-data"] if keep_data else []))

    def down(self, *names: str) -> None:
        self._stack("down", *names)

    def remove_postgres_data(self) -> None:
        """Deletes the stopped cluster's directory (local_stack keeps it in the system temp
        directory, named after the state directory, where pytest does not clean up)."""
        digest = hashlib.sha256(str(self.state.resolve()).encode("utf-8")).hexdigest()[:12]
        shutil.rmtree(Path(tempfile.gettempdir()) / f"genai-local-stack-pg-{digest}", True)

    @property
    def postgres_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.postgres_port}/genai_audit"

    @property
    def client_env(self) -> dict[str, str]:
        """What a pipeline needs to use these services (the rest of the stack is shared)."""
        return {
            "BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{self.bigquery_port}",
            "BIGQUERY_EMULATOR_GRPC_HOST": f"127.0.0.1:{self.bigquery_grpc_port}",
            "GENAI_AUDIT_DB_URL": self.postgres_url,
        }


@contextlib.contextmanager
def streaming_process(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen]:
    """``python -m pipelines.streaming`` with ``args`` in a process of its own (its output in
    ``log``); killed if it is still running when the block ends."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.streaming", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
