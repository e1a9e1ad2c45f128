"""The Flex Templates agree with the code: metadata.json parameters are the pipelines' options
(read from the parser each options class builds), their regexes never let through what the
code rejects, and the image pins the same dependencies and Beam version as pyproject.toml."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import tomllib
from pathlib import Path

import apache_beam
import pytest
from apache_beam.options import pipeline_options as beam_options
from packaging.requirements import Requirement

from pipelines import backfill, streaming
from pipelines.launch import local_only_problems
from pipelines.options import DEDUPE_STRATEGY_CHOICES
from pipelines.sinks import SINKS
from transforms.pii import settings as pii_settings
from transforms.pii.engine import ENGINE_NAMES, build_engine

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
PIPELINES = {
    "streaming": (streaming.StreamingOptions, streaming.validate),
    "backfill": (backfill.BackfillOptions, backfill.validate),
}
# Options whose value is one of a code constant: the regex must accept exactly those.
# The values a template accepts: what the code accepts on Dataflow (the synthetic source and the
# embedded sinks are rejected there at launch: pipelines.launch.local_only_problems).
ENUMS = {
    "source": tuple(s for s in streaming.SOURCES if s != "synthetic"),
    "sink": tuple(s for s in SINKS if s != "embedded"),
    "input_format": backfill.INPUT_FORMATS,
    "redaction_engine": ENGINE_NAMES,
    "dedupe_strategy": DEDUPE_STRATEGY_CHOICES,
}
EXAMPLE = re.compile(r"Example: (\S+)$")
# A valid run of each pipeline, so that one flag can be judged in context (the backfill's flags
# depend on each other); the flag under test is appended and overrides.
# The gcp sink's required flags are valid too, so that --sink=gcp is judged on its own.
_GCP_SINK_ARGS = ["--bigquery_dataset=my-project.genai", "--audit_db_url=postgresql://u@h/db"]
VALID_ARGS = {
    "streaming": [*_GCP_SINK_ARGS, "--subscription=projects/my-project/subscriptions/events"],
    "backfill": [
        "--input=gs://my-bucket/archive",
        "--input_format=avro",
        "--start_date=2026-11-01",
        "--end_date=2026-11-07",
        *_GCP_SINK_ARGS,
    ],
}


@pytest.fixture(autouse=True)
def _engines_built_once(monkeypatch):
    # Validation builds the redaction engine to check its name; building it once per name
    # keeps the hundreds of validations below fast and still rejects unknown names.
    monkeypatch.setattr(pii_settings, "build_engine", functools.cache(build_engine))


def _options(options_class) -> dict[str, object]:
    """Flag name -> default of the options the class adds (Beam's own options excluded)."""
    parser = beam_options._BeamArgumentParser(allow_abbrev=False)
    options_class._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _metadata(pipeline: str) -> dict:
    return json.loads((TEMPLATES / pipeline / "metadata.json").read_text("utf-8"))


def _parameters(pipeline: str) -> dict[str, dict]:
    return {p["name"]: p for p in _metadata(pipeline)["parameters"]}


def _regexes_accept(parameter: dict, value: str) -> bool:
    return all(re.fullmatch(r, value) for r in parameter.get("regexes", []))


def _rejected_by_code(pipeline: str, flag: str, value: str) -> bool:
    """True when the pipeline's own parsing or validation rejects --flag=value."""
    options_class, validate = PIPELINES[pipeline]
    try:
        options = options_class([*VALID_ARGS[pipeline], f"--{flag}={value}"])
        problems = validate(options)
    except SystemExit:  # argparse type conversion failed
        return True
    return any(re.search(rf"--{flag}\b", problem) for problem in problems)


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_every_parameter_is_an_option_of_the_pipeline(pipeline):
    options = _options(PIPELINES[pipeline][0])
    unknown = set(_parameters(pipeline)) - set(options)
    assert not unknown, f"metadata parameters that are not options: {sorted(unknown)}"


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_every_option_without_a_default_is_a_parameter(pipeline):
    options = _options(PIPELINES[pipeline][0])
    no_default = {name for name, action in options.items() if action.default is None}
    missing = no_default - set(_parameters(pipeline))
    assert not missing, f"options without a default missing from metadata.json: {sorted(missing)}"


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_every_option_of_the_pipeline_is_a_parameter(pipeline):
    # Stricter than the rule above: a new option (with a default) must be added to the template
    # as well, or deliberately not; this fails until the metadata catches up with the code.
    missing = set(_options(PIPELINES[pipeline][0])) - set(_parameters(pipeline))
    assert not missing, (
        f"options missing from templates/{pipeline}/metadata.json: {sorted(missing)}"
    )


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_parameter_names_do_not_collide_with_beam_options(pipeline):
    parser = beam_options._BeamArgumentParser(allow_abbrev=False)
    for cls in vars(beam_options).values():
        is_options = isinstance(cls, type) and issubclass(cls, beam_options.PipelineOptions)
        if is_options and cls is not beam_options.PipelineOptions:
            cls._add_argparse_args(parser)
    beam_names = {a.dest for a in parser._actions}
    assert not set(_parameters(pipeline)) & beam_names


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_parameters_are_documented_with_an_example_that_their_regexes_accept(pipeline):
    metadata = _metadata(pipeline)
    assert metadata["name"] and metadata["description"]
    for name, parameter in _parameters(pipeline).items():
        assert parameter["label"], name
        example = EXAMPLE.search(parameter["helpText"])
        assert example, f"{name}: helpText must end with 'Example: <value>'"
        for regex in parameter.get("regexes", []):
            assert regex.startswith("^") and regex.endswith("$"), f"{name}: unanchored {regex}"
        assert _regexes_accept(parameter, example.group(1)), f"{name}: example rejected"
        assert not _rejected_by_code(pipeline, name, example.group(1)), f"{name}: example rejected"


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_fixed_format_parameters_have_regexes(pipeline):
    options = _options(PIPELINES[pipeline][0])
    parameters = _parameters(pipeline)
    for name, action in options.items():
        if action.type in (int, float) or name in ENUMS or name.endswith("_date"):
            assert parameters[name].get("regexes"), f"{name} has a fixed format but no regex"
    assert parameters["pseudonym_key"].get("regexes")


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_regexes_accept_the_code_defaults(pipeline):
    for name, action in _options(PIPELINES[pipeline][0]).items():
        parameter = _parameters(pipeline)[name]
        # A required parameter is always given: the code's default is not the template's.
        optional = parameter.get("isOptional", False)
        if optional and action.default not in (None, "") and parameter.get("regexes"):
            assert _regexes_accept(parameter, str(action.default)), f"{name}={action.default!r}"


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_numeric_regexes_never_accept_what_the_code_rejects(pipeline):
    candidates = ["0", "1", "-1", "0.5", "1.5", "2", "1e3", "abc", ""]
    for name, action in _options(PIPELINES[pipeline][0]).items():
        if action.type not in (int, float):
            continue
        parameter = _parameters(pipeline)[name]
        for value in candidates:
            if _regexes_accept(parameter, value):
                assert not _rejected_by_code(pipeline, name, value), f"{name}={value!r}"
        assert not _regexes_accept(parameter, "-1") and not _regexes_accept(parameter, "")


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_enum_regexes_accept_exactly_the_values_of_the_code(pipeline):
    for name, values in ENUMS.items():
        parameter = _parameters(pipeline).get(name)
        if parameter is None:
            continue
        (regex,) = parameter["regexes"]
        alternatives = re.fullmatch(r"\^\(([A-Za-z0-9_|-]+)\)\$", regex)
        assert alternatives, f"{name}: expected ^(value|value...)$, got {regex}"
        assert set(alternatives.group(1).split("|")) == set(values), name


def test_key_reference_regex_matches_what_load_key_accepts():
    parameter = _parameters("streaming")["pseudonym_key"]
    for good in (
        "env:GENAI_PSEUDONYM_KEY",
        "file:/secrets/pseudonym.key",
        "secret:projects/my-project/secrets/genai-pseudonym-key/versions/3",
    ):
        assert _regexes_accept(parameter, good), good
    for bad in ("GENAI_PSEUDONYM_KEY", "vault:x", "secret:genai-pseudonym-key", "env:"):
        assert not _regexes_accept(parameter, bad), bad


def test_date_regexes_match_what_the_backfill_parses():
    parameters = _parameters("backfill")
    for name in ("start_date", "end_date"):
        for value in ("2026-11-01", "2026-12-31", "2026-13-01", "2026-1-1", "20261101", "x"):
            accepted = _regexes_accept(parameters[name], value)
            try:
                dt.date.fromisoformat(value)
                parsed = len(value) == 10
            except ValueError:
                parsed = False
            assert accepted == parsed, (name, value)
    assert _regexes_accept(parameters["regions"], "us,eu")
    assert not _regexes_accept(parameters["regions"], "us, eu")


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_required_parameters_are_exactly_the_ones_validation_requires(pipeline):
    options_class, validate = PIPELINES[pipeline]
    options = options_class(["--runner=DataflowRunner"])  # what a template launch runs on
    problems = local_only_problems(options, options) + validate(options)
    required = {
        n for n in _parameters(pipeline) if any(f"--{n} is required" in p for p in problems)
    }
    optional = {n for n, p in _parameters(pipeline).items() if p["isOptional"]}
    assert required == set(_parameters(pipeline)) - optional


def test_streaming_template_is_declared_streaming():
    assert _metadata("streaming")["streaming"] is True
    assert "streaming" not in _metadata("backfill")


# --- image -------------------------------------------------------------------------------------

DOCKERFILE = (TEMPLATES / "Dockerfile").read_text("utf-8")
LOCK = (TEMPLATES / "requirements.lock").read_text("utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def _lock_pins() -> dict[str, str]:
    return {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", LOCK, re.MULTILINE)
    }


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_one_beam_version_everywhere():
    (pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("apache-beam")]
    pinned = str(Requirement(pin).specifier).removeprefix("==")
    sdk = re.search(r"^FROM apache/beam_python3\.11_sdk:(\S+) AS image$", DOCKERFILE, re.MULTILINE)
    assert sdk, "the image must build FROM Beam's Python 3.11 SDK image"
    assert sdk.group(1) == pinned == _lock_pins()["apache-beam"] == apache_beam.__version__


def test_launcher_comes_from_a_pinned_flex_template_base_image():
    launcher = re.search(r"^ARG LAUNCHER_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE).group(1)
    assert launcher.startswith("gcr.io/dataflow-templates-base/python311-template-launcher-base:")
    assert not launcher.endswith(":latest")
    assert "COPY --from=launcher /opt/google/dataflow/python_template_launcher" in DOCKERFILE
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in DOCKERFILE


def test_image_installs_the_hash_pinned_lock_then_the_package_without_resolving():
    assert (
        "pip install --no-cache-dir --require-hashes -r templates/requirements.lock" in DOCKERFILE
    )
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in DOCKERFILE
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        top = pattern.removesuffix("*")
        assert f"COPY {top} {top}" in DOCKERFILE, f"package {top} is not copied into the image"


def test_image_compiles_the_redaction_modules_it_installed():
    # From /tmp, so the build targets the installed package (site-packages), not /template.
    assert "cd /tmp && python compile_redaction.py --require" in DOCKERFILE
    assert DOCKERFILE.index("--no-build-isolation .") < DOCKERFILE.index("compile_redaction.py")
    assert _canonical("cython") in {_canonical(k) for k in _lock_pins()}


def test_lock_is_complete_and_hash_pinned():
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.split("\n", 2)[2])
    for entry in entries:
        if entry.strip():
            assert "--hash=sha256:" in entry, f"unhashed lock entry: {entry.splitlines()[0]}"
    pins = {_canonical(k): v for k, v in _lock_pins().items()}
    requirements = [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["build-system"]["requires"],
    ]
    for line in requirements:
        requirement = Requirement(line)
        name = _canonical(requirement.name)
        assert name in pins, f"{name} is not in templates/requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {line}"
    assert LOCK.splitlines()[1].strip() == "#    make lock"


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_each_target_launches_its_pipeline(pipeline):
    stage = re.search(
        rf"^FROM image AS {pipeline}\nENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)$",
        DOCKERFILE,
        re.MULTILINE,
    )
    assert stage, f"no {pipeline} target"
    main = ROOT / stage.group(1)
    assert f"COPY {stage.group(1)} {stage.group(1)}" in DOCKERFILE
    assert f"from pipelines.{pipeline} import run" in main.read_text("utf-8")
    build = (TEMPLATES / "cloudbuild.yaml").read_text("utf-8")
    assert f'"--target", "{pipeline}", "-t", "${{_IMAGE_{pipeline.upper()}}}"' in build
