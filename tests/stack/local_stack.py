"""Local stand-ins for the Google Cloud stack, on loopback only: start, stop, status.

    python -m tests.stack.local_stack up [SERVICE ...]    # start what is not up, print exports
    python -m tests.stack.local_stack down [SERVICE ...]  # stop exactly what `up` started
    python -m tests.stack.local_stack status [--quiet]    # exit 0 when every service answers
    python -m tests.stack.local_stack env                 # print the export lines again

Services (``SERVICES``), each one process group whose leader's pid is recorded in
``<state>/pids/<name>.pid``:

* ``token``: a fake OAuth token server plus a fake service-account key (``fake_adc.json``) so
  Beam's GCS and BigQuery clients get refreshable credentials without any network;
* ``pubsub``: the Pub/Sub emulator jar from the gcloud SDK, started directly with java (one pid);
* ``storage``: ``gcp-storage-emulator`` from the project venv, storing objects on disk so that
  bqemulator load jobs can read gs:// URIs;
* ``bigquery``: ``bqemulator`` in its own venv (it pins duckdb 1.5.5; the project has duckdb 2),
  created on first use under ``<state>/bqv`` with the duckdb extensions installed from PyPI
  wheels; persistent, so a stopped and restarted emulator keeps its tables;
* ``postgres``: a throw-away PostgreSQL 15 cluster run as the ``postgres`` user (PostgreSQL
  refuses to run as root), trust auth on 127.0.0.1 only.

``up`` is safe to run twice: a service whose recorded process is alive is left alone. A fresh
start of ``storage``, ``bigquery`` or ``postgres`` wipes its data (the stack is for tests and
demos). ``down`` signals only the recorded process groups (the Pub/Sub jar has no wrapper
process; the others have no children, but signalling the group also covers any), then removes
the pid files. The state directory is ``.local/stack`` (``LOCAL_STACK_DIR`` overrides it); ports
come from ``STACK_*_PORT`` variables, see ``_port``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
STATE = Path(os.environ.get("LOCAL_STACK_DIR", ROOT / ".local" / "stack")).resolve()
PROJECT = "local-project"
HOST = "127.0.0.1"
AUDIT_DATABASE = "genai_audit"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PUBSUB_JAR_GLOB = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
)
# bqemulator and what it was verified with (../shared/local-stack.md); its own venv.
BQ_REQUIREMENTS = (
    "bqemulator==1.4.0",
    "duckdb==1.5.5",
    "duckdb-extension-spatial==1.5.5",
    "duckdb-extension-avro==1.5.5",
    "sqlglot==30.11.0",
    "google-cloud-bigquery==3.47.0",
    "google-cloud-bigquery-storage==2.43.0",
    "numpy",
)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"STACK_{name}_PORT", default))


PORTS = {
    "token": _port("TOKEN", 9099),
    "pubsub": _port("PUBSUB", 8085),
    "storage": _port("STORAGE", 9023),
    "bigquery": _port("BIGQUERY", 9050),
    "bigquery_grpc": _port("BIGQUERY_GRPC", 9060),
    "postgres": _port("POSTGRES", 5433),
}


def _log(message: str) -> None:
    print(f"local_stack: {message}", file=sys.stderr, flush=True)


# --- environment ---------------------------------------------------------------------------


def audit_db_url() -> str:
    return f"postgresql://postgres@{HOST}:{PORTS['postgres']}/{AUDIT_DATABASE}"


def stack_env() -> dict[str, str]:
    """The variables a client (pipeline, tests) needs to use the stack."""
    return {
        "LOCAL_STACK_DIR": str(STATE),
        "PUBSUB_EMULATOR_HOST": f"{HOST}:{PORTS['pubsub']}",
        "STORAGE_EMULATOR_HOST": f"http://{HOST}:{PORTS['storage']}",
        "BIGQUERY_EMULATOR_HOST": f"http://{HOST}:{PORTS['bigquery']}",
        "BIGQUERY_EMULATOR_GRPC_HOST": f"{HOST}:{PORTS['bigquery_grpc']}",
        "GOOGLE_APPLICATION_CREDENTIALS": str(STATE / "fake_adc.json"),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "NO_GCE_CHECK": "true",
        "GENAI_AUDIT_DB_URL": audit_db_url(),
    }


def export_lines() -> str:
    return "\n".join(f"export {k}={v}" for k, v in stack_env().items())


# --- processes -----------------------------------------------------------------------------


def _pid_file(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def recorded_pid(service: Service) -> int | None:
    """The recorded pid of ``service`` if that process is alive and still ours."""
    try:
        pid = int(_pid_file(service.name).read_text().strip())
    except (OSError, ValueError):
        return None
    if _alive(pid) and service.marker in _cmdline(pid):
        return pid
    return None


def _record(name: str, pid: int) -> None:
    _pid_file(name).parent.mkdir(parents=True, exist_ok=True)
    _pid_file(name).write_text(f"{pid}\n")


def _spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=STATE,
        start_new_session=True,  # its own process group, so `down` can signal exactly it
    )
    log.close()
    _record(name, process.pid)
    return process.pid


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _http_ok(url: str, data: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, data=data, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _terminate(pid: int) -> None:
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        _signal_group(pid, signal.SIGKILL)


# --- services ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    name: str
    marker: str  # a string in the process command line, to recognise our process
    ports: tuple[int, ...]
    start: Callable[[bool], int]  # keep_data: reuse the data of an earlier start
    ready: Callable[[], bool]
    stop: Callable[[int], None] = _terminate


def _start_token(keep_data: bool) -> int:
    return _spawn(
        "token",
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "fake_token_server.py"),
            "--host",
            HOST,
            "--port",
            str(PORTS["token"]),
            "--adc",
            str(STATE / "fake_adc.json"),
        ],
    )


def _token_ready() -> bool:
    return (STATE / "fake_adc.json").exists() and _http_ok(
        f"http://{HOST}:{PORTS['token']}/token", data=b"x"
    )


def _pubsub_jar() -> str:
    jars = sorted(glob.glob(PUBSUB_JAR_GLOB))
    if not jars:
        raise SystemExit(f"no Pub/Sub emulator jar matches {PUBSUB_JAR_GLOB} (gcloud SDK)")
    return jars[-1]


def _start_pubsub(keep_data: bool) -> int:
    (STATE / "pubsub.log").unlink(missing_ok=True)
    return _spawn(
        "pubsub",
        ["java", "-jar", _pubsub_jar(), f"--host={HOST}", f"--port={PORTS['pubsub']}"],
    )


def _pubsub_ready() -> bool:
    log = STATE / "pubsub.log"
    return log.exists() and "Server started" in log.read_text(errors="replace")


def _start_storage(keep_data: bool) -> int:
    data = STATE / "gcsdata"
    if not (keep_data and data.exists()):
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
    emulator = Path(sys.executable).parent / "gcp-storage-emulator"
    if not emulator.exists():
        raise SystemExit(f"{emulator} is missing: run `make venv` (dev extras)")
    return _spawn(
        "storage",
        [
            str(emulator),
            "-d",
            str(data),
            "start",
            "--host",
            HOST,
            "--port",
            str(PORTS["storage"]),
            "-q",
        ],
    )


def _storage_ready() -> bool:
    return _http_ok(f"http://{HOST}:{PORTS['storage']}/storage/v1/b?project={PROJECT}")


def _bq_venv() -> Path:
    return Path(os.environ.get("BQEMULATOR_VENV", STATE / "bqv"))


def _ensure_bq_venv() -> Path:
    """Creates bqemulator's own venv once (about 30 s with a warm pip cache)."""
    venv = _bq_venv()
    stamp = venv / ".installed"
    wanted = "\n".join(BQ_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    _log(f"creating the bqemulator venv in {venv} (first use)")
    python = shutil.which("python3.11") or "python3"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *BQ_REQUIREMENTS], check=True)
    # Install the bundled extensions, or duckdb tries to download them at first use.
    subprocess.run([str(venv / "bin" / "python"), "-c", _INSTALL_EXTENSIONS], check=True)
    stamp.write_text(wanted)
    return venv


_INSTALL_EXTENSIONS = """
import duckdb, glob, importlib, os
for name in ("spatial", "avro"):
    module = importlib.import_module("duckdb_extension_" + name)
    root = os.path.dirname(module.__file__)
    (path,) = glob.glob(os.path.join(root, "extensions", "*", name + ".duckdb_extension"))
    duckdb.connect().execute(f"INSTALL '{path}'")
"""


def _start_bigquery(keep_data: bool) -> int:
    venv = _ensure_bq_venv()
    data = STATE / "bqdata"
    if not (keep_data and data.exists()):
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
    return _spawn(
        "bigquery",
        [
            str(venv / "bin" / "bqemulator"),
            "start",
            "--project",
            PROJECT,
            "--rest-host",
            HOST,
            "--rest-port",
            str(PORTS["bigquery"]),
            "--grpc-host",
            HOST,
            "--grpc-port",
            str(PORTS["bigquery_grpc"]),
            "--persistent",
            "--data-dir",
            str(data),
            "--log-level",
            "warning",
            "--log-format",
            "console",
        ],
        env={"BQEMU_GCS_LOCAL_ROOT": str(STATE / "gcsdata" / ".cloudstorage")},
    )


def _bigquery_ready() -> bool:
    return _http_ok(f"http://{HOST}:{PORTS['bigquery']}/bigquery/v2/projects/{PROJECT}/datasets")


def _pg(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *argv],
        check=check,
        capture_output=True,
        text=True,
        cwd="/",
    )


def _ensure_postgres_user() -> None:
    if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "postgres",
            ],
            check=True,
        )


def _pg_base() -> Path:
    """The cluster's directory. PostgreSQL runs as the postgres user, which cannot enter a
    checkout under a root-only directory (a CI workspace, ``mktemp -d``), so the cluster lives in
    the system temp directory, one per state directory."""
    digest = hashlib.sha256(str(STATE).encode("utf-8")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"genai-local-stack-pg-{digest}"


def _start_postgres(keep_data: bool) -> int:
    _ensure_postgres_user()
    base = _pg_base()
    data = base / "data"
    fresh = not (keep_data and (data / "PG_VERSION").exists())
    if fresh:
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        shutil.chown(base, "postgres", "postgres")
        _pg(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
    server_options = (
        f"-p {PORTS['postgres']} -c listen_addresses={HOST} -k {base} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    _pg(
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(base / "server.log"),
        "-w",
        "-t",
        "30",
        "-o",
        server_options,
        "start",
    )
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    _record("postgres", pid)
    if not fresh:
        return pid
    _pg(
        str(PG_BIN / "createdb"),
        "-h",
        HOST,
        "-p",
        str(PORTS["postgres"]),
        "-U",
        "postgres",
        AUDIT_DATABASE,
    )
    return pid


def _postgres_ready() -> bool:
    return (
        _pg(
            str(PG_BIN / "pg_isready"),
            "-h",
            HOST,
            "-p",
            str(PORTS["postgres"]),
            "-d",
            AUDIT_DATABASE,
            check=False,
        ).returncode
        == 0
    )


def _stop_postgres(pid: int) -> None:
    data = _pg_base() / "data"
    stopped = _pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", check=False)
    if stopped.returncode != 0 or _alive(pid):
        _terminate(pid)


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("token", "fake_token_server.py", (PORTS["token"],), _start_token, _token_ready),
        Service(
            "pubsub", "cloud-pubsub-emulator", (PORTS["pubsub"],), _start_pubsub, _pubsub_ready
        ),
        Service(
            "storage",
            "gcp-storage-emulator",
            (PORTS["storage"],),
            _start_storage,
            _storage_ready,
        ),
        Service(
            "bigquery",
            "bqemulator",
            (PORTS["bigquery"], PORTS["bigquery_grpc"]),
            _start_bigquery,
            _bigquery_ready,
        ),
        Service(
            "postgres",
            "postgres",
            (PORTS["postgres"],),
            _start_postgres,
            _postgres_ready,
            _stop_postgres,
        ),
    )
}


# --- commands ------------------------------------------------------------------------------


def _wait_ready(service: Service, pid: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.ready():
            return
        if not _alive(pid):
            raise SystemExit(
                f"{service.name} exited during start-up; see {STATE / (service.name + '.log')}"
            )
        time.sleep(0.1)
    raise SystemExit(f"{service.name} did not answer within {READY_TIMEOUT_S:.0f} s")


def up(names: list[str], keep_data: bool = False) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    for name in names:
        service = SERVICES[name]
        pid = recorded_pid(service)
        if pid is not None:
            _wait_ready(service, pid)
            _log(f"{name} already running (pid {pid})")
            continue
        busy = [p for p in service.ports if _port_open(p)]
        if busy:
            raise SystemExit(
                f"{name}: port {busy[0]} on {HOST} is taken by another process; set "
                f"STACK_{name.upper()}_PORT (see tests/stack/local_stack.py)"
            )
        started = time.monotonic()
        pid = service.start(keep_data)
        _wait_ready(service, pid)
        _log(f"{name} up (pid {pid}) in {time.monotonic() - started:.1f} s")
    (STATE / "env.sh").write_text(export_lines() + "\n")
    (STATE / "env.json").write_text(json.dumps(stack_env(), indent=1) + "\n")


def down(names: list[str]) -> None:
    for name in reversed(names):
        service = SERVICES[name]
        pid = recorded_pid(service)
        if pid is None:
            _pid_file(name).unlink(missing_ok=True)
            continue
        service.stop(pid)
        _pid_file(name).unlink(missing_ok=True)
        _log(f"{name} stopped (pid {pid})")


def status(names: list[str], quiet: bool) -> bool:
    healthy = True
    for name in names:
        service = SERVICES[name]
        pid = recorded_pid(service)
        answering = pid is not None and service.ready()
        healthy &= answering
        if not quiet:
            state = f"up (pid {pid})" if answering else ("not answering" if pid else "down")
            ports = ",".join(str(p) for p in service.ports)
            print(f"{name:<9} {state:<22} {HOST}:{ports}")
    return healthy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stack.local_stack", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status", "env"))
    parser.add_argument("services", nargs="*", choices=[[], *SERVICES], default=[])
    parser.add_argument("--quiet", "-q", action="store_true", help="status: exit code only")
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="up: restart storage, bigquery and postgres on their existing data",
    )
    args = parser.parse_args(argv)
    names = [n for n in SERVICES if n in args.services] if args.services else list(SERVICES)
    if args.command == "up":
        up(names, args.keep_data)
        print(export_lines())
    elif args.command == "down":
        down(names)
    elif args.command == "status":
        return 0 if status(names, args.quiet) else 1
    else:
        print(export_lines())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
