"""CPU threads that follow the load: torch's intra-op threads set, between forward passes, to the cores that other
processes leave free.

Why: a decoding step is hundreds of small parallel operations, each ending at a barrier where every thread waits for
the slowest. When another busy process shares a core, the thread scheduled there runs part of the time and stalls the
others at every barrier: beside one busy process on 2 cores, the same generation took 37-38 s with 2 threads and
20-21 s with 1 (14.4 s with 2 threads on quiet cores; benchmarks/README.md). No fixed count is right for both, so
`AdaptiveThreads` measures, over each interval, how much CPU the other processes got on the cores this process may
use (`/proc/stat` less this process's own time), and runs on what they leave.

Changing the thread count must not change results: with Intel MKL, float32 products give different last digits for
different thread counts unless MKL's strict reproducibility mode is on (`MKL_CBWR=AUTO,STRICT`, read once, before
torch's first product; the `lightner` command sets it). `AdaptiveThreads` checks that products agree bit for bit at
every thread count it may choose, and otherwise keeps the count fixed and says why.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CPU_STATISTICS = Path("/proc/stat")
# Columns of a /proc/stat "cpuN" line that count a core as busy: user, nice, system, irq, softirq, steal (time the
# hypervisor gave to another machine is time this one's threads waited too). Idle and iowait are free time.
BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
# `--threads auto` (the commands' default, and `benchmarks/run.py`'s option): threads that follow the load.
AUTO_THREADS = "auto"
# Makes MKL's float32 products independent of the thread count; set before torch's first product.
REPRODUCIBLE_MKL = {"MKL_CBWR": "AUTO,STRICT"}


def make_products_reproducible() -> None:
    """Ask MKL for float32 products that do not depend on the thread count, unless the environment says otherwise.
    It takes effect only before torch's first product, so callers (the `lightner` command, the tests) call it first;
    it does not import torch, so that `lightner --help` stays quick."""
    for name, value in REPRODUCIBLE_MKL.items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class CpuSample:
    """Seconds of wall time, of busy time summed over the allowed cores, and of this process's CPU time."""

    wall: float
    busy: float
    own: float


def allowed_cpus() -> set[int]:
    """The cores this process may run on (its affinity, which containers and `taskset` narrow)."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def take_sample(cpus: set[int], statistics: Path = CPU_STATISTICS) -> CpuSample | None:
    """Busy time of `cpus` from `statistics` (Linux's /proc/stat), or None where the file is missing or unreadable."""
    try:
        lines = statistics.read_text().splitlines()
    except OSError:
        return None
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    busy_ticks = 0
    for line in lines:
        name, *columns = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            busy_ticks += sum(int(columns[i]) for i in BUSY_COLUMNS if i < len(columns))
    return CpuSample(wall=time.monotonic(), busy=busy_ticks / ticks_per_second, own=time.process_time())


def others_load(before: CpuSample, after: CpuSample) -> float:
    """Cores' worth of CPU the other processes got between two samples (0 on quiet cores, 1 beside one busy
    process that had a core to itself). Measured while this process was running, so it is what they took from it."""
    elapsed = after.wall - before.wall
    if elapsed <= 0:
        return 0.0
    return max(0.0, ((after.busy - before.busy) - (after.own - before.own)) / elapsed)


def threads_for(cores: int, others: float, most: int) -> int:
    """Threads to run on: the cores the others leave free, rounded to the nearest whole core, between 1 and `most`."""
    return max(1, min(most, int(cores - others + 0.5)))


def products_reproducible(thread_counts: range) -> bool:
    """Whether a float32 product gives the same bits at each of `thread_counts` (it does not with MKL outside its
    strict mode: a decoder's 10-row product differed in the 7th digit between 1 and 2 threads)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(10, 1024, generator=generator)
    weight = torch.randn(1024, 1024, generator=generator)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in thread_counts:
            torch.set_num_threads(threads)
            results.append(torch.nn.functional.linear(rows, weight))
    finally:
        torch.set_num_threads(before)
    return all(torch.equal(results[0], result) for result in results[1:])


class AdaptiveThreads:
    """Within the block, before a module's forward pass at most once per `interval` seconds, set torch's threads to
    the cores other processes left free over the last interval (at most the count on entry); restored on exit.

    On quiet cores nothing changes. It does nothing where the cores' use cannot be read (no /proc/stat), with one
    thread to begin with, or where products differ between thread counts (see the module's docstring).

    Example:

    ```python
    >>> from transformers import pipeline
    >>> from lightner.threads import AdaptiveThreads
    >>> ner = pipeline("lightner", model="my-adapter", trust_remote_code=True)  # doctest: +SKIP
    >>> with AdaptiveThreads():  # doctest: +SKIP
    ...     entities = ner(texts)
    ```
    """

    def __init__(self, interval: float = 1.0, statistics: Path = CPU_STATISTICS):
        self.interval = interval
        self.statistics = statistics
        self.cpus = allowed_cpus()
        self.changes: list[int] = []  # each thread count chosen, in order: what a run did, for logs and tests
        self._entry_threads = 0
        self._sample: CpuSample | None = None
        self._handle = None

    def __enter__(self) -> AdaptiveThreads:
        import torch

        self._entry_threads = torch.get_num_threads()
        self._sample = take_sample(self.cpus, self.statistics)
        if self._entry_threads == 1 or self._sample is None:
            return self
        if not products_reproducible(range(1, self._entry_threads + 1)):
            logger.warning(
                "threads stay at %d: products give different last digits with different thread counts here (set "
                "MKL_CBWR=AUTO,STRICT in the environment to allow adapting them to the load)",
                self._entry_threads,
            )
            return self
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._on_forward)
        return self

    def __exit__(self, *exc_info) -> None:
        import torch

        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        torch.set_num_threads(self._entry_threads)

    @property
    def active(self) -> bool:
        """Whether the block adapts threads (False where it cannot: see the class docstring)."""
        return self._handle is not None

    def _on_forward(self, module: torch.nn.Module, args: tuple) -> None:
        if time.monotonic() - self._sample.wall < self.interval:  # the common case: a few hundred ns
            return
        import torch

        sample = take_sample(self.cpus, self.statistics)
        if sample is None:
            return
        others = others_load(self._sample, sample)
        threads = threads_for(len(self.cpus), others, self._entry_threads)
        self._sample = sample
        if threads != torch.get_num_threads():
            logger.info("%d threads: other processes used %.1f of %d cores", threads, others, len(self.cpus))
            torch.set_num_threads(threads)
            self.changes.append(threads)
