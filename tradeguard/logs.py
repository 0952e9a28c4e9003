"""Logging: one loguru sink per channel, a stderr sink for the service log, and the standard
library's logging (pykka, quickfix, ib_insync, asyncio) routed into loguru.

A record names its channel with ``logger.bind(channel="safety")``; a record without one, or
with a channel not listed in ``CHANNELS``, goes to ``main``. Every sink is enqueued, so an
actor never blocks on a slow disk or terminal; ``logger.complete()`` waits for the queue.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from types import FrameType

    from loguru import Record

CHANNELS: tuple[str, ...] = ("main", "safety", "connectors", "governance")
"""Every log channel; each gets its own file ``<channel>.log``."""

DEFAULT_CHANNEL = "main"
"""Where records without a (known) channel go."""

ROTATION = "20 MB"
"""A channel file is rotated when it reaches this size."""

RETENTION = 5
"""Rotated files kept per channel."""

CONNECTOR_LOGGERS: tuple[str, ...] = ("ib_insync", "quickfix")
"""Standard-library loggers (and their children) whose records go to the connectors channel."""

_FORMAT = (
    "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {extra[channel]: <10} | "
    "{name}:{function}:{line} - {message}"
)

_lock = threading.Lock()
_sink_ids: list[int] = []
_default_sink: int | None = 0
"""loguru's default stderr sink while it is installed (setup removes it, shutdown restores it)."""
_intercept: InterceptHandler | None = None
_root_level: int | None = None


def channel_of(record: Record) -> str:
    """The channel a record belongs to."""
    channel = record["extra"].get("channel")
    return channel if channel in CHANNELS else DEFAULT_CHANNEL


def _only(channel: str) -> Any:
    def accept(record: Record) -> bool:
        return channel_of(record) == channel

    return accept


def _stdlib_channel(name: str) -> str:
    for prefix in CONNECTOR_LOGGERS:
        if name == prefix or name.startswith(prefix + "."):
            return "connectors"
    return DEFAULT_CHANNEL


class InterceptHandler(logging.Handler):
    """A standard-library handler that re-emits every record through loguru, on the
    connectors channel for ib_insync and quickfix and on main otherwise."""

    def emit(self, record: logging.LogRecord) -> None:
        """Pass ``record`` to loguru with its level, origin and exception."""
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Report where the logging call was made, not the logging module's own frames.
        frame: FrameType | None = sys._getframe(1)
        depth = 1
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        logger.bind(channel=_stdlib_channel(record.name), logger_name=record.name).opt(
            depth=depth, exception=record.exc_info
        ).log(level, record.getMessage())


def setup_logging(log_dir: Path | None, level: str = "INFO", stderr: bool = True) -> None:
    """Send logs to ``log_dir/<channel>.log`` (rotated) and, with ``stderr``, to standard
    error; route the standard library's logging into loguru. Calling it again replaces
    the sinks it added before (it never duplicates them)."""
    global _default_sink, _intercept, _root_level
    level = level.upper()
    logger.level(level)  # an unknown level name raises ValueError before anything changes
    with _lock:
        _remove_sinks()
        if _default_sink is not None:
            try:
                logger.remove(_default_sink)  # ours replace it
            except ValueError:
                pass  # already removed by someone else
            _default_sink = None
        logger.configure(extra={"channel": DEFAULT_CHANNEL})
        if stderr:
            _sink_ids.append(
                logger.add(sys.stderr, level=level, format=_FORMAT, enqueue=True, backtrace=False,
                           diagnose=False)
            )
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            for channel in CHANNELS:
                _sink_ids.append(
                    logger.add(
                        log_dir / f"{channel}.log", level=level, format=_FORMAT, filter=_only(channel),
                        rotation=ROTATION, retention=RETENTION, enqueue=True, backtrace=False,
                        diagnose=False, encoding="utf-8",
                    )
                )
        root = logging.getLogger()
        if _intercept is None:
            _intercept = InterceptHandler()
            _root_level = root.level
            root.addHandler(_intercept)
        root.setLevel(logger.level(level).no)


def shutdown_logging() -> None:
    """Flush every queued record, remove the sinks ``setup_logging`` added (restoring
    loguru's plain stderr sink) and stop routing the standard library's logging."""
    global _default_sink, _intercept, _root_level
    with _lock:
        logger.complete()
        _remove_sinks()
        if _default_sink is None:
            _default_sink = logger.add(_write_stderr)  # as loguru starts: last words still show
        root = logging.getLogger()
        if _intercept is not None:
            root.removeHandler(_intercept)
            _intercept = None
        if _root_level is not None:
            root.setLevel(_root_level)
            _root_level = None


def _write_stderr(message: str) -> None:
    # Looks sys.stderr up at each write, so a replaced or closed stream is never kept.
    sys.stderr.write(message)


def _remove_sinks() -> None:
    while _sink_ids:
        sink_id = _sink_ids.pop()
        try:
            logger.remove(sink_id)
        except ValueError:
            pass  # already removed by someone else
