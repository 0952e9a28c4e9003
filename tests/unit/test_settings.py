"""Configuration: the shipped files load; a bad file is refused naming the bad field."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from actors.connectors.paper import PaperConfig
from actors.errors import ConfigError
from tradeguard.settings import (
    DEFAULT_CONFIG,
    LIVE_ENV,
    LIVE_VALUE,
    load_settings,
    parse_settings,
    resolve_state_dir,
)

ROOT = Path(__file__).resolve().parents[2]
PAPER = {"connectors": [{"name": "paper", "kind": "paper", "symbols": ["AAPL"]}]}


def test_embedded_default_is_the_paper_venue_with_the_sample_strategy() -> None:
    settings = load_settings()
    assert Path(str(DEFAULT_CONFIG)).parent == ROOT / "tradeguard"
    assert settings.service.mode == "paper"
    [connector] = settings.connector_configs()
    assert isinstance(connector, PaperConfig)
    assert [s.name for s in settings.strategies] == ["sample"]
    assert settings.risk.max_position == Decimal("200")


def test_the_example_paper_config_is_the_packaged_default() -> None:
    assert (ROOT / "config" / "paper.toml").read_bytes() == DEFAULT_CONFIG.read_bytes()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.toml")))
def test_every_shipped_config_loads(name: str) -> None:
    environ = {LIVE_ENV: LIVE_VALUE, "TRADEGUARD_FIX_STRAT1_PASSWORD": "x"}  # order-entry.toml's secret
    settings = load_settings(ROOT / "config" / name, environ=environ)
    assert settings.connector_configs()


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({**PAPER, "risk": {"max_position": "lots"}}, "risk.max_position"),
        ({**PAPER, "risk": {"max_open_positions": "3"}}, "risk.max_open_positions"),
        ({**PAPER, "risk": {"max_positon": "3"}}, "risk"),
        ({**PAPER, "service": {"on_shutdown": "panic"}}, "service.on_shutdown"),
        ({"connectors": [{"name": "paper", "kind": "paper", "symbols": "AAPL"}]}, "connectors[0].symbols"),
        ({"connectors": [{"name": "x", "kind": "carrier-pigeon"}]}, "connectors[0].kind"),
        ({"connectors": [{"name": "x"}]}, "connectors[0].kind"),
        ({"connectors": [{"name": "p", "kind": "paper", "colour": 1}]}, "connectors[0]"),
        ({"connectors": []}, "connectors"),
        ({"connectors": [{"name": "risk_governor", "kind": "paper"}]}, "connectors[0].name"),
        ({**PAPER, "strategies": [{"name": "s", "venue": "nowhere"}]}, "strategies[0].venue"),
        ({**PAPER, "strategies": [{"name": "s", "venue": "paper", "symbols": ["TSLA"]}]},
         "strategies[0].symbols"),
        ({**PAPER, "service": {"mode": "live"}}, "service.mode"),
    ],
)
def test_bad_config_is_refused_naming_the_field(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(data, environ={})
    assert str(raised.value).startswith(path), str(raised.value)


def test_live_mode_needs_the_file_and_the_environment_flag() -> None:
    data = {**PAPER, "service": {"mode": "live"}}
    assert parse_settings(data, environ={LIVE_ENV: LIVE_VALUE}).service.mode == "live"
    with pytest.raises(ConfigError):
        parse_settings(data, environ={LIVE_ENV: "yes"})


def test_state_dir_precedence(tmp_path: Path) -> None:
    settings = parse_settings(PAPER, environ={})
    env = {"TRADEGUARD_STATE_DIR": str(tmp_path / "env")}
    assert resolve_state_dir(settings, None, {}) == Path("./state").resolve()
    assert resolve_state_dir(settings, None, env) == tmp_path / "env"
    assert resolve_state_dir(settings, str(tmp_path / "flag"), env) == tmp_path / "flag"


def test_check_config_command_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run([sys.executable, "-m", "tradeguard.cli", "check-config"],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[[connectors]]\nname = "paper"\nkind = "paper"\n[risk]\nmax_position = "x"\n')
    bad = subprocess.run([sys.executable, "-m", "tradeguard.cli", "check-config", str(bad_file)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "risk.max_position" in bad.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[risk\n")
    result = subprocess.run([sys.executable, "-m", "tradeguard.cli", "check-config", str(broken)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not valid TOML" in result.stderr


BAD_FILES = {
    "utf16": ('[[connectors]]\nname = "paper"\nkind = "paper"\n'.encode("utf-16"), "looks like UTF-16"),
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary data"),
    "latin1": ('# caf\xe9\n[[connectors]]\nname = "paper"\nkind = "paper"\n'.encode("latin-1"), "not UTF-8"),
    "nan-alpha": (b'[safety]\nspread_alpha = "NaN"\n[[connectors]]\nname = "paper"\nkind = "paper"\n',
                  "safety.spread_alpha: "),
    "nan-interval": (b'[[connectors]]\nname = "z"\nkind = "zmq"\nstale_after_s = nan\n',
                     "connectors[0].stale_after_s: "),
    "watched": (b'[safety]\nwatched_venues = ["nowhere"]\n[[connectors]]\nname = "paper"\nkind = "paper"\n',
                "safety.watched_venues[0]: no connector named 'nowhere'"),
    "nested": (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_check_config_and_run_refuse_alike_in_one_line(tmp_path: Path, case: str) -> None:
    content, expected = BAD_FILES[case]
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    state = tmp_path / "state"
    check = subprocess.run([sys.executable, "-m", "tradeguard.cli", "check-config", str(path)],
                           capture_output=True, text=True, timeout=60)
    run = subprocess.run([sys.executable, "-m", "tradeguard.cli", "run", "--config", str(path),
                          "--state-dir", str(state)], capture_output=True, text=True, timeout=60)
    assert check.returncode == run.returncode == 2
    [check_line] = check.stderr.splitlines()
    [run_line] = run.stderr.splitlines()
    assert expected in check_line
    assert check_line.removeprefix("invalid: ") == run_line.removeprefix("tradeguard: bad configuration: ")
    assert not state.exists()  # refused before anything started


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({**PAPER, "service": {"log_level": "LOUD"}}, "service.log_level"),
        ({**PAPER, "service": {"shutdown_timeout_s": float("inf")}}, "service.shutdown_timeout_s"),
        ({**PAPER, "risk": {"max_position": "-1"}}, "risk.max_position"),
        ({**PAPER, "risk": {"max_position": "1e999999999"}}, "risk.max_position"),
        ({**PAPER, "risk": {"degradation_window_s": 0.0}}, "risk.degradation_window_s"),
        ({**PAPER, "safety": {"spread_alpha": "NaN"}}, "safety.spread_alpha"),
        ({**PAPER, "safety": {"slippage_threshold": "sNaN"}}, "safety.slippage_threshold"),
        ({**PAPER, "failsafe": {"max_attempts": -1}}, "failsafe.max_attempts"),
        ({**PAPER, "failsafe": {"round_timeout_s": float("nan")}}, "failsafe.round_timeout_s"),
        ({**PAPER, "supervision": {"backoff_initial_s": 60.0}}, "supervision.backoff_initial_s"),
        ({**PAPER, "keeper": {"session_boundary": "24:00"}}, "keeper.session_boundary"),
        ({**PAPER, "keeper": {"journal_name": "../journal"}}, "keeper.journal_name"),
        ({**PAPER, "strategies": [{"name": "", "venue": "paper", "symbols": ["AAPL"]}]},
         "strategies[0].name"),
        ({**PAPER, "strategies": [{"name": "s", "kind": "martingale", "venue": "paper",
                                   "symbols": ["AAPL"]}]}, "strategies[0].kind"),
        ({**PAPER, "safety": {"watched_venues": ["nowhere"]}}, "safety.watched_venues[0]"),
        ({"connectors": [{"name": "f", "kind": "fix", "port": 65536}]}, "connectors[0].port"),
        ({"connectors": [{"name": "f", "kind": "fix", "port": 0}]}, "connectors[0].port"),
        ({"connectors": [{"name": "i", "kind": "ibkr", "port": 70000}]}, "connectors[0].port"),
        ({"connectors": [{"name": "z", "kind": "zmq", "stale_after_s": float("nan")}]},
         "connectors[0].stale_after_s"),
        ({"connectors": [{"name": "p", "kind": "paper", "symbols": ["TSLA"]}]}, "connectors[0].symbols"),
        ({"connectors": [{"name": "p", "kind": "paper", "engine": {"symbols": {"AAPL": "NaN"}}}]},
         "connectors[0].engine.symbols.AAPL"),
        ({"connectors": [{"name": "../x", "kind": "paper"}]}, "connectors[0].name"),
        ({"connectors": [{"name": "p", "kind": "paper", "symbols": ["AA\x00PL"]}]},
         "connectors[0].symbols[0]"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_settings(data, environ={})
    assert str(raised.value).startswith(path + ":"), str(raised.value)


def test_check_config_notes_the_limits_switched_off(tmp_path: Path) -> None:
    path = tmp_path / "off.toml"
    path.write_text('[risk]\nmax_position = "0"\nmax_orders_per_s = 0\n'
                    '[[connectors]]\nname = "paper"\nkind = "paper"\n')
    result = subprocess.run([sys.executable, "-m", "tradeguard.cli", "check-config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "switched off: risk.max_position, risk.max_orders_per_s" in result.stdout
