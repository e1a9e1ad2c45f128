"""``python -m pipelines.verify`` as the end-to-end scenarios run it: every scenario ends with
the stores checked against the archive."""

from __future__ import annotations

from pipelines import verify

__all__ = ["assert_verified", "verify_output"]


def assert_verified(root, *extra: str) -> None:
    """``verify`` over the embedded stores under ``root`` (plus ``extra`` flags) finds the
    metrics and the audit log equal to what the archive says."""
    code = verify.run(["--output_root", str(root), *extra])
    assert code == 0, "verify found differences (printed above)"


def verify_output(root, capsys, *extra: str) -> tuple[int, str]:
    """``verify``'s exit code and what it printed."""
    capsys.readouterr()
    code = verify.run(["--output_root", str(root), *extra])
    return code, capsys.readouterr().out
