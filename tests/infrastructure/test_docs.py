"""The documentation against the repository: README.md and every ``docs/**/*.md``.

Checks what a reader would otherwise find broken: relative links that lead nowhere, ``make``
targets the Makefile does not have, ``python -m`` modules that do not import or whose ``--help``
fails, paths that leave the repository, a README that has grown past its front-door size, and
flags of the pipelines that neither README nor docs/ document.
No service is needed; ``--help`` runs use this interpreter from the repository root.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import backfill, replay, retention, streaming, verify
from pipelines.local.options import LocalPubsubOptions, SyntheticSourceOptions

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250
HELP_TIMEOUT_S = 60

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# [text](target) and ![alt](target); target up to whitespace or the closing parenthesis.
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_MAKE = re.compile(r"(?:^|[\s;(&|`$])make[ \t]+([^\n#;&|`)]*)")
_PYTHON_M = re.compile(r"(?:^|[\s/;(&|`])python[0-9.]*[ \t]+-m[ \t]+([A-Za-z_][\w.]*)")
_PARENT = re.compile(r"(?:\.\./)+[^\s)\]`'\"<>]*")
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+):", re.MULTILINE)


def doc_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_parts(text: str) -> list[str]:
    """The fenced code blocks and the inline code spans of a Markdown text."""
    blocks = [m.group(0) for m in _FENCE.finditer(text)]
    prose = _FENCE.sub("", text)
    return blocks + [m.group(2) for m in _CODE_SPAN.finditer(prose)]


def prose_of(text: str) -> str:
    """A Markdown text without its code blocks and code spans (where links live)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    prose = prose_of(text)
    return _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose)


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def make_targets_named(text: str) -> list[str]:
    """Targets of every ``make`` command in the code of ``text`` (``VAR=value`` and options
    are not targets)."""
    targets = []
    for code in code_parts(text):
        for match in _MAKE.finditer(code):
            for word in match.group(1).split():
                if word.startswith("-") or "=" in word or word == "\\":
                    continue
                targets.append(word)
    return targets


def modules_named(text: str) -> list[str]:
    """Modules of every ``python -m`` command in the code of ``text``."""
    return [m.rstrip(".") for code in code_parts(text) for m in _PYTHON_M.findall(code)]


@functools.cache
def makefile_targets() -> frozenset[str]:
    return frozenset(_MAKE_TARGET.findall((ROOT / "Makefile").read_text(encoding="utf-8")))


@functools.cache
def help_result(module: str) -> tuple[int, str]:
    """``python -m module --help`` from the repository root: (exit code, output tail)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=HELP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, f"no answer within {HELP_TIMEOUT_S} s"
    return done.returncode, (done.stdout + done.stderr)[-2000:]


def _all_modules() -> list[str]:
    return sorted({m for f in doc_files() for m in modules_named(f.read_text(encoding="utf-8"))})


def parent_paths(text: str) -> list[str]:
    """Every ``../`` path in ``text`` (prose and code), without trailing punctuation."""
    return [found.rstrip(".,;:") for found in _PARENT.findall(text)]


def _inside_repository(path: Path) -> bool:
    return path.resolve() == ROOT or ROOT in path.resolve().parents


@pytest.mark.parametrize("doc", doc_files(), ids=_name)
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if not target or target.startswith("#") or _is_external(target):
            continue
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if file_part.startswith("/"):
            broken.append(f"{target} (absolute path)")
        elif not (doc.parent / file_part).exists():
            broken.append(target)
    assert not broken, f"{_name(doc)}: links to nothing: {broken}"


@pytest.mark.parametrize("doc", doc_files(), ids=_name)
def test_make_targets_exist(doc):
    """Every ``make`` target named in code exists; a pattern (``make template-*``) must match
    at least one."""
    named = set(make_targets_named(doc.read_text(encoding="utf-8")))
    unknown = sorted(t for t in named if not fnmatch.filter(makefile_targets(), t))
    assert not unknown, f"{_name(doc)}: `make` targets the Makefile lacks: {unknown}"


@pytest.mark.parametrize("module", _all_modules())
def test_python_m_modules_answer_help(module):
    where = [_name(f) for f in doc_files() if module in modules_named(f.read_text("utf-8"))]
    code, output = help_result(module)
    assert code == 0, f"{', '.join(where)}: `python -m {module} --help` exited {code}:\n{output}"


@pytest.mark.parametrize("doc", doc_files(), ids=_name)
def test_nothing_points_outside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    outside = [
        found
        for found in parent_paths(text)
        if not _inside_repository(doc.parent / found.split("#", 1)[0])
    ]
    outside += [t for t in links(text) if t.startswith(("/", "file:"))]
    assert not outside, f"{_name(doc)}: points outside the repository: {outside}"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, at most {README_MAX_LINES}: move detail to docs/"
    )


def test_every_docs_page_is_linked_from_the_readme_or_the_adr_index():
    def linked_from(page: Path) -> set[Path]:
        text = page.read_text(encoding="utf-8")
        return {
            (page.parent / t.split("#", 1)[0]).resolve()
            for t in links(text)
            if t and not t.startswith("#") and not _is_external(t)
        }

    reachable = linked_from(README)
    adr_index = DOCS / "adr" / "README.md"
    if adr_index.exists():
        reachable |= linked_from(adr_index)
    orphans = [_name(p) for p in sorted(DOCS.rglob("*.md")) if p.resolve() not in reachable]
    assert not orphans, f"docs pages no reader can reach from README.md: {orphans}"


def test_the_docs_document_every_option():
    root = ROOT
    readme = "\n".join(
        path.read_text() for path in [root / "README.md", *sorted(root.glob("docs/**/*.md"))]
    )
    parsers = [retention._parser()]
    for options in (
        streaming.StreamingOptions,
        SyntheticSourceOptions,
        LocalPubsubOptions,
        backfill.BackfillOptions,
        replay.ReplayOptions,
        verify.VerifyOptions,
    ):
        parser = argparse.ArgumentParser()
        options._add_argparse_args(parser)
        parsers.append(parser)
    for parser in parsers:
        for action in parser._actions:
            for flag in action.option_strings:
                if flag != "-h" and flag != "--help":
                    assert f"`{flag}" in readme, f"neither README nor docs/ document {flag}"


# The checks above must be able to fail: the parsers on known snippets.


def test_parsers_find_what_they_check():
    text = (
        "See [a](docs/x.md#part) and ![b](img.png), not `[c](inside-code.md)`.\n"
        "[ref]: docs/y.md\n"
        "```bash\nmake run RATE=1000 DURATION_S=120\nmake -s stack-up   # note\n"
        ".venv/bin/python -m pipelines.backfill --input x\n```\n"
        "Run `make test-unit`, or `python3 -m tests.stack.local_stack up`; see ../outside.md.\n"
    )
    assert links(text) == ["docs/x.md#part", "img.png", "docs/y.md"]
    assert make_targets_named(text) == ["run", "stack-up", "test-unit"]
    assert modules_named(text) == ["pipelines.backfill", "tests.stack.local_stack"]
    assert parent_paths(text) == ["../outside.md"]
    assert not _inside_repository(README.parent / "../outside.md")


MODULE_MAX_LINES = 650  # the layout's "about 600 lines"
LENGTH_REASON = "Length (over 600 lines):"


def test_long_modules_state_why_at_their_top():
    """A module of the repository over the layout's size says at the top of its docstring why
    it stays one module (issue 19's layout rule)."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    unexplained = []
    for name in tracked:
        source = (ROOT / name).read_text(encoding="utf-8")
        if source.count("\n") <= MODULE_MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(source)) or ""
        if LENGTH_REASON not in docstring:
            unexplained.append(name)
    assert not unexplained, f"over {MODULE_MAX_LINES} lines without a stated reason: {unexplained}"
