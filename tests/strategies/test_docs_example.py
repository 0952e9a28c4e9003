"""The example of docs/writing-a-strategy.md runs as written: its module registered as
the kind ``pingpong``, its configuration section checked, its kit test passing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from tests.strategies.plugin_site import on_path, write_plugin
from tradeguard.settings import parse_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-a-strategy.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_strategy_its_section_and_its_kit_test(tmp_path: Path) -> None:
    module, kit_test = blocks("python")
    registration, section = blocks("toml")
    assert tomllib.loads(registration)["project"]["entry-points"]["tradeguard.strategies"] == {
        "pingpong": "pingpong:PingPong"}
    site = write_plugin(tmp_path / "site", kind="pingpong", module="pingpong", source=module,
                        target="PingPong")
    with on_path(site, "pingpong"):
        data: dict[str, Any] = {"connectors": [{"name": "paper", "kind": "paper", "symbols": ["AAPL"]}],
                                **tomllib.loads(section)}
        [strategy] = parse_settings(data, environ={}).strategies
        assert type(strategy).__name__ == "PingPongConfig" and strategy.name == "pp"
        namespace: dict[str, Any] = {}
        exec(compile(kit_test, str(DOC), "exec"), namespace)
        namespace["test_pingpong_trades"](tmp_path / "run")
