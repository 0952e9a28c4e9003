"""Strategies are found by kind through the ``tradeguard.strategies`` entry points, and
each kind's section is decoded with its own config struct before anything starts."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from actors.errors import ConfigError
from actors.strategies import GROUP, StrategyConfig, strategy_class, strategy_kinds
from actors.strategies.sample import SampleConfig, SampleStrategy
from tests.strategies.plugin_site import on_path, write_plugin
from tradeguard.settings import DEFAULT_CONFIG, LIVE_ENV, LIVE_VALUE, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
CONNECTOR = {"name": "paper", "kind": "paper", "symbols": ["AAPL", "MSFT"]}

PLUGIN = '''
from __future__ import annotations

from decimal import Decimal

from actors.strategies import Strategy, StrategyConfig
from messages.bounds import PositiveAmount


class LotsConfig(StrategyConfig, frozen=True, kw_only=True):
    lot: PositiveAmount = Decimal(5)
    """Its own field."""


class LotsStrategy(Strategy):
    config_type = LotsConfig
'''


def config(*sections: dict[str, Any]) -> dict[str, Any]:
    return {"connectors": [CONNECTOR], "strategies": list(sections)}


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as error:
        parse_settings(data, environ={})
    return str(error.value)


def test_the_sample_is_an_entry_point_of_the_installed_package() -> None:
    [sample] = [ep for ep in entry_points(group=GROUP) if ep.name == "sample"]
    assert sample.value == "actors.strategies.sample:SampleStrategy"
    assert strategy_class("sample") is SampleStrategy
    assert "sample" in strategy_kinds()


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_existing_configurations_load_unchanged(path: Path) -> None:
    environ = {LIVE_ENV: LIVE_VALUE, "TRADEGUARD_FIX_STRAT1_PASSWORD": "secret"}
    settings = load_settings(path, environ=environ)
    for strategy in settings.strategies:
        assert type(strategy) is SampleConfig and strategy.kind == "sample"


def test_the_embedded_default_runs_the_sample() -> None:
    [strategy] = load_settings(None, environ={}).strategies
    assert type(strategy) is SampleConfig
    assert (strategy.name, strategy.interval_s, strategy.max_position) == ("sample", 0.5, Decimal(50))
    assert DEFAULT_CONFIG.read_text() == (ROOT / "config" / "paper.toml").read_text()


def test_a_section_without_kind_is_the_sample_and_kind_sample_says_the_same() -> None:
    implicit = parse_settings(config({"name": "a", "interval_s": 0.25}), environ={}).strategies[0]
    explicit = parse_settings(config({"name": "a", "kind": "sample", "interval_s": 0.25}),
                              environ={}).strategies[0]
    assert implicit == explicit and type(implicit) is SampleConfig


def test_an_unknown_kind_is_refused_naming_it_and_the_installed_kinds() -> None:
    text = refused(config({"name": "a"}, {"name": "b", "kind": "momentum"}))
    assert text.startswith("strategies[1].kind: unknown strategy kind 'momentum'; installed kinds: ")
    assert "sample" in text.split("installed kinds: ")[1].split(", ")


@pytest.mark.parametrize(("section", "field"), [
    ({"interval_s": 0}, "strategies[0].interval_s"),
    ({"quantity": "-1"}, "strategies[0].quantity"),
    ({"symbols": []}, "strategies[0].symbols"),
    ({"kind": 7}, "strategies[0].kind"),
    ({"venue": "nowhere"}, "strategies[0].venue"),
    ({"symbols": ["EURUSD"]}, "strategies[0].symbols"),
    ({"name": "risk_governor"}, "strategies[0].name"),
    ({"book_retry_s": 0}, "strategies[0].book_retry_s"),
])
def test_a_bad_field_is_refused_naming_it(section: dict[str, Any], field: str) -> None:
    assert refused(config({"name": "a", **section})).startswith(f"{field}: ")


def test_a_field_of_another_kind_is_refused() -> None:
    text = refused(config({"name": "a", "lot": "5"}))
    assert text.startswith("strategies[0]") and "`lot`" in text


def test_a_plugin_kind_is_decoded_with_its_own_config(tmp_path: Path) -> None:
    site = write_plugin(tmp_path, kind="lots", module="lots_plugin_a", source=PLUGIN, target="LotsStrategy")
    with on_path(site, "lots_plugin_a"):
        assert "lots" in strategy_kinds()
        settings = parse_settings(config({"name": "a", "kind": "lots", "lot": "7"}), environ={})
        [strategy] = settings.strategies
        assert type(strategy).__name__ == "LotsConfig" and isinstance(strategy, StrategyConfig)
        assert strategy.lot == Decimal(7) and strategy.venue == "paper"
        assert refused(config({"name": "a", "kind": "lots", "lot": "0"})).startswith("strategies[0].lot: ")
        # The sample's fields are not the plug-in's.
        text = refused(config({"name": "a", "kind": "lots", "interval_s": 1.0}))
        assert text.startswith("strategies[0]") and "`interval_s`" in text


def test_a_plugin_that_cannot_be_loaded_is_a_configuration_error(tmp_path: Path) -> None:
    site = write_plugin(tmp_path, kind="broken", module="broken_plugin_a",
                        source="raise ImportError('a dependency is missing')\n", target="Nothing")
    with on_path(site, "broken_plugin_a"):
        text = refused(config({"name": "a", "kind": "broken"}))
    assert text.startswith("strategies[0].kind: strategy kind 'broken' cannot be loaded")
    assert "a dependency is missing" in text


def test_an_entry_point_that_is_no_strategy_is_refused(tmp_path: Path) -> None:
    site = write_plugin(tmp_path, kind="notone", module="notone_plugin_a",
                        source="class NotAStrategy:\n    pass\n", target="NotAStrategy")
    with on_path(site, "notone_plugin_a"):
        text = refused(config({"name": "a", "kind": "notone"}))
    assert text.startswith("strategies[0].kind: ") and "not a Strategy subclass" in text


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "tradeguard"), *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_run_and_check_config_refuse_an_unknown_kind_before_anything_starts(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[connectors]]\nname = "paper"\nkind = "paper"\nsymbols = ["AAPL"]\n\n'
                    '[[strategies]]\nname = "mine"\nkind = "momentum"\nsymbols = ["AAPL"]\n')
    state = tmp_path / "state"
    for command in (["check-config", str(path)], ["run", "--config", str(path), "--state-dir", str(state)]):
        result = _cli(*command, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "strategies[0].kind: unknown strategy kind 'momentum'; installed kinds: " in result.stderr
        assert "sample" in result.stderr
    assert not state.exists()  # refused before the state directory was touched
