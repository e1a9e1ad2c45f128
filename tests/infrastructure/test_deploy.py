"""The gcloud commands of the Flex Templates (templates/flex.py), checked against the templates'
metadata, the Terraform outputs and gcloud's own flags."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from templates import flex
from tests.support.terraform_config import load

SETTINGS = flex.load_settings(flex.EXAMPLE_SETTINGS)

# --- settings: one source of names -------------------------------------------------------------


def test_settings_are_the_terraform_flex_settings_output():
    tf = load()
    output = tf.outputs["flex_settings"]["value"]
    assert set(output) == flex.SETTINGS_KEYS == set(SETTINGS)
    assert set(output["parameters"]) == set(flex.PIPELINES) == set(SETTINGS["parameters"])
    # The job Terraform launches reads the spec and runs the image that templates/flex.py builds.
    job = tf.resource("google_dataflow_flex_template_job", "streaming")
    assert job["container_spec_gcs_path"].endswith("/templates/streaming.json")
    assert flex.template_path(SETTINGS, "streaming").endswith("/templates/streaming.json")
    assert job["sdk_container_image"].startswith("${local.image_repository}/genai-streaming:")
    assert flex.image(SETTINGS, "streaming", "t").endswith("/genai-streaming:t")
    assert output["image_repository"] == "${local.image_repository}"


@pytest.mark.parametrize("pipeline", flex.PIPELINES)
def test_default_parameters_of_the_settings_satisfy_the_metadata(pipeline):
    defaults = SETTINGS["parameters"][pipeline]
    problems = flex.validate_parameters(flex.load_metadata(pipeline), defaults)
    assert [p for p in problems if not p.startswith("missing required")] == []


# --- commands ----------------------------------------------------------------------------------


def test_build_commands_build_both_images_then_both_specs():
    commands = flex.build_commands(SETTINGS, "v1")
    assert [c[:4] for c in commands] == [
        ["gcloud", "builds", "submit", "--project=my-project"],
        ["gcloud", "dataflow", "flex-template", "build"],
        ["gcloud", "dataflow", "flex-template", "build"],
    ]
    assert (
        "--substitutions=_IMAGE_STREAMING=europe-west1-docker.pkg.dev/my-project/genai-pipeline/"
        "genai-streaming:v1,_IMAGE_BACKFILL=europe-west1-docker.pkg.dev/my-project/"
        "genai-pipeline/genai-backfill:v1"
    ) in commands[0]
    for command, pipeline in zip(commands[1:], flex.PIPELINES, strict=True):
        assert command[4] == f"gs://my-project-genai-templates/templates/{pipeline}.json"
        assert f"--image={flex.image(SETTINGS, pipeline, 'v1')}" in command
        assert f"--metadata-file=templates/{pipeline}/metadata.json" in command
        assert "--sdk-language=PYTHON" in command


def test_backfill_run_command_validates_and_escapes_parameters():
    command = flex.run_command(
        SETTINGS,
        "backfill",
        "v1",
        {
            "input": "gs://my-project-genai-raw",
            "input_format": "avro",
            "start_date": "2026-11-01",
            "end_date": "2026-11-07",
            "regions": "us,eu",
        },
        job_name="replay-1",
    )
    assert command[:5] == ["gcloud", "dataflow", "flex-template", "run", "replay-1"]
    assert (
        "--template-file-gcs-location=gs://my-project-genai-templates/templates/backfill.json"
        in (command)
    )
    assert "--disable-public-ips" in command and "--enable-streaming-engine" not in command
    flag = command[-1]
    # regions holds a comma: gcloud's ^;^ escape keeps it one value.
    assert flag.startswith("--parameters=^;^sdk_container_image=")
    pairs = dict(p.split("=", 1) for p in flag.removeprefix("--parameters=^;^").split(";"))
    assert pairs["regions"] == "us,eu"
    assert pairs["sdk_container_image"] == flex.image(SETTINGS, "backfill", "v1")
    assert pairs["pseudonym_key"].startswith("secret:projects/my-project/secrets/")


def test_streaming_run_uses_streaming_engine_and_the_job_name_of_the_alerts():
    command = flex.run_command(SETTINGS, "streaming", "v1", {"window_size_s": "60"})
    assert command[4] == SETTINGS["streaming_job_name"]
    assert "--enable-streaming-engine" in command
    assert command[-1].startswith("--parameters=sdk_container_image=")  # no comma: plain form


@pytest.mark.parametrize(
    ("pipeline", "parameters", "message"),
    [
        ("backfill", {"input_format": "avro"}, "missing required parameter 'input'"),
        ("backfill", {"input": "gs://my-bucket/x", "start_date": "2026-13-01"}, "start_date="),
        ("streaming", {"subscriptions": "projects/p/subscriptions/s"}, "unknown parameter"),
        ("streaming", {"window_size_s": "0"}, "window_size_s='0' does not match"),
    ],
)
def test_run_command_rejects_what_the_template_would_reject(pipeline, parameters, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        flex.run_command(SETTINGS, pipeline, "v1", parameters)


def test_parameters_flag_picks_a_delimiter_absent_from_the_values():
    assert flex.parameters_flag({"a": "1", "b": "2"}) == "--parameters=a=1,b=2"
    assert flex.parameters_flag({"a": "x,y;z"}) == "--parameters=^|^a=x,y;z"


def test_format_command_is_shell_safe():
    text = flex.format_command(["gcloud", "x", "y", "--parameters=^;^a=b;c=d", "--flag"])
    assert text == "gcloud x y \\\n    '--parameters=^;^a=b;c=d' \\\n    --flag"
    assert flex.format_command(["terraform", "-chdir=terraform", "init"]) == (
        "terraform -chdir=terraform init"
    )
    assert flex.format_command(["python", "-m", "pipelines.replay", "--a=1", "--b", "2"]) == (
        "python \\\n    -m pipelines.replay \\\n    --a=1 \\\n    --b 2"
    )


def _gcloud_flags(*command: str) -> set[str]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gcloud is required in CI to check the Flex Template commands")
        pytest.skip("gcloud is not installed")
    result = subprocess.run(
        [gcloud, *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "PAGER": "cat"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(--[a-z][a-z-]+)", re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)))


def test_every_flag_used_is_a_flag_of_gcloud():
    commands = [
        *flex.build_commands(SETTINGS, "v1"),
        flex.run_command(SETTINGS, "streaming", "v1", {}),
        flex.run_command(SETTINGS, "backfill", "v1", {"input": "gs://my-bucket/raw"}),
    ]
    for command in commands:
        words = [w for w in command[1:] if not w.startswith("-")]
        verb = words[:2] if words[0] == "builds" else words[:3]
        known = _gcloud_flags(*verb)
        used = {w.split("=", 1)[0] for w in command if w.startswith("--")}
        assert used <= known, f"gcloud {' '.join(verb)}: unknown flags {sorted(used - known)}"


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_prints_placeholders_without_a_settings_file(tmp_path, capsys):
    assert flex.main(["--settings", str(tmp_path / "none.json"), "--tag", "v1", "build"]) == 0
    out = capsys.readouterr().out
    assert "placeholders from templates/settings.example.json" in out
    assert "gcloud dataflow flex-template build gs://my-project-genai-templates/" in out


def test_cli_never_executes_placeholders_or_without_credentials(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(flex.subprocess, "run", lambda *a, **k: calls.append(a))
    with pytest.raises(SystemExit, match="make deploy-settings"):
        flex.main(["--settings", str(tmp_path / "none.json"), "--tag", "v1", "--execute", "build"])
    settings = tmp_path / "settings.json"
    settings.write_text(flex.EXAMPLE_SETTINGS.read_text())
    monkeypatch.setattr(flex, "_has_credentials", lambda: False)
    with pytest.raises(SystemExit, match="active account"):
        flex.main(["--settings", str(settings), "--tag", "v1", "--execute", "build"])
    assert calls == []


def test_cli_rejects_bad_parameters_before_printing(tmp_path, capsys):
    with pytest.raises(SystemExit, match="missing required parameter 'input'"):
        flex.main(["--settings", str(tmp_path / "x"), "--tag", "v1", "run", "backfill"])
    assert "gcloud dataflow" not in capsys.readouterr().out
