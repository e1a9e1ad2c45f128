"""The commands of the runbook's steps around the Flex Templates (docs/deploy.md).

``make deploy-infra``, ``deploy-key``, ``deploy-audit-grant``, ``deploy-check-schema`` and
``deploy-replay`` call this module; ``templates/flex.py`` prints the template commands. Each
step prints the exact commands, with the names of the settings file (the Terraform output
``flex_settings``, ``make deploy-settings``; the placeholders of
``templates/settings.example.json`` without it), and runs them only with ``--execute``
(``EXECUTE=1``). A test checks that docs/deploy.md shows exactly what the targets print.

    python -m templates.deploy --settings .local/deploy-settings.json check-schema
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from templates.flex import (
    ROOT,
    _has_credentials,
    format_command,
    settings_or_example,
)

__all__ = ["STEPS", "Command", "sample_event", "step_commands"]

STEPS = ("infra", "key", "audit-grant", "check-schema", "replay")
PYTHON = ".venv/bin/python"


class Command(NamedTuple):
    """One command: ``argv`` runs it; ``shown`` is how the runbook shows it (a pipeline, or SQL
    to run elsewhere); ``runnable``: False for what ``--execute`` cannot run (SQL)."""

    argv: tuple[str, ...]
    shown: str
    runnable: bool = True
    stdin_key: bool = False  # feed a fresh pseudonym key on stdin


def _command(*argv: str) -> Command:
    return Command(tuple(argv), format_command(list(argv)))


def sample_event() -> str:
    """A gateway event of contract 1.1 with optional fields, compact JSON: what a gateway
    publishes, for checking the topic's schema gate before it does."""
    return json.dumps(
        {
            "event_id": "8a1f7a52-6a3e-4d3c-9f0e-0d6c3f1b2a11",
            "request_id": "R-123",
            "user_id": "U-456",
            "event_time": "2026-01-27T12:00:00Z",
            "model": "gpt-4o-mini",
            "latency_ms": 780,
            "token_count": 1420,
            "region": "us",
            "schema_version": "1.1",
            "model_version": "2024-07-18",
            "policy_flags": ["pii_redacted"],
            "ttft_ms": 120,
        },
        separators=(",", ":"),
    )


def _secret_of(reference: str) -> tuple[str, str]:
    """(project, secret) of ``secret:projects/P/secrets/S/versions/V``."""
    parts = reference.removeprefix("secret:").split("/")
    return parts[1], parts[3]


def step_commands(settings: dict[str, Any], step: str, parameters: dict[str, str]) -> list[Command]:
    """The commands of runbook ``step`` (one of ``STEPS``) for ``settings``."""
    from pipelines.io.sinks.gcp.audit_db import parse_cloudsql_url

    project = settings["project"]
    streaming = settings["parameters"]["streaming"]
    if step == "infra":
        return [
            _command("terraform", "-chdir=terraform", "init"),
            _command("terraform", "-chdir=terraform", "apply"),
        ]
    if step == "key":
        secret_project, secret = _secret_of(streaming["pseudonym_key"])
        add = ["gcloud", "secrets", "versions", "add", secret, f"--project={secret_project}"]
        add.append("--data-file=-")
        shown = "python3 -c 'import secrets; print(secrets.token_hex(32))' | " + " ".join(
            shlex.quote(a) for a in add
        )
        return [Command(tuple(add), shown, stdin_key=True)]
    if step == "audit-grant":
        instance = parse_cloudsql_url(streaming["audit_db_url"])
        _, _, name = instance.connection_name.rpartition(":")
        grant = f'GRANT CREATE ON SCHEMA public TO "{instance.user}";'
        return [
            _command(
                "gcloud",
                "sql",
                "users",
                "set-password",
                "postgres",
                f"--instance={name}",
                f"--project={project}",
                "--prompt-for-password",
            ),
            Command(
                (),
                f"-- Cloud SQL Studio, database {instance.database}, user postgres:\n{grant}",
                runnable=False,
            ),
        ]
    if step == "check-schema":
        return [
            _command(
                "gcloud",
                "pubsub",
                "schemas",
                "validate-message",
                f"--schema-name={settings['event_schema']}",
                "--message-encoding=json",
                f"--message={sample_event()}",
            )
        ]
    if step == "replay":
        flags = {
            "sink": "gcp",
            "replay_from": "table",
            **{
                name: streaming[name]
                for name in (
                    "dead_letter_table",
                    "raw_root",
                    "dead_letter_root",
                    "dead_letter_topic",
                    "bigquery_dataset",
                    "audit_db_url",
                    "pseudonym_key",
                    "redaction_engine",
                )
            },
            "output_root": "./out",
            **parameters,
        }
        return [
            _command(PYTHON, "-m", "pipelines.replay", *(f"--{k}={v}" for k, v in flags.items()))
        ]
    raise ValueError(f"unknown step {step!r}; known: {', '.join(STEPS)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print (and run) the runbook's commands.")
    parser.add_argument("--settings", default=".local/deploy-settings.json")
    parser.add_argument("--execute", action="store_true", help="Run the commands as well.")
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("parameters", nargs="*", help="replay: NAME=VALUE flags of the replay.")
    args = parser.parse_args(argv)
    settings = settings_or_example(Path(args.settings), args.execute)
    malformed = [p for p in args.parameters if "=" not in p]
    if malformed:
        parser.error(f"parameters are NAME=VALUE, got {malformed}")
    parameters = dict(p.split("=", 1) for p in args.parameters)
    commands = step_commands(settings, args.step, parameters)
    for command in commands:
        print(command.shown)
    if not args.execute:
        return 0
    if args.step != "infra" and not _has_credentials():
        raise SystemExit("EXECUTE=1 needs gcloud with an active account (gcloud auth login)")
    for command in commands:
        if not command.runnable:
            print("# not run: execute the SQL above where it says", file=sys.stderr)
            continue
        key = secrets.token_hex(32) + "\n" if command.stdin_key else None
        subprocess.run(command.argv, check=True, cwd=ROOT, input=key, text=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
