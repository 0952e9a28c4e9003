"""Smoke test of the benchmarks: every section runs at tiny sizes and the result carries
every figure and every target. Figures are not judged here (benchmarks are not timed
tests); only their presence and sign."""

from __future__ import annotations

import json
import math

from benchmarks import SECTIONS, TARGETS, Sizes, collect, table
from benchmarks.report import HEADLINE_KEYS


def test_every_section_runs_at_tiny_sizes_and_reports_every_figure() -> None:
    results = collect(Sizes.tiny(), SECTIONS)

    decoded = json.loads(json.dumps(results, default=str))
    for key in HEADLINE_KEYS:
        assert key in decoded, f"{key} missing from the results"
        value = decoded[key]
        assert isinstance(value, (int, float)) and math.isfinite(value), f"{key} = {value!r}"
        if key != "rss_growth_mb":  # memory may also shrink over a run
            assert value > 0, f"{key} = {value!r}"
    assert set(decoded["targets"]) == {t.name for t in TARGETS}
    assert all(v["met"] in (True, False) for v in decoded["targets"].values()), decoded["targets"]
    assert decoded["machine"]["nproc"] >= 1
    assert set(decoded["background"]) == set(SECTIONS)

    rendered = table(results)
    for key in HEADLINE_KEYS:
        assert key in rendered
