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
    assert DEFAULT_CONFIG == ROOT / "config" / "paper.toml"
    assert settings.service.mode == "paper"
    [connector] = settings.connector_configs()
    assert isinstance(connector, PaperConfig)
    assert [s.name for s in settings.strategies] == ["sample"]
    assert settings.risk.max_position == Decimal("200")


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
