"""Forwarding module, kept only for ``benchmarks/dlp_hybrid.py``: the fake of Cloud DLP lives in
``tests/support/dlp_fake.py``. Delete this module once that benchmark imports
``tests.support.dlp_fake``."""

from tests.support.dlp_fake import DEIDENTIFY_TEMPLATE, INSPECT_TEMPLATE, PROJECT, FakeDlp

__all__ = ["DEIDENTIFY_TEMPLATE", "INSPECT_TEMPLATE", "PROJECT", "FakeDlp"]
