"""Threads that follow the load (`lightner.threads`): the load measured from /proc/stat, the count chosen from it, the
count changed between forward passes, and results that do not depend on it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from lightner.modeling_lightner import LightNerModel
from lightner.threads import (
    AdaptiveThreads,
    CpuSample,
    others_load,
    products_reproducible,
    take_sample,
    threads_for,
)

BART_MINI = Path(__file__).resolve().parent.parent / "assets" / "bart-mini"
# Two cores, as `/proc/stat` lists them: user nice system idle iowait irq softirq steal guest guest_nice.
STATISTICS = (
    "cpu  {total} 0 0 0 0 0 0 0 0 0\ncpu0 {cpu0} 0 0 500 7 0 0 0 0 0\ncpu1 {cpu1} 0 0 500 0 0 0 0 0 0\nintr 1 2\n"
)


def write_statistics(path: Path, cpu0_ticks: int, cpu1_ticks: int) -> Path:
    path.write_text(STATISTICS.format(total=cpu0_ticks + cpu1_ticks, cpu0=cpu0_ticks, cpu1=cpu1_ticks))
    return path


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("others", "threads"),
    [(0.0, 2), (0.3, 2), (0.67, 1), (1.0, 1), (1.9, 1), (5.0, 1)],
)
def test_threads_are_the_cores_the_others_leave_free(others, threads):
    assert threads_for(cores=2, others=others, most=2) == threads


def test_threads_never_exceed_the_count_on_entry():
    """64 logical cores, torch on 32 threads (one per physical core), one busy neighbour: still 32."""
    assert threads_for(cores=64, others=1.0, most=32) == 32


def test_a_sample_counts_busy_columns_of_the_allowed_cores_only(tmp_path):
    ticks = os.sysconf("SC_CLK_TCK")
    statistics = tmp_path / "stat"
    statistics.write_text(f"cpu  {ticks} 0 0 99 99 1 0 0\ncpu0 {ticks} 0 0 0 0 0 0 0\ncpu1 0 0 0 99 99 1 0 0\n")
    both = take_sample({0, 1}, statistics)
    # cpu0: 1 s of user time; cpu1: idle and iowait (free) and 1 tick of irq (busy).
    assert both.busy == pytest.approx(1 + 1 / ticks)
    assert take_sample({1}, statistics).busy == pytest.approx(1 / ticks)
    assert take_sample({0}, tmp_path / "missing") is None


def test_the_others_load_is_busy_time_less_this_process_time():
    before = CpuSample(wall=10.0, busy=100.0, own=5.0)
    # 2 s: the cores were busy 3.5 s, 1.5 s of it this process's: the others held 1 core.
    assert others_load(before, CpuSample(wall=12.0, busy=103.5, own=6.5)) == pytest.approx(1.0)
    # Rounding in the ticks can make this process look busier than the cores: never below 0.
    assert others_load(before, CpuSample(wall=12.0, busy=101.0, own=7.0)) == 0.0


def test_threads_drop_under_load_come_back_when_it_ends_and_are_restored(tmp_path, two_threads):
    statistics = write_statistics(tmp_path / "stat", 0, 0)
    layer = torch.nn.Linear(4, 4)
    with AdaptiveThreads(interval=0.0, statistics=statistics) as threads:
        assert threads.active
        # A neighbour kept a core busy for 10 s in a moment: fewer threads from the next forward pass on.
        write_statistics(statistics, 0, 1000 * os.sysconf("SC_CLK_TCK"))
        layer(torch.ones(1, 4))
        assert torch.get_num_threads() == 1
        # Quiet again: the cores' busy time did not move.
        layer(torch.ones(1, 4))
        assert torch.get_num_threads() == 2
        assert threads.changes == [1, 2]
    assert torch.get_num_threads() == 2


def test_threads_are_checked_at_most_once_per_interval(tmp_path, two_threads):
    statistics = write_statistics(tmp_path / "stat", 0, 0)
    with AdaptiveThreads(interval=3600.0, statistics=statistics) as threads:
        write_statistics(statistics, 0, 1000 * os.sysconf("SC_CLK_TCK"))
        torch.nn.Linear(4, 4)(torch.ones(1, 4))
        assert torch.get_num_threads() == 2 and threads.changes == []


def test_threads_stay_fixed_where_they_would_change_results(tmp_path, two_threads, monkeypatch, caplog):
    monkeypatch.setattr("lightner.threads.products_reproducible", lambda counts: False)
    with caplog.at_level(logging.WARNING, logger="lightner.threads"):
        with AdaptiveThreads(statistics=write_statistics(tmp_path / "stat", 0, 0)) as threads:
            assert not threads.active
    assert "threads stay at 2" in caplog.text and "MKL_CBWR" in caplog.text


def test_nothing_adapts_without_cpu_statistics_or_with_one_thread(tmp_path, two_threads):
    with AdaptiveThreads(statistics=tmp_path / "missing") as threads:
        assert not threads.active
    torch.set_num_threads(1)
    with AdaptiveThreads(statistics=write_statistics(tmp_path / "stat", 0, 0)) as threads:
        assert not threads.active


def test_products_agree_bit_for_bit_at_every_thread_count():
    """What makes changing threads safe; conftest asks MKL for it as the `lightner` command does (without it, on
    this project's CI machines, the 10-row product differs between 1 and 2 threads)."""
    assert products_reproducible(range(1, 5))


def sentences() -> list[list[str]]:
    """Sentences of many lengths, so that rows leave the batch at many steps and products of many shapes run."""
    words = "Sarah Connor flew from Paris to the United Nations office in New York on Monday with IBM staff".split()
    return [words[start : start + length] for start in range(0, 8) for length in (3, 6, 9)] + [words]


@pytest.mark.skipif(not BART_MINI.exists(), reason="needs assets/bart-mini (in the repository)")
def test_predictions_are_identical_at_one_and_two_threads(two_threads):
    """An untrained adapter on bart-mini writes entities for most sentences; every score must agree bit for bit
    (with MKL's default mode, 1 and 2 threads gave different scores for these sentences)."""
    torch.manual_seed(0)
    model = LightNerModel.from_backbone(BART_MINI, ["PER", "LOC", "ORG"]).eval()
    predictions = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        predictions.append(model.predict(sentences(), batch_size=32))
    assert sum(map(len, predictions[0])) > 10
    assert predictions[0] == predictions[1]
