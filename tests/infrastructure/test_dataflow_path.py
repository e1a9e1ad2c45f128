"""The Dataflow path is production-shaped: its entry points import nothing local-only and no
private name of Beam, and building its graphs starts nothing."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

# What a Flex Template launch runs (templates/*/main.py): import the pipeline, parse the
# template parameters, reject local-only flags, build the graph for the Dataflow runner. The
# graph is built, not submitted (that needs Google Cloud); then it lists what was imported.
_LAUNCH = """
import json, runpy, sys
import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
import pipelines.{name} as module
from pipelines.launch import local_only_problems, parse_options
runpy.run_path("templates/{name}/main.py", run_name="not_main")
args = {args!r}
options = parse_options(args, module.{options}, "python -m pipelines.{name}", "")
view = options.view_as(module.{options})
assert local_only_problems(options, view) == [], local_only_problems(options, view)
assert options.view_as(StandardOptions).runner == "DataflowRunner"
pipeline = beam.Pipeline(options=options)
module.build(pipeline, view)
from apache_beam.transforms import userstate
from apache_beam.runners.direct import evaluation_context
watched = (userstate.get_dofn_specs, evaluation_context.EvaluationContext.handle_result)
patched = [f.__module__ for f in watched if not f.__module__.startswith("apache_beam.")]
print(json.dumps({"modules": sorted(sys.modules), "patched": patched}))
"""

_DATAFLOW = ["--runner", "DataflowRunner", "--project", "genai-prod", "--region", "europe-west1"]
_DATAFLOW += ["--temp_location=gs://genai-temp/tmp", "--staging_location=gs://genai-temp/staging"]
_DATAFLOW += ["--dry_run=True"]  # Beam checks the buckets over the network otherwise
_GCP = [
    "--sink=gcp",
    "--raw_root=gs://b/archive",
    "--bigquery_dataset=genai-prod.genai",
    "--audit_db_url=postgresql://worker@10.0.0.3/audit",
    "--pseudonym_key=env:GENAI_PSEUDONYM_KEY",
]
ENTRY_POINTS = {
    "streaming": ("StreamingOptions", ["--subscription=projects/genai-prod/subscriptions/s"]),
    "backfill": ("BackfillOptions", ["--input=gs://b/in/*.jsonl"]),
}


def _a_dataflow_launch(name: str) -> dict:
    options, args = ENTRY_POINTS[name]
    code = (
        _LAUNCH.replace("{name}", name)
        .replace("{options}", options)
        .replace("{args!r}", repr([*_DATAFLOW, *_GCP, *args]))
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_dataflow_launch_loads_no_local_only_module_and_patches_nothing():
    for name in ENTRY_POINTS:
        launch = _a_dataflow_launch(name)
        modules = launch["modules"]
        assert f"pipelines.{name}" in modules
        local = [m for m in modules if m == "pipelines.local" or m.startswith("pipelines.local.")]
        assert not local, f"a Dataflow launch of {name} imported {local}"
        assert launch["patched"] == [], f"Beam functions replaced: {launch['patched']}"


def _production_modules() -> list[pathlib.Path]:
    files = []
    for package in ("pipelines", "transforms", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "local" in path.relative_to(ROOT).parts[:2]:
                continue
            files.append(path)
    return files


def _private_beam_names(path: pathlib.Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    beam_aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("apache_beam"):
                    beam_aliases.add(alias.asname or alias.name.split(".")[0])
                    if any(part.startswith("_") for part in alias.name.split(".")):
                        found.append(alias.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("apache_beam"):
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")):
                found.append(module)
            if module.startswith(("apache_beam.runners.direct", "apache_beam.internal")):
                found.append(module)
            found += [f"{module}.{a.name}" for a in node.names if a.name.startswith("_")]
    for node in ast.walk(tree):
        # beam.x._private: an attribute chain rooted at a Beam alias with a private part.
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in beam_aliases:
                found.append(ast.unparse(node))
    return found


def test_no_private_beam_name_outside_the_local_package():
    offenders = {
        str(path.relative_to(ROOT)): names
        for path in _production_modules()
        if (names := _private_beam_names(path))
    }
    assert not offenders, offenders


def test_the_private_name_check_finds_them():
    probe = ROOT / "pipelines" / "local" / "direct_runner_fixes.py"
    assert _private_beam_names(probe), "the check must see the local fixes' private names"


def test_building_the_local_streaming_graph_starts_no_service(tmp_path, monkeypatch):
    import threading

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import streaming
    from pipelines.local.run import build_locally

    monkeypatch.setenv("GENAI_PSEUDONYM_KEY", "test-only-pseudonym-key-0123456789")
    before = {t.ident for t in threading.enumerate()}
    options = PipelineOptions(["--source", "synthetic", "--output_root", str(tmp_path)])
    view = options.view_as(streaming.StreamingOptions)
    _, source = build_locally(beam.Pipeline(options=options), options, view, streaming.build)
    assert source is not None and not source.running
    started = [t.name for t in threading.enumerate() if t.ident not in before]
    assert not started, started


def test_template_metadata_lists_no_local_only_flag():
    from pipelines.local.options import LOCAL_OPTIONS

    local = {
        action.dest
        for classes in LOCAL_OPTIONS.values()
        for options_class in classes
        for action in _parser_of(options_class)._actions
        if action.option_strings
    }
    assert "pubsub_max_outstanding" in local
    for name in ENTRY_POINTS:
        metadata = json.loads((ROOT / "templates" / name / "metadata.json").read_text())
        listed = {p["name"] for p in metadata["parameters"]}
        assert not listed & local, f"{name} metadata lists local-only flags {listed & local}"


def _parser_of(options_class):
    import argparse

    parser = argparse.ArgumentParser()
    options_class._add_argparse_args(parser)
    return parser
