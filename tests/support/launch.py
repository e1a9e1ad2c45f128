"""Pipeline commands run as an unprivileged user, for the launch checks that permissions decide.

Tests run as root on this machine and in CI, and root may write a read-only directory and read
an unreadable file, so a check of permissions can only be seen failing without that power: the
command runs in a child process as root without the capabilities that bypass file permissions
(``setpriv``: ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` dropped), on a copy of the
environment. Still root's files, so it runs from a checkout in a directory only root can enter
(``mktemp -d``), where another user could not even start Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

__all__ = ["run_unprivileged", "shared_tmp"]


def shared_tmp() -> str:
    """A new directory under the system temp dir, open to every user (as a shared folder is)."""
    path = tempfile.mkdtemp(prefix="genai-launch-")
    os.chmod(path, 0o755)
    return path


def run_unprivileged(module: str, args: list[str]) -> tuple[int, str]:
    """Runs ``python -m module args`` subject to file permissions (root without the capabilities
    that bypass them; the current user as it is when it is not root); returns the exit code and
    stderr."""
    command = [sys.executable, "-m", module, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is needed to run a command without root's powers")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={drop}", "--inh-caps=-all", *command]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root, "HOME": "/tmp"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd="/tmp")
    return done.returncode, done.stderr
