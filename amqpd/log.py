"""structlog set-up for the amqpd process: one line per event on stderr.

Rules of this module:
- ``console`` is for people (``2026-11-23T19:30:00Z [info] amqpd ready, listening on ...``);
  ``json`` is one JSON object per line for machines (``{"event": ..., "listeners": [...]}``).
- Only the process edge calls ``configure_logging``; library code just calls
  ``structlog.get_logger`` and inherits whatever the process set up (structlog's defaults in
  tests).
- Lines are flushed as they are written: the pytest plugin and the interop tests wait for the
  ready line on a pipe.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(
    fmt: LogFormat = "console", level: str = "info", stream: TextIO | None = None
) -> None:
    out = stream if stream is not None else sys.stderr
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        # A plain string traceback: dict_tracebacks would dump frame locals (message bodies).
        tracebacks: list[structlog.typing.Processor] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        tracebacks = []  # the console renderer formats exc_info itself
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
