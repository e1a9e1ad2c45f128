"""PII redaction engines. See ``transforms.pii.compiled`` for the optional compiled build."""

from pathlib import Path

from transforms.pii.compiled import compiled_dir

_compiled = compiled_dir(Path(__file__).parent)
if _compiled is not None:
    __path__.insert(0, _compiled)  # the package's own __path__: the build is searched first
