import threading

from normcore._utils.errors import InputError
from normcore.jobs import Job


def counting(n, progress, gate=None):
    for i in range(n):
        if gate is not None:
            gate.wait()
        progress.update("count", i + 1, n)
    return n * 2


def test_job_runs_off_thread_and_records_progress():
    job = Job(counting, 5).start()
    assert job.wait(10) == "done" and job.result == 10
    snap = job.snapshot()
    assert snap["fraction"] == 1.0 and [e["done"] for e in snap["events"]] == [1, 2, 3, 4, 5]
    assert job._thread is not threading.current_thread()


def test_job_can_be_cancelled_midway():
    gate = threading.Event()
    job = Job(counting, 1000, gate=gate).start()
    job.cancel()
    gate.set()
    assert job.wait(10) == "cancelled" and job.result is None


def test_job_failure_is_a_message_not_a_crash():
    def bad(progress):
        raise InputError("data.csv: column 'age' not found")

    def buggy(progress):
        return 1 / 0

    assert Job(bad).start().wait(10) == "failed"
    job = Job(bad).start()
    job.wait(10)
    assert job.snapshot()["error"] == "data.csv: column 'age' not found"
    job = Job(buggy).start()
    job.wait(10)
    assert job.status == "failed" and "ZeroDivisionError" in job.error
