"""Threads chosen from the machine's load."""

import os

import pytest
import torch

from normcore._utils import threads


def test_threads_are_the_cores_others_leave_free(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "_maximum", 4)
    for busy, expected in ((0.0, 4), (1.0, 3), (2.6, 1), (7.0, 1)):
        monkeypatch.setattr(threads, "busy_cores", lambda b=busy: b)
        assert threads.choose_threads() == expected


def test_adapting_changes_only_counts_this_module_chose(monkeypatch):
    monkeypatch.setattr(threads, "choose_threads", lambda: 2)
    monkeypatch.setattr(threads, "_fixed", None)
    monkeypatch.setattr(threads, "_last_set", 3)
    monkeypatch.setattr(threads, "REREAD_AFTER_S", 0.0)
    before = torch.get_num_threads()  # 1: set by the test suite itself, not by this module
    try:
        assert threads.adapt_threads() == before and torch.get_num_threads() == before
        monkeypatch.setattr(threads, "_last_set", before)  # now it is this module's choice: adapted
        assert threads.adapt_threads() == 2 and torch.get_num_threads() == 2
        threads.fix_threads(1)  # the user's --threads: never adapted
        assert threads.adapt_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="runnable-task count is read from Linux /proc/stat")
def test_busy_cores_reads_the_run_queue():
    assert threads._running_tasks() >= 1  # this process at least
    assert threads.busy_cores(samples=3, interval_s=0.0) >= 0


def test_blas_threads_follow_torch_inside_the_block_and_are_restored_after():
    from threadpoolctl import threadpool_info

    from normcore._utils.threads import blas_threads_like_torch

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = blas_threads()
    with blas_threads_like_torch() as n:
        assert n == torch.get_num_threads()
        assert blas_threads() <= {n}
    assert blas_threads() == before
