"""CPU threads chosen from the machine's load, so that a busy machine slows a run down, not to a crawl.

torch's CPU kernels run on an OpenMP pool with one thread per core. When other jobs occupy the cores, every
parallel region waits at its barrier for a thread that is not running, and spinning threads take the CPU from
the ones doing the work: a dashboard fit measured 41 minutes on a 2-core box with 5 other jobs against about
1 minute idle. So the number of threads is the number of cores other processes leave free (at least one),
re-read during training (``adapt_threads``); a thread count the user chose (``--threads``,
:func:`fix_threads`, or ``torch.set_num_threads``) is kept as it is. OpenMP's wait policy is left at its
default: passive waiting fixed the busy case too but made idle fits 2.4x slower (BENCHMARKS.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_fixed: int | None = None
_maximum = torch.get_num_threads()  # torch's default: the cores this process may use
_last_set = _maximum  # the count this module last chose; any other count was set by the user (kept)
_last_read = -float("inf")  # time.monotonic() of the last reading of the load
REREAD_AFTER_S = 5.0  # a reading costs ~40 ms: the load is read again only after this long


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _running_tasks() -> int | None:
    """Runnable tasks on the machine now, this one included (Linux ``/proc/stat``), or None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("procs_running"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def busy_cores(samples: int = 5, interval_s: float = 0.01) -> float:
    """Cores other processes keep busy: the median of a few readings of the runnable tasks (less this
    process's own thread), or the 1-minute load average where that is all the platform offers."""
    readings = []
    for i in range(samples):
        n = _running_tasks()
        if n is None:
            break
        readings.append(max(0, n - 1))
        if i + 1 < samples:
            time.sleep(interval_s)
    if readings:
        return float(sorted(readings)[len(readings) // 2])
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def choose_threads() -> int:
    """Threads for torch now: the cores left free by other processes, between 1 and torch's default."""
    free = usable_cores() - busy_cores()
    return int(max(1, min(_maximum, round(free))))


def fix_threads(n: int) -> None:
    """Use exactly ``n`` threads from now on (the user's choice: never adapted)."""
    global _fixed, _last_set
    _fixed = _last_set = int(n)
    torch.set_num_threads(_fixed)


def adapt_threads() -> int:
    """Set torch's thread count from the current load and return the count in use; a count the user fixed, or
    set with ``torch.set_num_threads`` themselves, is left alone."""
    global _last_set, _last_read
    current = torch.get_num_threads()
    if _fixed is not None or current != _last_set or time.monotonic() - _last_read < REREAD_AFTER_S:
        return current
    _last_read = time.monotonic()
    n = choose_threads()
    if n != current:
        torch.set_num_threads(n)
    _last_set = n
    return n


@contextmanager
def blas_threads_like_torch() -> Iterator[int]:
    """Run numpy's BLAS and LAPACK (OpenBLAS, MKL) on the threads torch uses now (:func:`adapt_threads`), so the
    closed-form stages of a fit (the location-scale ridge solves, the imputer's per-row solves) do not spin a thread
    per core on a busy machine either; yields that count."""
    from threadpoolctl import threadpool_limits

    n = adapt_threads()
    with threadpool_limits(limits=n, user_api="blas"):
        yield n
