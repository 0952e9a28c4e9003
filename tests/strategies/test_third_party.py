"""A strategy from another package: built from docs/templates/strategy in the test,
installed into a directory of its own (the shared environment is not touched), found by
its ``tradeguard.strategies`` entry point, and trading on paper in a ``tradeguard run``
process. Then the process is killed (SIGKILL) and started again: the strategy learns its
position from the journal and carries on from it, instead of trading it a second time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors.journal import READER, Journal
from tests.system.processes import running, stop, wait_status
from tradeguard.testing import wait_for

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "docs" / "templates" / "strategy"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The template, copied, built and installed with pip into a directory of its own."""
    base = tmp_path_factory.mktemp("third-party")
    source = base / "src"
    shutil.copytree(TEMPLATE, source)
    target = base / "site"
    # pip builds it as it would any package (the build backend comes from the configured
    # package index); --target keeps it out of the environment, --no-deps leaves
    # tradeguard itself to the environment.
    built = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                            str(target), str(source)], timeout=180, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (target / "flip_strategy" / "strategy.py").is_file()
    yield target


def env_with(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site)}


def config(tmp_path: Path, flip_s: float) -> Path:
    path = tmp_path / "flip.toml"
    path.write_text(f"""
[service]
on_shutdown = "leave"
[risk]
max_orders_per_s = 200
[supervision]
backoff_initial_s = 0.1
backoff_max_s = 1.0

[[connectors]]
name = "paper"
kind = "paper"
symbols = ["AAPL", "MSFT"]
quote_interval_s = 0.02

[[strategies]]
name = "flipper"
kind = "flip"
symbols = ["AAPL"]
target = "20"
clip = "10"
flip_s = {flip_s}
interval_s = 0.05
""")
    return path


def journal(state: Path) -> Journal:
    return Journal(state / "journal.sqlite3", writer=READER)


def fills_of(state: Path, source: str) -> list[Decimal]:
    """Signed quantities of the journal's fills of ``source``'s orders, in commit order."""
    if not (state / "journal.sqlite3").exists():
        return []
    with journal(state) as db:
        ids = {o.order.client_order_id for o in db.orders() if o.order.source == source}
        return [f.signed_quantity for f in db.fills() if f.client_order_id in ids]


def started_with_book(state: Path, count: int) -> bool:
    log = state / "logs" / "main.log"
    return log.exists() and log.read_text(errors="replace").count("strategy flipper (flip) starts") >= count


def test_check_config_finds_the_kind_only_where_it_is_installed(site: Path, tmp_path: Path) -> None:
    path = config(tmp_path, 2.0)
    ok = subprocess.run([str(BIN / "tradeguard"), "check-config", str(path)], env=env_with(site),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    missing = subprocess.run([str(BIN / "tradeguard"), "check-config", str(path)], capture_output=True,
                             text=True, timeout=60, env=plain)
    assert missing.returncode == 2
    assert "strategies[0].kind: unknown strategy kind 'flip'; installed kinds: " in missing.stderr
    installed = missing.stderr.split("installed kinds: ")[1].strip().split(", ")
    assert "sample" in installed and "flip" not in installed
    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text().replace('target = "20"', 'target = "-5"'))
    refused = subprocess.run([str(BIN / "tradeguard"), "check-config", str(bad)], env=env_with(site),
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "strategies[0].target: " in refused.stderr


def test_it_trades_on_paper_and_a_killed_process_resumes_from_its_position(site: Path,
                                                                          tmp_path: Path) -> None:
    path, state = config(tmp_path, 4.0), tmp_path / "state"
    args = ("run", "--config", str(path), "--state-dir", str(state))
    with running(*args, env={"PYTHONPATH": str(site)}) as proc:
        wait_for(lambda: sum(fills_of(state, "flipper")) == 20, 60.0, "the plug-in long 20 AAPL")
        status = wait_status(state, lambda s: any(p["symbol"] == "AAPL" and Decimal(p["quantity"]) == 20
                                                  for p in s.get("positions", [])), 20.0, "20 AAPL in status")
        assert status["mode"] == "LIVE"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    before = fills_of(state, "flipper")
    assert sum(before) == 20

    with running(*args, env={"PYTHONPATH": str(site)}) as proc:
        wait_for(lambda: started_with_book(state, 2), 60.0, "the restarted plug-in holding its book")
        # Its target flips to -20 a few seconds in: it sells 40, no more, no less.
        wait_for(lambda: sum(fills_of(state, "flipper")) == -20, 60.0, "the plug-in short 20 AAPL")
        wait_status(state, lambda s: any(p["symbol"] == "AAPL" and Decimal(p["quantity"]) == -20
                                         for p in s.get("positions", [])), 20.0, "-20 AAPL in status")
        assert stop(proc) == 0
    after = fills_of(state, "flipper")[len(before):]
    # Had it forgotten its 20, it would have bought 20 more (to 40) before the flip.
    assert all(quantity < 0 for quantity in after), after
    assert sum(after) == -40


def test_the_template_tests_pass_with_the_kit(site: Path, tmp_path: Path) -> None:
    # Its tests alone, away from its sources: the strategy comes from the installed copy.
    shutil.copytree(TEMPLATE / "tests", tmp_path / "tests")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=tmp_path, env={**env_with(site), "PYTHONDONTWRITEBYTECODE": "1"},
                            capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout
