"""deploy/tradeguard.service: the keys operations rely on, read from the file itself, and
its command line checked against the real argument parser and the shipped configs."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from tradeguard.cli import build_parser
from tradeguard.settings import ServiceConfig

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "tradeguard.service"


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as {section: {key: [values in order]}} (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        header = re.fullmatch(r"\[(\w+)\]", line)
        if header:
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None, f"line {number}: a key before any section"
        assert "=" in line, f"line {number}: not key=value: {line!r}"
        assert not line.endswith("\\"), f"line {number}: continuation lines are not used here"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    """The parsed unit file."""
    return parse_unit(UNIT.read_text())


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def _seconds(value: str) -> float:
    """A systemd time span in the forms used here: '30', '30s', '2min', '1min 30s'."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    total = 0.0
    for number, suffix in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[suffix]
    return total


def test_sections(unit: dict[str, dict[str, list[str]]]) -> None:
    assert set(unit) == {"Unit", "Service", "Install"}
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_start_limits_are_in_the_unit_section(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _seconds(_one(unit, "Unit", "StartLimitIntervalSec")) > 0
    assert int(_one(unit, "Unit", "StartLimitBurst")) >= 1
    assert "StartLimitIntervalSec" not in unit["Service"]  # ignored there by current systemd
    assert "StartLimitBurst" not in unit["Service"]


def test_notify_watchdog_and_restart(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _one(unit, "Service", "Type") == "notify"
    assert _one(unit, "Service", "NotifyAccess") == "main"
    # The loop pings every second at most; systemd's timeout must leave room for that.
    assert _seconds(_one(unit, "Service", "WatchdogSec")) >= 5
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert _seconds(_one(unit, "Service", "RestartSec")) > 0
    assert "2" in _one(unit, "Service", "RestartPreventExitStatus").split()  # bad configuration
    assert _seconds(_one(unit, "Service", "TimeoutStartSec")) > ServiceConfig().start_timeout_s


def test_stop_is_sigterm_with_room_for_a_shutdown_flatten(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _one(unit, "Service", "KillSignal") == "SIGTERM"
    stop_s = _seconds(_one(unit, "Service", "TimeoutStopSec"))
    live = tomllib.loads((ROOT / "config" / "live.example.toml").read_text())
    for shutdown_s in (ServiceConfig().shutdown_timeout_s, live["service"]["shutdown_timeout_s"]):
        assert stop_s >= shutdown_s + 30, "TimeoutStopSec must cover the flatten plus the tree's stop"


def test_command_line_state_and_secrets(unit: dict[str, dict[str, list[str]]]) -> None:
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert argv[0].startswith("/") and argv[0].endswith("/tradeguard")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.state_dir == "/var/lib/tradeguard"
    assert args.config and args.config.startswith("/etc/tradeguard/")
    assert _one(unit, "Service", "StateDirectory") == "tradeguard"
    assert _one(unit, "Service", "StateDirectoryMode") == "0700"
    assert "-/etc/tradeguard/tradeguard.env" in unit["Service"]["EnvironmentFile"]
    user = unit["Service"].get("User", [""])[-1]
    assert user == "tradeguard" or unit["Service"].get("DynamicUser") == ["yes"]
    assert user != "root"


@pytest.mark.parametrize(("key", "value"), [
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictRealtime", "yes"),
    ("RestrictNamespaces", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("SystemCallArchitectures", "native"),
    ("CapabilityBoundingSet", ""),
    ("UMask", "0077"),
])
def test_hardening(unit: dict[str, dict[str, list[str]]], key: str, value: str) -> None:
    assert _one(unit, "Service", key) == value


def test_network_and_system_calls(unit: dict[str, dict[str, list[str]]]) -> None:
    families = _one(unit, "Service", "RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert all(f.startswith("~") for f in filters[1:]), "later filters may only take calls away"
    denied = {group for f in filters[1:] for group in f.lstrip("~").split()}
    # libzmq calls sched_setscheduler in each I/O thread and aborts when it is refused.
    assert "@resources" not in denied
