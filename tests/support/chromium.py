"""Headless Chromium for the tests that open the HTML report: Debian's ``chromium`` (the
Makefile's ``test`` target installs it), run with a throw-away profile and no network.

``open_page`` loads a local file, lets its scripts run, and returns the DOM they left and the
console messages the page logged; ``screenshot`` writes a PNG of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest

__all__ = ["Page", "chromium", "figure_traces", "open_page", "plot_traces", "screenshot"]

TIMEOUT_S = 120
# Virtual time the page gets to run its scripts before the DOM is taken (plotly draws at once).
_BUDGET_MS = "15000"
# Chromium logs each console message of the page (console.*, uncaught errors) as a CONSOLE line.
_CONSOLE = re.compile(r":CONSOLE(?::|\()\d+\)?\] (.*)")


def chromium() -> str:
    """The Chromium binary; skips the test when it is missing, except in CI (make test
    installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (make test installs it: apt-get install)")
        pytest.skip("chromium is not installed (make test installs it)")
    return found


def _run(path: Path, *flags: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        return subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                f"--virtual-time-budget={_BUDGET_MS}",
                *flags,
                path.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )


class Page(NamedTuple):
    dom: str  # the document after its scripts ran
    console: list[str]  # what the page logged (errors included); Chromium's own lines left out


def open_page(path: Path) -> Page:
    done = _run(path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [m.group(1) for line in done.stderr.splitlines() if (m := _CONSOLE.search(line))]
    return Page(done.stdout, console)


def screenshot(path: Path, png: Path, width: int = 1400, height: int = 2200) -> None:
    done = _run(path, f"--screenshot={png}", f"--window-size={width},{height}", "--hide-scrollbars")
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]


def plot_traces(dom: str) -> dict[str, list[bool]]:
    """For each plotly chart (``div id="chart-<name>"``), whether each trace drawn holds a mark
    (a path with a non-empty outline). Plotly draws no group at all for a trace without data:
    compare the count with ``figure_traces``."""
    charts = {}
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<div id="chart-([\w-]+)"', dom)]
    for (start, name), (end, _) in zip(starts, [*starts[1:], (len(dom), "")], strict=True):
        chunk = dom[start:end]
        groups = re.split(r'<g class="trace ', chunk)[1:]
        charts[name] = [bool(re.search(r'<path[^>]* d="M[^"]{3,}"', g)) for g in groups]
    return charts


def figure_traces(html: str) -> dict[str, list[int]]:
    """For each chart of the HTML source, the number of points of each trace it was given
    (the data of its ``Plotly.newPlot`` call)."""
    decoder = json.JSONDecoder()
    charts = {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"chart-([\w-]+)",\s*', html):
        data, _ = decoder.raw_decode(html, match.end())
        charts[match.group(1)] = [len(trace.get("x") or ()) for trace in data]
    return charts
