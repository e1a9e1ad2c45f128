"""Logging for tests that look at every log record."""

from __future__ import annotations

import logging

from pipelines.launch import configure_logging


def everything_at_debug() -> None:
    """Logging as the commands configure it (``configure_logging``, as their ``__main__``
    does), then every logger at DEBUG."""
    configure_logging()
    logging.getLogger().setLevel(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        if logger.level > logging.DEBUG:
            logger.setLevel(logging.DEBUG)
