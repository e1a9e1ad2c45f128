"""The compiled build of the redaction modules: used only when current, and same results.

``make`` builds it (``transforms/pii/build.py``); CI requires it (``CI=true``), so there a
missing build fails instead of skipping.
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import transforms.pii.detectors as detectors
from pipelines.local.texts import make_event, new_faker
from transforms.pii.compiled import (
    COMPILED_DIR,
    COMPILED_MODULES,
    MANIFEST,
    compiled_dir,
    source_digests,
)
from transforms.pii.offline import OfflineEngine

PACKAGE_DIR = Path(detectors.__file__).resolve().parent
if PACKAGE_DIR.name == COMPILED_DIR:
    PACKAGE_DIR = PACKAGE_DIR.parent
ROOT = PACKAGE_DIR.parent.parent

# Findings of the same generated corpus, one JSON list per text; run with and without the build.
_FINDINGS = """
import json, random, sys
from pipelines.local.texts import make_event, new_faker
from transforms.pii.offline import OfflineEngine
import transforms.pii.detectors as detectors
rng, fake = random.Random(11), new_faker()
events = [make_event(rng, fake, pii_share=0.6) for _ in range(300)]
texts = [t for e in events for t in (e.prompt.text, e.response.text)]
texts += [t[i:] for t in texts[:100] for i in (1, 7, 31)]  # candidates at other offsets
engine = OfflineEngine()
print(json.dumps({"module": detectors.__file__,
                  "findings": [[list(f) for f in engine.find(t)] for t in texts]}))
"""


def _compiled_in_use() -> bool:
    return Path(detectors.__file__).suffix != ".py"


def _require_build() -> None:
    if _compiled_in_use():
        return
    message = "the compiled redaction modules are not built or not current (make builds them)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _findings(pure: bool) -> dict:
    env = dict(os.environ)
    env.pop("GENAI_PURE_PYTHON", None)
    if pure:
        env["GENAI_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", _FINDINGS], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_compiled_build_finds_exactly_what_the_sources_find():
    _require_build()
    compiled, pure = _findings(pure=False), _findings(pure=True)
    assert compiled["module"].endswith(".so") and pure["module"].endswith(".py")
    assert sum(map(len, pure["findings"])) > 500  # the corpus does exercise the detectors
    assert compiled["findings"] == pure["findings"]


def test_this_process_uses_the_build_with_its_own_module_names():
    _require_build()
    assert detectors.Detector.__module__ == "transforms.pii.detectors"
    assert OfflineEngine.__module__ == "transforms.pii.offline"
    rng, fake = random.Random(3), new_faker()
    event = make_event(rng, fake, pii_share=1.0)
    redaction = OfflineEngine().redact([event.prompt.text])[0]
    assert redaction.counts  # the compiled engine redacts


def _package_copy(tmp_path: Path) -> Path:
    package = tmp_path / "pii"
    package.mkdir()
    for name in COMPILED_MODULES:
        (package / f"{name}.py").write_text(f"# {name}\n")
    return package


def _write_manifest(package: Path, **manifest) -> None:
    (package / COMPILED_DIR).mkdir(exist_ok=True)
    (package / COMPILED_DIR / MANIFEST).write_text(json.dumps(manifest))


def test_a_build_is_used_only_while_it_matches_every_source(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("GENAI_PURE_PYTHON", raising=False)
    package = _package_copy(tmp_path)
    assert compiled_dir(package) is None  # never built

    _write_manifest(
        package, cache_tag=sys.implementation.cache_tag, sources=source_digests(package)
    )
    assert compiled_dir(package) == str(package / COMPILED_DIR)

    monkeypatch.setenv("GENAI_PURE_PYTHON", "1")
    assert compiled_dir(package) is None  # switched off
    monkeypatch.delenv("GENAI_PURE_PYTHON")

    (package / f"{COMPILED_MODULES[0]}.py").write_text("# edited after the build\n")
    assert compiled_dir(package) is None  # stale: the edited source runs
    assert "older than their sources" in caplog.text


def test_a_build_for_another_python_or_a_broken_manifest_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv("GENAI_PURE_PYTHON", raising=False)
    package = _package_copy(tmp_path)
    _write_manifest(package, cache_tag="cpython-39", sources=source_digests(package))
    assert compiled_dir(package) is None
    (package / COMPILED_DIR / MANIFEST).write_text("{not json")
    assert compiled_dir(package) is None
