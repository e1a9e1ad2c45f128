"""Log hygiene: no field value reaches a log line, at any level, DEBUG included.

The project's own code never logs a value (only counts, step names, types of errors), but the
libraries it runs on do: Beam's workers log every element they process at DEBUG (``Processing
[<element>] in <operation>``), and an exception message from a library (a database's
constraint error, an encoder's validation error) may quote a row. ``install`` puts a record
factory in front of every logger (``logging.setLogRecordFactory``), so what a handler, a log
capture or a cloud logging agent receives is already clean:

* a record of another library below INFO keeps its message template, its arguments withheld
  (``Processing [<withheld>] in <withheld>``);
* every message, exception text and stack text goes through the offline redaction engine, so
  any PII or secret shaped value still in it becomes ``[INFO_TYPE]`` (the exception itself is
  dropped from the record: handlers get its redacted text only).

What stays: the project's messages (flags, paths, counts, step names and the allowlisted
dimensions, model and region, which are metric keys), and other libraries' INFO and above
with PII scrubbed. ``pipelines.launch.configure_logging`` installs it; installing twice is a
no-op.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback

__all__ = ["PROJECT_LOGGERS", "WITHHELD", "install", "sanitize"]

PROJECT_LOGGERS: tuple[str, ...] = ("pipelines", "transforms", "schemas", "templates")
WITHHELD = "<withheld>"
_ARGUMENT = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
_INSTALLED = "_genai_log_hygiene"


class _Scrubber:
    """The offline engine, built on first use, shared by the threads that log (a lock: it is
    not thread-safe; logging is rare enough)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._engine = None

    def __call__(self, text: str) -> str:
        if not text or getattr(self._local, "busy", False):
            return text  # the engine itself logging while it is built: let it through
        self._local.busy = True
        try:
            with self._lock:
                if self._engine is None:
                    from transforms.pii.offline import OfflineEngine

                    self._engine = OfflineEngine()
                return self._engine.redact_text(text).text
        finally:
            self._local.busy = False


_scrub = _Scrubber()


def _is_project(name: str) -> bool:
    return name.split(".", 1)[0] in PROJECT_LOGGERS


def _withheld(record: logging.LogRecord) -> str:
    return _ARGUMENT.sub(lambda m: "%" if m.group() == "%%" else WITHHELD, str(record.msg))


def sanitize(record: logging.LogRecord) -> None:
    """Cleans ``record`` in place (see the module docstring)."""
    if record.args and record.levelno < logging.INFO and not _is_project(record.name):
        record.msg, record.args = _scrub(_withheld(record)), ()
    else:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the template: never show them
            record.msg, record.args = _scrub(_withheld(record)), ()
        else:
            scrubbed = _scrub(message)
            if scrubbed != message:  # else the record keeps its template and arguments
                record.msg, record.args = scrubbed, ()
    if record.exc_info and record.exc_info[0] is not None:
        record.exc_text = _scrub("".join(traceback.format_exception(*record.exc_info)).rstrip())
        record.exc_info = None
    if record.stack_info:
        record.stack_info = _scrub(record.stack_info)


def install() -> None:
    """Puts ``sanitize`` in front of every log record of this process (idempotent)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, _INSTALLED, False):
        return

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        sanitize(record)
        return record

    setattr(make_record, _INSTALLED, True)
    logging.setLogRecordFactory(make_record)
