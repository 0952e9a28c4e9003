"""The targets, and the results as a table or one JSON object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HEADLINE_KEYS: tuple[str, ...] = (
    "quotes_per_s",
    "baseline_quotes_per_s",
    "quote_verdict_p99_ms",
    "order_rtt_p50_ms",
    "order_rtt_p99_ms",
    "failsafe_handoff_ms",
    "failsafe_flat_ms",
    "restart_p50_ms",
    "process_restart_p50_ms",
    "rss_idle_mb",
    "rss_growth_mb",
    "venue_store_growth_x",
)
"""The figures every full run reports at the top level of its JSON object."""


@dataclass(frozen=True)
class Target:
    """One performance target over one or more figures."""

    name: str
    """The figure the target is about."""
    text: str
    """The target in words."""
    needs: tuple[str, ...]
    """Figures it needs (when one is missing, the target was not measured)."""
    met: Callable[[dict[str, Any]], bool]
    """True when the results meet it."""


TARGETS: tuple[Target, ...] = (
    Target("quotes_per_s", ">= 200,000 and >= 10x baseline", ("quotes_per_s", "baseline_quotes_per_s"),
           lambda r: r["quotes_per_s"] >= 200_000 and r["quotes_per_s"] >= 10 * r["baseline_quotes_per_s"]),
    Target("quote_verdict_p99_ms", "< 1 ms", ("quote_verdict_p99_ms",),
           lambda r: r["quote_verdict_p99_ms"] < 1.0),
    Target("order_rtt_p99_ms", "< 2 ms", ("order_rtt_p99_ms",), lambda r: r["order_rtt_p99_ms"] < 2.0),
    Target("failsafe_handoff_ms", "< 5 ms", ("failsafe_handoff_ms",),
           lambda r: r["failsafe_handoff_ms"] < 5.0),
    Target("failsafe_flat_ms", "< 100 ms", ("failsafe_flat_ms",), lambda r: r["failsafe_flat_ms"] < 100.0),
    Target("restart_p50_ms", "< 2 ms and >= 100x faster than a process restart",
           ("restart_p50_ms", "process_restart_p50_ms"),
           lambda r: r["restart_p50_ms"] < 2.0 and r["process_restart_p50_ms"] >= 100 * r["restart_p50_ms"]),
    Target("rss_growth_mb", "< 10 MB", ("rss_growth_mb",), lambda r: r["rss_growth_mb"] < 10.0),
    Target("venue_store_growth_x", "< 3x (venue cost per order, 100x the history)",
           ("venue_store_growth_x",), lambda r: r["venue_store_growth_x"] < 3.0),
)
"""Every target, in the order of the table."""


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per target: its text, the figure, and ``met`` (True, False, or None when not run)."""
    verdicts: dict[str, dict[str, Any]] = {}
    for target in TARGETS:
        measured = all(results.get(key) is not None for key in target.needs)
        verdicts[target.name] = {
            "target": target.text,
            "value": results.get(target.name),
            "met": target.met(results) if measured else None,
        }
    return verdicts


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


_UNITS = {
    "quotes_per_s": "quotes/s", "baseline_quotes_per_s": "quotes/s", "rss_idle_mb": "MiB",
    "rss_growth_mb": "MiB", "venue_store_growth_x": "x",
}


def table(results: dict[str, Any]) -> str:
    """The headline figures with their targets marked met or missed, then the notes."""
    verdicts = evaluate(results)
    rows = [("figure", "value", "target", "")]
    for key in HEADLINE_KEYS:
        if key not in results:
            continue
        verdict = verdicts.get(key)
        unit = _UNITS.get(key, "ms" if key.endswith("_ms") else "")
        mark = "" if verdict is None else {True: "met", False: "MISSED", None: "not run"}[verdict["met"]]
        target = "" if verdict is None else verdict["target"]
        rows.append((key, f"{_fmt(results[key])} {unit}".strip(), target, mark))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
