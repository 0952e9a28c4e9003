"""The status document is one schema: ``tradeguard status --json`` of a running service
validates against the JSON Schema exported from ``messages.status``, that schema is the
one docs/status.md shows, and every field name operators' scripts read is still there."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from messages.status import STATUS_DECODER, StatusDocument, status_schema
from tests.system.processes import BIN, running, wait_status

ROOT = Path(__file__).resolve().parents[2]

PROMISED = {
    "": {"mode", "paused", "healthy", "positions", "pnl", "connectors", "orders", "risk", "failsafe",
         "alerts", "ts_ns"},
    "positions": {"venue", "symbol", "quantity", "average_price", "unrealized_pnl", "realized_pnl"},
    "pnl": {"realized", "unrealized", "daily", "daily_traded_notional"},
    "connectors": {"name", "connected", "reconciled", "reconciled_ns", "venue_positions",
                   "keeper_positions", "mismatches"},
    "orders": {"submitted", "filled", "rejected", "cancelled", "fills"},
    "risk": {"mode", "paused", "connectors_up", "circuits", "working_orders", "degradations_in_window",
             "failsafe_flat", "checked", "passed", "rejected"},
    "failsafe": {"latched", "running", "incident", "venues", "last_report"},
    "alerts": {"ts_ns", "severity", "kind", "text"},
}
"""Field names the status document has always had (add, never rename or remove)."""


def _status_json(state: Path) -> dict[str, Any]:
    done = subprocess.run([str(BIN / "tradeguard"), "status", "--json", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def _keys(document: dict[str, Any], part: str) -> set[str]:
    value = document if not part else document[part]
    if isinstance(value, list):
        assert value, f"{part} is empty: nothing to check"
        value = value[0]
    return set(value)


@pytest.mark.timeout(120)
def test_status_json_of_a_running_service_validates_against_the_schema(tmp_path: Path) -> None:
    state = tmp_path / "state"
    validator = jsonschema.Draft202012Validator(status_schema())
    with running("run", "--state-dir", str(state)) as proc:
        wait_status(state, lambda s: s["mode"] == "LIVE" and s["positions"], 60.0,
                    what="LIVE with a position")
        live = _status_json(state)
        validator.validate(live)
        for part, names in PROMISED.items():
            if part != "alerts":  # a quiet start may have none yet: checked after the flatten
                assert names <= _keys(live, part), part
        assert isinstance(STATUS_DECODER.decode(json.dumps(live)), StatusDocument)

        flatten = subprocess.run([str(BIN / "tradeguard"), "flatten", "--state-dir", str(state),
                                  "--reason", "schema test"], capture_output=True, text=True, timeout=60)
        assert flatten.returncode == 0, flatten.stderr
        flat = _status_json(state)
        validator.validate(flat)
        assert flat["mode"] == "FAILSAFE" and flat["failsafe"]["last_report"]["flat"] is True
        assert PROMISED["alerts"] <= _keys(flat, "alerts")  # entering FAILSAFE is an alert
        assert proc.poll() is None

    # The schema catches what it should: a renamed field, a number where a string belongs.
    broken = dict(live)
    broken["Mode"] = broken.pop("mode")
    assert not validator.is_valid(broken)
    assert not validator.is_valid({**live, "pnl": {**live["pnl"], "daily": 1.5}})


def test_docs_show_the_exported_schema() -> None:
    text = (ROOT / "docs" / "status.md").read_text()
    block = re.search(r"## JSON Schema.*?```json\n(.*?)```", text, re.S)
    assert block is not None, "docs/status.md has a JSON Schema block"
    assert json.loads(block.group(1)) == status_schema(), (
        "docs/status.md is out of date: paste messages.status.status_schema() into it")
