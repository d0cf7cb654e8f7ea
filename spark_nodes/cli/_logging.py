"""How the command line configures structlog (the library itself never does)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final, TextIO, cast

import structlog

__all__ = ["FORMATS", "LEVELS", "add_logging_options", "configure_logging"]

LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("console", "json")


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write.

    structlog's ``PrintLogger`` keeps the file it was given; a live display (rich's
    ``Live``) replaces ``sys.stderr`` while it runs, to print log lines above itself.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_STDERR: Final = _CurrentStderr()


def add_logging_options(parser: argparse.ArgumentParser, *, level: str = "info") -> None:
    """Add ``--log-level`` (default ``level``) and ``--log-format console|json``."""
    parser.add_argument(
        "--log-level", choices=LEVELS, default=level, help="log this and above (%(default)s)"
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="console",
        help="log lines on stderr: readable, or one JSON object per line (%(default)s)",
    )


def configure_logging(level: str, log_format: str = "console") -> None:
    """Log to stderr at ``level`` and above, readable (``console``) or one JSON per line."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _STDERR)),
        cache_logger_on_first_use=False,
    )
