"""What a DoFn needs to redact: which engine, its options, which pseudonym key.

Resolved on the worker. This module stays light (no client libraries): the pipelines validate
these settings at launch without importing the DLP client.
"""

from __future__ import annotations

import re
import threading
from typing import Any, NamedTuple

from transforms.pii import logs as log_hygiene
from transforms.pii.engine import RedactionEngine, build_engine
from transforms.pii.pseudonym import load_key

__all__ = ["DLP_ENGINES", "NO_ESCALATION", "DlpOptions", "RedactionSettings"]

# Engines that call Cloud DLP and take ``DlpOptions``.
DLP_ENGINES: tuple[str, ...] = ("dlp", "hybrid")
# ``escalate_class`` value that turns escalation off.
NO_ESCALATION = "none"

_TEMPLATE = re.compile(
    r"(?:projects|organizations)/[^/]+/(?:locations/(?P<location>[^/]+)/)?"
    r"(?P<kind>inspectTemplates|deidentifyTemplates)/[^/]+"
)
_LOCATION = re.compile(r"[a-z0-9-]+")
_ENDPOINT = re.compile(r"[A-Za-z0-9.\-]+(?::\d+)?|\[[0-9A-Fa-f:]+\](?::\d+)?")

# Engines are built once per worker thread, not once per DoFn instance: some runners (the
# DirectRunner in streaming) call setup() for every bundle, and building the offline engine
# compiles its pattern database (~80 ms). Per thread, because a compiled scanner keeps
# scratch space that concurrent scans must not share.
_PER_THREAD = threading.local()


class DlpOptions(NamedTuple):
    """How the ``dlp`` and ``hybrid`` engines call Cloud DLP (flags ``--dlp_<field>``).

    Attributes:
      project: project that is billed and whose quota is used (the request parent).
      location: processing location (``global`` or a region such as ``europe-west3``); the
        parent is ``projects/<project>/locations/<location>``. Templates must live there.
      inspect_template: resource name of the inspect template (which info types to find).
      deidentify_template: resource name of the de-identify template; it must replace each
        finding with its info type (``replace_with_info_type_config``).
      endpoint: API host[:port]; empty for ``dlp.googleapis.com``. A regional endpoint
        (``dlp.<region>.rep.googleapis.com``) keeps data in the region. A loopback host
        (``127.0.0.1:9071``) is called over plaintext without credentials: a test fake.
      requests_per_minute: client-side limit per worker process, shared by its threads.
      escalate_class: hybrid only: events whose gateway policy flags classify at or above this
        class (classification policy) send every text to DLP; ``none`` turns this off.
    """

    project: str = ""
    location: str = "global"
    inspect_template: str = ""
    deidentify_template: str = ""
    endpoint: str = ""
    requests_per_minute: int = 60
    escalate_class: str = "RESTRICTED"

    def engine_options(self) -> dict[str, Any]:
        """Keyword options of the DLP engines (escalation is applied by the caller)."""
        options = self._asdict()
        del options["escalate_class"]
        return options

    def problems(self) -> list[str]:
        """What is wrong with these options for a DLP engine (empty when they are fine)."""
        found = []
        if not self.project or "/" in self.project:
            found.append("--dlp_project is required (the project billed for DLP)")
        if not _LOCATION.fullmatch(self.location):
            found.append("--dlp_location must be 'global' or a region such as europe-west3")
        for flag, value, kind in (
            ("--dlp_inspect_template", self.inspect_template, "inspectTemplates"),
            ("--dlp_deidentify_template", self.deidentify_template, "deidentifyTemplates"),
        ):
            match = _TEMPLATE.fullmatch(value)
            if not match or match["kind"] != kind:
                found.append(
                    f"{flag} must be a resource name such as "
                    f"projects/<project>/locations/<location>/{kind}/<id>"
                )
            elif (match["location"] or "global") != self.location:
                found.append(f"{flag} must be in --dlp_location {self.location!r}")
        if self.endpoint and not _ENDPOINT.fullmatch(self.endpoint):
            found.append("--dlp_endpoint must be host[:port] without a scheme")
        if self.requests_per_minute <= 0:
            found.append("--dlp_requests_per_minute must be > 0")
        return found


class RedactionSettings(NamedTuple):
    """Picklable redaction configuration; ``open()`` builds the engine and loads the key.

    Attributes:
      engine: engine name for ``build_engine`` (``offline`` by default).
      pseudonym_key: key reference for ``load_key`` (``env:NAME``, ``file:PATH`` or
        ``secret:projects/P/secrets/S/versions/V``); the key itself never travels in the
        pipeline graph.
      dlp: options of the DLP engines; ignored by the others.
    """

    engine: str = "offline"
    pseudonym_key: str = "env:GENAI_PSEUDONYM_KEY"
    dlp: DlpOptions = DlpOptions()

    def engine_options(self) -> dict[str, Any]:
        """The keyword options ``build_engine`` gets for ``engine``."""
        return self.dlp.engine_options() if self.engine in DLP_ENGINES else {}

    def build(self) -> RedactionEngine:
        """A new engine (validates its options; a DLP engine connects on first use only)."""
        return build_engine(self.engine, **self.engine_options())

    def open(self) -> tuple[RedactionEngine, bytes]:
        """Returns (engine, key bytes), reusing this thread's engine for the same settings.

        Also installs the log hygiene (``transforms.pii.logs``) in this process: every worker
        that handles clear text (a DoFn opening these settings in ``setup``) has it, whoever
        configured its logging (Dataflow's harness, a local worker process).
        """
        log_hygiene.install()
        cache: dict = _PER_THREAD.__dict__.setdefault("opened", {})
        opened = cache.get(self)
        if opened is None:
            opened = cache[self] = (self.build(), load_key(self.pseudonym_key))
        return opened
