"""Pipeline commands run as an unprivileged user, for the launch checks that permissions decide.

Tests run as root on this machine and in CI, and root may write a read-only directory and read
an unreadable file, so a check of permissions can only be seen failing as another user: the
command runs in a child process as ``nobody`` (``setpriv``), on a copy of the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

__all__ = ["run_unprivileged", "shared_tmp"]

_NOBODY = "65534"


def shared_tmp() -> str:
    """A new directory under the system temp dir that ``nobody`` can enter (pytest's own
    ``tmp_path`` is private to the user running the tests)."""
    path = tempfile.mkdtemp(prefix="genai-launch-")
    os.chmod(path, 0o755)
    return path


def run_unprivileged(module: str, args: list[str]) -> tuple[int, str]:
    """Runs ``python -m module args`` as ``nobody`` (as the current user when it is not root);
    returns the exit code and stderr."""
    command = [sys.executable, "-m", module, *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv to run a command as an unprivileged user")
        command = [setpriv, f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups", *command]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root, "HOME": "/tmp"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd="/tmp")
    return done.returncode, done.stderr
