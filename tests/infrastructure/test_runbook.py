"""docs/deploy.md's runbook is what the make targets print: every shell block of the page is
``$ make <target> ...`` lines, each followed by the exact output of that target with the
example settings (templates/settings.example.json), and the gcloud commands of the steps use
only flags gcloud has. The Flex Template commands' own checks are in test_deploy.py."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from templates import deploy, flex
from tests.infrastructure.test_deploy import _gcloud_flags
from tests.infrastructure.test_docs import _FENCE, makefile_targets

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SETTINGS = flex.load_settings(flex.EXAMPLE_SETTINGS)


def runbook_steps(text: str) -> list[tuple[str, list[str], str]]:
    """``(make command line, its arguments, expected output)`` of every ``$ make`` line in the
    shell blocks of ``text``; a block holding anything else is an error."""
    steps = []
    for block in _FENCE.finditer(text):
        body = block.group(0).split("\n")[1:-1]
        assert body and body[0].startswith("$ make "), (
            f"docs/deploy.md: a shell block that is not `$ make ...`: {body[:1]}"
        )
        current = None
        for line in body:
            if line.startswith("$ "):
                current = [line[2:], []]
                steps.append(current)
            else:
                current[1].append(line)
    return [(line, shlex.split(line)[1:], "\n".join(out)) for line, out in steps]


STEPS = runbook_steps(DEPLOY_DOC.read_text("utf-8"))


def test_the_runbook_covers_every_step():
    targets = [args[0] for _, args, _ in STEPS]
    assert targets == [
        "deploy-infra",
        "deploy-key",
        "deploy-audit-grant",
        "deploy-check-schema",
        "template-build",
        "template-run-streaming",
        "template-run-backfill",
        "deploy-replay",
        "bench-cost",
    ]
    assert set(targets) <= makefile_targets()


@pytest.mark.parametrize(
    ("line", "args", "expected"), [s for s in STEPS if s[2]], ids=[s[1][0] for s in STEPS if s[2]]
)
def test_make_prints_exactly_what_the_runbook_shows(line, args, expected):
    # -o venv: the targets' virtualenv prerequisite is this interpreter's (BIN).
    done = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            "venv",
            f"BIN={Path(sys.executable).parent}",
            f"DEPLOY_SETTINGS={flex.EXAMPLE_SETTINGS.relative_to(ROOT)}",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n") == expected, f"`{line}` prints something else"


def test_the_parser_sees_commands_and_outputs():
    text = "```bash\n$ make a X=1\nout 1\nout 2\n$ make b\n```\n"
    assert runbook_steps(text) == [
        ("make a X=1", ["a", "X=1"], "out 1\nout 2"),
        ("make b", ["b"], ""),
    ]
    with pytest.raises(AssertionError, match="not `\\$ make"):
        runbook_steps("```bash\nterraform apply\n```\n")


def test_deploy_steps_use_only_flags_gcloud_has():
    for step in deploy.STEPS:
        for command in deploy.step_commands(SETTINGS, step, {"reason": "x"}):
            if not command.argv or command.argv[0] != "gcloud":
                continue
            words = [w for w in command.argv[1:] if not w.startswith("-")]
            verb = words[:3]
            known = _gcloud_flags(*verb)
            used = {w.split("=", 1)[0] for w in command.argv if w.startswith("--")}
            assert used <= known, f"gcloud {' '.join(verb)}: unknown flags {sorted(used - known)}"


def test_schema_check_sends_a_valid_event_of_the_contract():
    from transforms.parse import parse_event

    (command,) = deploy.step_commands(SETTINGS, "check-schema", {})
    message = next(a for a in command.argv if a.startswith("--message="))
    event = json.loads(message.removeprefix("--message="))
    import datetime as dt

    parsed = parse_event(
        json.dumps(event).encode(), now=dt.datetime(2026, 1, 27, 12, 5, tzinfo=dt.UTC)
    )
    assert parsed.schema_version == "1.1" and parsed.ttft_ms == 120.0


def test_audit_grant_names_the_iam_user_of_the_reference():
    grant = deploy.step_commands(SETTINGS, "audit-grant", {})[-1]
    assert not grant.runnable  # SQL, for Cloud SQL Studio
    user = re.search(r'TO "([^"]+)"', grant.shown).group(1)
    assert user == "genai-dataflow@my-project.iam"
    assert SETTINGS["parameters"]["streaming"]["audit_db_url"].startswith(f"cloudsql://{user}@")


def test_execute_runs_the_commands_and_never_the_sql(monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(deploy, "_has_credentials", lambda: True)
    monkeypatch.setattr(deploy.subprocess, "run", lambda argv, **kw: ran.append((argv, kw)))
    settings = tmp_path / "settings.json"
    settings.write_text(flex.EXAMPLE_SETTINGS.read_text())
    assert deploy.main(["--settings", str(settings), "--execute", "audit-grant"]) == 0
    assert [argv[:4] for argv, _ in ran] == [("gcloud", "sql", "users", "set-password")]
    ran.clear()
    assert deploy.main(["--settings", str(settings), "--execute", "key"]) == 0
    ((argv, kw),) = ran
    assert argv[:4] == ("gcloud", "secrets", "versions", "add")
    assert re.fullmatch(r"[0-9a-f]{64}\n", kw["input"])  # a fresh key, on stdin only
    with pytest.raises(SystemExit, match="make deploy-settings"):
        deploy.main(["--settings", str(tmp_path / "none.json"), "--execute", "infra"])
