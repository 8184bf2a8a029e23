"""Long work off the caller's thread: progress snapshots, cancellation, errors kept as messages.

A UI starts a :class:`Job`, polls :meth:`Job.snapshot` (e.g. from a Streamlit fragment) and may call
:meth:`Job.cancel`; the work function receives a :class:`~normcore._utils.progress.Progress` as ``progress=``.
"""

from __future__ import annotations

import atexit
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from normcore._utils.errors import InputError
from normcore._utils.progress import Cancelled, Progress
from normcore._utils.threads import adapt_threads

_RUNNING: weakref.WeakSet[Job] = weakref.WeakSet()
EXIT_WAIT_S = 10.0


@atexit.register
def _stop_running_jobs() -> None:
    """At interpreter exit, cancel running jobs and give them a moment to stop: a daemon thread still inside
    torch when the interpreter tears down aborts the process ("terminate called without an active exception")."""
    jobs = [job for job in list(_RUNNING) if job.running]
    for job in jobs:
        job.cancel()
    deadline = time.monotonic() + EXIT_WAIT_S
    for job in jobs:
        job.wait(max(0.0, deadline - time.monotonic()))


class Job:
    """Run ``fn(*args, progress=..., **kwargs)`` in a daemon thread (cancelled at interpreter exit)."""

    def __init__(self, fn: Callable[..., Any], *args, name: str = "job", **kwargs):
        self.name = name
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._lock = threading.Lock()
        self._progress = Progress(callback=self._record)
        self._thread = threading.Thread(target=self._run, name=f"normcore-{name}", daemon=True)
        self.status = "pending"
        self.result: Any = None
        self.error: str | None = None
        self.events: list[dict] = []
        self.started = self.finished = None

    def _record(self, stage: str, done: int, total: int, **info) -> None:
        with self._lock:
            self.events.append({"stage": stage, "done": done, "total": total, "t": time.time(), **info})
            if len(self.events) > 5000:  # bounded memory for very long runs
                del self.events[: len(self.events) - 5000]

    def _run(self) -> None:
        try:
            adapt_threads()  # the cores other work leaves free now
            result = self._fn(*self._args, progress=self._progress, **self._kwargs)
            with self._lock:
                self.result, self.status = result, "done"
        except Cancelled:
            with self._lock:
                self.status = "cancelled"
        except InputError as exc:
            with self._lock:
                self.error, self.status = str(exc), "failed"
        except Exception as exc:  # keep the UI alive; the message names the failure, details go to the log
            with self._lock:
                self.error = f"{type(exc).__name__}: {exc}"
                self.status = "failed"
                self.traceback = traceback.format_exc()
        finally:
            self.finished = time.time()

    def start(self) -> Job:
        self.status, self.started = "running", time.time()
        _RUNNING.add(self)
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._progress.cancel()

    def wait(self, timeout: float | None = None) -> str:
        self._thread.join(timeout)
        return self.status

    @property
    def running(self) -> bool:
        return self.status == "running"

    def snapshot(self) -> dict:
        """Status, the latest progress event, the fraction done and all events (copies, thread-safe)."""
        with self._lock:
            last = self.events[-1] if self.events else None
            fraction = (last["done"] / last["total"]) if last and last["total"] else 0.0
            return {"status": self.status, "last": dict(last) if last else None, "fraction": min(1.0, fraction),
                    "events": list(self.events), "error": self.error}
