"""Memory over a run at a steady quote rate: the resident set size with the core idle, and
how much it grew by the end of the run."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from typing import Any

from actors import topics
from benchmarks.harness import (
    VENUE,
    Barrier,
    FeedablePaperConnector,
    ask,
    core_specs,
    paced,
    paper_config,
    rss_mb,
    section,
    seed_positions,
    start_tree,
    symbols,
)


def rss_soak(seconds: float = 30.0, rate: int = 5_000, step_s: float = 0.01) -> dict[str, Any]:
    """RSS of this process with the whole core started and idle (``rss_idle_mb``), then
    after ``seconds`` of market data at ``rate`` quotes per second from the paper engine
    (it steps every ``step_s`` with ``rate * step_s`` symbols; the keeper holds open
    positions, so marks move and snapshots are published): ``rss_growth_mb`` is the
    difference, both read after a full collection. Samples are taken every second."""
    per_step = max(1, round(rate * step_s))
    names = symbols(per_step)
    samples: list[float] = []
    with section("soak") as state_dir:
        specs = core_specs(state_dir, paper_config(names, interval_s=3600.0),
                           sink_topics=(topics.PORTFOLIO, topics.DASHBOARD))
        tree = start_tree(specs)
        venue = FeedablePaperConnector.instances[VENUE].venue
        assert venue is not None
        engine = venue.engine
        seed_positions(names, min(10, len(names)), state_dir)
        for name in ("position_keeper", "safety_monitor", "dashboard_sink"):
            ask(name, Barrier())
        time.sleep(1.0)
        gc.collect()
        idle = rss_mb()
        samples.append(idle)
        steps_per_sample = max(1, round(1.0 / step_s))

        def step(n: int) -> None:
            engine.step()
            if n % steps_per_sample == steps_per_sample - 1:
                samples.append(rss_mb())

        pace = paced(step_s, seconds, step)
        for name in (VENUE, "position_keeper", "safety_monitor", "dashboard_sink"):
            ask(name, Barrier())
        gc.collect()
        end = rss_mb()
        samples.append(end)
        tree.stop()
    return {
        "rss_idle_mb": round(idle, 1),
        "rss_growth_mb": round(end - idle, 2),
        "rss_end_mb": round(end, 1),
        "rss_peak_mb": round(max(samples), 1),
        "soak_s": round(pace["elapsed_s"], 1),
        "soak_quotes_per_s": round(pace["calls"] * per_step / pace["elapsed_s"]),
        "rss_samples_mb": [round(s, 1) for s in samples],
    }


def rss_soak_in_subprocess(seconds: float, rate: int = 5_000) -> dict[str, Any]:
    """``rss_soak`` in a fresh interpreter, so the figure is the service's alone, not this
    benchmark process's (which holds the other sections' leftovers)."""
    command = [sys.executable, "-m", "benchmarks", "--only", "soak", "--soak", str(seconds),
               "--soak-rate", str(rate), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark: the soak subprocess failed ({done.returncode}): "
                           f"{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    flat = {**result.get("details", {}), **result}
    return {k: v for k, v in flat.items() if k.startswith(("rss_", "soak_"))}
