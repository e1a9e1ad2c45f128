"""The gcloud commands that build and launch the pipelines' Flex Templates.

``make template-build``, ``make template-run-streaming`` and ``make template-run-backfill`` call
this module. It prints the exact commands and runs them only with ``--execute`` (``EXECUTE=1``)
when gcloud has an active account. Names come from a settings file, the ``flex_settings`` output
of the Terraform in ``terraform/`` (``make deploy-settings``), so the commands and the
infrastructure cannot disagree; without it the placeholders of ``templates/settings.example.json``
are shown. Launch parameters are checked against the template's ``metadata.json`` (names,
required ones, regexes) before anything is printed, as Dataflow would check them at launch.

    python -m templates.flex --settings .local/deploy-settings.json --tag v1 build
    python -m templates.flex --settings .local/deploy-settings.json run backfill \\
        input=gs://my-project-genai-raw input_format=avro start_date=2026-11-01 end_date=2026-11-07
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "EXAMPLE_SETTINGS",
    "PIPELINES",
    "build_commands",
    "format_command",
    "image",
    "load_metadata",
    "load_settings",
    "parameters_flag",
    "run_command",
    "template_path",
    "validate_parameters",
]

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ("streaming", "backfill")
EXAMPLE_SETTINGS = ROOT / "templates" / "settings.example.json"
SETTINGS_KEYS = frozenset(
    {
        "project",
        "region",
        "image_repository",
        "templates_bucket",
        "staging_location",
        "temp_location",
        "service_account_email",
        "subnetwork",
        "streaming_job_name",
        "streaming_workers",
        "event_schema",
        "parameters",
    }
)
_DELIMITERS = (",", ";", "|", "~", "#", "@")


def load_settings(path: str | Path) -> dict[str, Any]:
    """Reads a settings file (``terraform output -json flex_settings``) and checks its keys."""
    settings = json.loads(Path(path).read_text("utf-8"))
    missing = SETTINGS_KEYS - settings.keys()
    if missing:
        raise ValueError(f"{path}: missing settings {', '.join(sorted(missing))}")
    return settings


def load_metadata(pipeline: str) -> dict[str, Any]:
    """The Flex Template metadata of ``pipeline`` (``templates/<pipeline>/metadata.json``)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")
    return json.loads((ROOT / "templates" / pipeline / "metadata.json").read_text("utf-8"))


def image(settings: dict[str, Any], pipeline: str, tag: str) -> str:
    """The image of ``pipeline``'s template: its launcher and its workers' SDK container."""
    return f"{settings['image_repository']}/genai-{pipeline}:{tag}"


def template_path(settings: dict[str, Any], pipeline: str) -> str:
    """Where the template spec of ``pipeline`` is stored (Terraform's job reads the same path)."""
    return f"gs://{settings['templates_bucket']}/templates/{pipeline}.json"


def validate_parameters(metadata: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """Returns what is wrong with ``parameters`` for a template (empty when they are fine)."""
    declared = {p["name"]: p for p in metadata["parameters"]}
    problems = [f"unknown parameter {name!r}" for name in parameters if name not in declared]
    for name, spec in declared.items():
        if name not in parameters:
            if not spec.get("isOptional", False):
                problems.append(f"missing required parameter {name!r}")
            continue
        for pattern in spec.get("regexes", []):
            if not re.fullmatch(pattern, parameters[name]):
                problems.append(f"parameter {name}={parameters[name]!r} does not match {pattern}")
    return problems


def parameters_flag(parameters: dict[str, str]) -> str:
    """``--parameters=...``, with gcloud's ``^DELIM^`` escape when a value holds a comma."""
    pairs = [f"{name}={value}" for name, value in parameters.items()]
    delimiter = next(d for d in _DELIMITERS if not any(d in pair for pair in pairs))
    prefix = "" if delimiter == "," else f"^{delimiter}^"
    return f"--parameters={prefix}{delimiter.join(pairs)}"


def _environment_flags(settings: dict[str, Any]) -> list[str]:
    return [
        f"--project={settings['project']}",
        f"--region={settings['region']}",
        f"--service-account-email={settings['service_account_email']}",
        f"--staging-location={settings['staging_location']}",
        f"--temp-location={settings['temp_location']}",
        f"--subnetwork={settings['subnetwork']}",
        "--disable-public-ips",
    ]


def build_commands(settings: dict[str, Any], tag: str) -> list[list[str]]:
    """Cloud Build of both images, then one ``flex-template build`` per pipeline."""
    substitutions = ",".join(f"_IMAGE_{p.upper()}={image(settings, p, tag)}" for p in PIPELINES)
    commands = [
        [
            "gcloud",
            "builds",
            "submit",
            f"--project={settings['project']}",
            f"--region={settings['region']}",
            "--config=templates/cloudbuild.yaml",
            f"--substitutions={substitutions}",
            ".",
        ]
    ]
    for pipeline in PIPELINES:
        commands.append(
            [
                "gcloud",
                "dataflow",
                "flex-template",
                "build",
                template_path(settings, pipeline),
                f"--image={image(settings, pipeline, tag)}",
                "--sdk-language=PYTHON",
                f"--metadata-file=templates/{pipeline}/metadata.json",
                f"--project={settings['project']}",
            ]
        )
    return commands


def run_command(
    settings: dict[str, Any],
    pipeline: str,
    tag: str,
    parameters: dict[str, str],
    job_name: str | None = None,
) -> list[str]:
    """The ``flex-template run`` of ``pipeline`` with the settings' default parameters.

    Raises:
        ValueError: the merged parameters do not satisfy the template's metadata.
    """
    merged = {**settings["parameters"].get(pipeline, {}), **parameters}
    problems = validate_parameters(load_metadata(pipeline), merged)
    if problems:
        raise ValueError(f"{pipeline} parameters:\n  " + "\n  ".join(problems))
    if job_name is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        job_name = (
            settings["streaming_job_name"] if pipeline == "streaming" else f"genai-backfill-{stamp}"
        )
    command = [
        "gcloud",
        "dataflow",
        "flex-template",
        "run",
        job_name,
        f"--template-file-gcs-location={template_path(settings, pipeline)}",
        *_environment_flags(settings),
    ]
    if pipeline == "streaming":
        # The workers Terraform's streaming job gets (docs/deploy.md, Sizing).
        workers = settings["streaming_workers"]
        command += [
            "--enable-streaming-engine",
            f"--worker-machine-type={workers['machine_type']}",
            f"--num-workers={workers['num_workers']}",
            f"--max-workers={workers['max_workers']}",
            "--additional-pipeline-options="
            f"number_of_worker_harness_threads={workers['harness_threads']}",
        ]
    # The launcher and the workers run the same image (python-docs-samples' pattern).
    command.append(
        parameters_flag({"sdk_container_image": image(settings, pipeline, tag), **merged})
    )
    return command


def format_command(command: list[str]) -> str:
    """The command as copy-pasteable shell: a short command (four words at most) on one line;
    else the command words, then one flag per line, a bare flag with its value (``-m X``)."""
    quoted = [shlex.quote(part) for part in command]
    if len(command) <= 4:
        return " ".join(quoted)
    head = next((i for i, part in enumerate(command) if part.startswith("-")), len(command))
    lines = [" ".join(quoted[:head])]
    for i in range(head, len(command)):
        bare_value = (
            not command[i].startswith("-")
            and command[i - 1].startswith("-")
            and "=" not in command[i - 1]
            and i > head
        )
        if bare_value:
            lines[-1] += f" {quoted[i]}"
        else:
            lines.append(quoted[i])
    return " \\\n    ".join(lines)


def _has_credentials() -> bool:
    if shutil.which("gcloud") is None:
        return False
    listed = subprocess.run(
        ["gcloud", "auth", "list", "--filter=status:ACTIVE", "--format=value(account)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.returncode == 0 and bool(listed.stdout.strip())


def settings_or_example(settings_path: Path, execute: bool) -> dict[str, Any]:
    """The deploy settings at ``settings_path``; when that file is missing, the example's
    placeholders (said on stdout), or with ``execute`` an exit: nothing runs on placeholders."""
    if not settings_path.is_file():
        if execute:
            raise SystemExit(f"{settings_path} not found: run `make deploy-settings` first")
        print(
            f"# {settings_path} not found: placeholders from {EXAMPLE_SETTINGS.relative_to(ROOT)}"
        )
        print("# (`make deploy-settings` writes the real names after `terraform apply`)")
        settings_path = EXAMPLE_SETTINGS
    return load_settings(settings_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print (and run) the Flex Template commands.")
    parser.add_argument("--settings", default=".local/deploy-settings.json")
    parser.add_argument("--tag", required=True, help="Image tag, e.g. the git commit.")
    parser.add_argument("--job_name", help="Job name (run only).")
    parser.add_argument("--execute", action="store_true", help="Run the commands as well.")
    parser.add_argument("action", choices=("build", "run"))
    parser.add_argument("pipeline", nargs="?", choices=PIPELINES, help="run: which template.")
    parser.add_argument("parameters", nargs="*", help="run: NAME=VALUE launch parameters.")
    args = parser.parse_args(argv)

    settings = settings_or_example(Path(args.settings), args.execute)

    if args.action == "build":
        commands = build_commands(settings, args.tag)
    else:
        if args.pipeline is None:
            parser.error("run needs a pipeline: streaming or backfill")
        malformed = [p for p in args.parameters if "=" not in p]
        if malformed:
            parser.error(f"parameters are NAME=VALUE, got {malformed}")
        parameters = dict(p.split("=", 1) for p in args.parameters)
        try:
            commands = [run_command(settings, args.pipeline, args.tag, parameters, args.job_name)]
        except ValueError as error:
            raise SystemExit(str(error)) from None

    for command in commands:
        print(format_command(command))
    if not args.execute:
        return 0
    if not _has_credentials():
        raise SystemExit("EXECUTE=1 needs gcloud with an active account (gcloud auth login)")
    for command in commands:
        subprocess.run(command, check=True, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
