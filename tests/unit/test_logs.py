"""Logging channels: every record lands in its channel's file and only there; the standard
library's logging is routed in; setting up twice does not duplicate anything."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from tradeguard import logs
from tradeguard.logs import CHANNELS, setup_logging, shutdown_logging


@pytest.fixture
def log_dir(tmp_path: Path) -> Iterator[Path]:
    """Logging set up into a fresh directory, shut down after the test."""
    directory = tmp_path / "logs"
    setup_logging(directory, level="DEBUG", stderr=False)
    yield directory
    shutdown_logging()


def _marker() -> str:
    return f"marker-{uuid.uuid4().hex}"


def _read(directory: Path, channel: str) -> str:
    logger.complete()
    path = directory / f"{channel}.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _where(directory: Path, text: str) -> list[str]:
    """The channels whose file contains ``text``."""
    return [channel for channel in CHANNELS if text in _read(directory, channel)]


def test_every_channel_has_its_own_file(log_dir: Path) -> None:
    markers = {channel: _marker() for channel in CHANNELS}
    for channel, marker in markers.items():
        logger.bind(channel=channel).info(marker)
    for channel, marker in markers.items():
        assert _where(log_dir, marker) == [channel]
    assert sorted(p.name for p in log_dir.iterdir()) == sorted(f"{c}.log" for c in CHANNELS)


def test_record_without_a_known_channel_goes_to_main(log_dir: Path) -> None:
    plain, unknown = _marker(), _marker()
    logger.info(plain)
    logger.bind(channel="no-such-channel").warning(unknown)
    assert _where(log_dir, plain) == ["main"]
    assert _where(log_dir, unknown) == ["main"]


def test_structured_fields_and_level_are_written(log_dir: Path) -> None:
    marker = _marker()
    logger.bind(channel="governance", mode="FAILSAFE").error(marker)
    line = next(line for line in _read(log_dir, "governance").splitlines() if marker in line)
    assert "ERROR" in line
    assert "governance" in line


def test_stdlib_records_from_ib_insync_land_in_connectors(log_dir: Path) -> None:
    marker = _marker()
    logging.getLogger("ib_insync.client").warning("%s from the client", marker)
    assert _where(log_dir, marker) == ["connectors"]
    line = next(line for line in _read(log_dir, "connectors").splitlines() if marker in line)
    assert f"{marker} from the client" in line
    assert "WARNING" in line
    # The location is the logging call, not the logging module.
    assert "test_stdlib_records_from_ib_insync_land_in_connectors" in line


@pytest.mark.parametrize(
    ("name", "channel"),
    [("quickfix", "connectors"), ("ib_insync", "connectors"), ("pykka", "main"), ("asyncio", "main"),
     ("ib_insync_like", "main")],
)
def test_stdlib_loggers_are_routed_by_name(log_dir: Path, name: str, channel: str) -> None:
    marker = _marker()
    logging.getLogger(name).error(marker)
    assert _where(log_dir, marker) == [channel]


def test_exceptions_carry_their_traceback(log_dir: Path) -> None:
    loguru_marker, stdlib_marker = _marker(), _marker()
    try:
        raise RuntimeError("venue session lost")
    except RuntimeError:
        logger.bind(channel="safety").exception(loguru_marker)
        logging.getLogger("quickfix").exception(stdlib_marker)
    safety, connectors = _read(log_dir, "safety"), _read(log_dir, "connectors")
    assert loguru_marker in safety and "RuntimeError: venue session lost" in safety
    assert stdlib_marker in connectors and "RuntimeError: venue session lost" in connectors


def test_setting_up_twice_does_not_duplicate(log_dir: Path) -> None:
    setup_logging(log_dir, level="DEBUG", stderr=False)
    loguru_marker, stdlib_marker = _marker(), _marker()
    logger.bind(channel="safety").info(loguru_marker)
    logging.getLogger("ib_insync.wrapper").warning(stdlib_marker)
    assert _read(log_dir, "safety").count(loguru_marker) == 1
    assert _read(log_dir, "connectors").count(stdlib_marker) == 1
    intercepts = [h for h in logging.getLogger().handlers if isinstance(h, logs.InterceptHandler)]
    assert len(intercepts) == 1


def test_level_filters_records(tmp_path: Path) -> None:
    setup_logging(tmp_path, level="warning", stderr=False)
    try:
        quiet, loud = _marker(), _marker()
        logger.bind(channel="safety").info(quiet)
        logging.getLogger("ib_insync").info(quiet)
        logger.bind(channel="safety").warning(loud)
        assert _where(tmp_path, quiet) == []
        assert _where(tmp_path, loud) == ["safety"]
    finally:
        shutdown_logging()


def test_unknown_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        setup_logging(tmp_path, level="LOUD", stderr=False)
    assert not (tmp_path / "main.log").exists()


def test_shutdown_flushes_and_detaches(tmp_path: Path) -> None:
    setup_logging(tmp_path, level="DEBUG", stderr=False)
    before = _marker()
    logger.bind(channel="safety").info(before)
    shutdown_logging()  # flushes the queue itself

    after = _marker()
    logger.bind(channel="safety").info(after)
    logging.getLogger("quickfix").error(after)

    assert before in (tmp_path / "safety.log").read_text(encoding="utf-8")
    assert _where(tmp_path, after) == []
    assert not any(isinstance(h, logs.InterceptHandler) for h in logging.getLogger().handlers)


def test_channel_files_rotate_and_old_ones_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "ROTATION", "2 KB")
    monkeypatch.setattr(logs, "RETENTION", 2)
    setup_logging(tmp_path, level="DEBUG", stderr=False)
    try:
        for i in range(200):
            logger.bind(channel="connectors").info(f"filler line {i:04d} " + "x" * 60)
        logger.complete()
    finally:
        shutdown_logging()
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("connectors"))
    assert "connectors.log" in files
    assert 2 <= len(files) <= 3  # the live file and at most RETENTION rotated ones
    assert all(p.stat().st_size < 4096 for p in tmp_path.iterdir() if p.name.startswith("connectors"))


def test_stderr_sink_shows_the_channel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(None, level="INFO", stderr=True)
    try:
        marker = _marker()
        logger.bind(channel="safety").warning(marker)
        logger.complete()
    finally:
        shutdown_logging()
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if marker in line)
    assert "safety" in line and "WARNING" in line
    assert list(tmp_path.iterdir()) == []
