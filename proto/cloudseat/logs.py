"""structlog, configured once per program: context variables first, console on a terminal, JSON otherwise."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import structlog

from cloudseat import settings
from cloudseat.settings import setting

FORMATS = ("auto", "console", "json")
LEVELS = ("debug", "info", "warning", "error")


def configure(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog (and route the standard library's logging through the same renderer)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


@dataclasses.dataclass(frozen=True, slots=True)
class LogConfig:
    """The log flags every program takes (cloudseat.settings derives them)."""

    log_format: str = setting(
        "auto",
        "log lines on stderr: auto (console on a terminal, else JSON), console or json",
        choices=FORMATS,
        parse=str.lower,
    )
    log_level: str = setting("info", "the least severe level logged", choices=LEVELS, parse=str.lower)


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--log-format and --log-level, with CLOUDSEAT_LOG_FORMAT and CLOUDSEAT_LOG_LEVEL."""
    settings.add_arguments(parser, LogConfig)


def configure_from(args: argparse.Namespace) -> None:
    """Configure logging from the flags add_arguments() added."""
    cfg: LogConfig = settings.build(LogConfig, args)
    configure(cfg.log_format, cfg.log_level)
