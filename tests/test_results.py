"""Per-seed experiments: recorded by notebooks, gathered and rendered by ``make results``; the recipe constant."""

from __future__ import annotations

import json

import pytest

import course_utils as cu
from course_utils.cli import results


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(cu.config, "REPO_DIR", tmp_path)
    monkeypatch.delenv("COURSE_QUICK", raising=False)
    return tmp_path / "results" / "runs" / "default"


def test_record_experiment_keeps_per_seed_values_and_replaces_by_name(runs):
    cu.report.record_experiment("02_x", "few labels", metric="test accuracy", baseline=("scratch", [0.84, 0.845, 0.842]),
                                method=("KD", [0.866, 0.865, 0.868]))
    cu.report.record_experiment("02_x", "full labels", metric="test accuracy", baseline=("scratch", [0.87, 0.88, 0.875]),
                                method=("KD", [0.872, 0.874, 0.879]))
    cu.report.record_experiment("02_x", "few labels", metric="test accuracy", baseline=("scratch", [0.1, 0.2, 0.3]),
                                method=("KD", [0.4, 0.5, 0.6]))  # replaces the first entry
    entries = json.loads((runs / "02_x.json").read_text())["experiments"]
    assert [e["name"] for e in entries] == ["full labels", "few labels"]
    assert entries[1]["baseline"] == {"label": "scratch", "values": [0.1, 0.2, 0.3]}
    assert set(entries[0]) == {"notebook", "name", "metric", "higher_is_better", "baseline", "method", "source"}
    with pytest.raises(ValueError, match="at least one value"):
        cu.report.record_experiment("02_x", "empty", metric="test accuracy", baseline=("scratch", []), method=("KD", [0.5]))


def test_experiments_are_gathered_in_notebook_order_and_rendered_with_verdicts(runs):
    cu.report.record_experiment("03_b", "hints", metric="test accuracy", baseline=("scratch", [0.75, 0.77, 0.76]),
                                method=("hints", [0.76, 0.78, 0.755]))
    cu.report.record_experiment("02_a", "few labels", metric="test accuracy", baseline=("scratch", [0.84, 0.845, 0.842]),
                                method=("KD", [0.866, 0.865, 0.868]))
    cu.report.record_experiment("08_c", "bits", metric="bits per character", higher_is_better=False,
                                baseline=("scratch", [2.5, 2.52]), method=("KD", [2.4, 2.41]), source="python -m x")
    summary = results.summarise({})
    assert [e["notebook"] for e in summary["experiments"]] == ["02_a", "03_b", "08_c"]
    table = results.render_experiments(summary["experiments"]).splitlines()
    assert "+2.4 points" in table[2] and table[2].endswith("| win |")
    assert table[3].endswith("| within noise |")
    assert "(precomputed)" in table[4] and "win (< 3 seeds)" in table[4] and "+0.105" in table[4]
    assert "KD: 86.63% ± 0.15% (n = 3)" in table[2]


def test_the_course_recipe_is_the_sweeps_best_cell():
    sweep = cu.images.recipes.load_sweep()
    best = sweep["grid"]["best"]
    assert {"temperature": best["temperature"], "alpha": best["alpha"]} == dict(cu.images.recipes.KD), (
        "cu.images.recipes.KD must be the best cell of results/kd_sweep.json's grid: update the constant or rerun the sweep")
    assert best["mean"] == max(cell["mean"] for cell in sweep["grid"]["cells"])
    assert len(best["values"]) >= 3


def test_nbclient_channels_poll_in_slices_and_still_time_out():
    """A message that a long poll would miss is found by the next short poll; a real timeout still raises Empty."""
    import asyncio
    import queue
    import time

    class Channel:  # answers only from its n-th poll on, like a socket whose wake-up was missed
        def __init__(self, ready_from: int) -> None:
            self.polls, self.ready_from = 0, ready_from

        async def get_msg(self, timeout=None):
            self.polls += 1
            if self.polls >= self.ready_from:
                return {"poll": self.polls}
            await asyncio.sleep(timeout)
            raise queue.Empty

    channel = Channel(ready_from=3)
    results._poll_in_slices(channel, slice_seconds=0.05)
    started = time.monotonic()
    assert asyncio.run(channel.get_msg(timeout=10)) == {"poll": 3}
    assert time.monotonic() - started < 1.0, "the message waited for the whole timeout"

    never = Channel(ready_from=10**9)
    results._poll_in_slices(never, slice_seconds=0.05)
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        asyncio.run(never.get_msg(timeout=0.2))
    assert 0.15 < time.monotonic() - started < 1.0
