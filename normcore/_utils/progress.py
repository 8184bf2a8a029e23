"""Progress reporting and cooperative cancellation for long-running work."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


class Cancelled(RuntimeError):
    """Raised inside long work when its cancellation token was set."""


@dataclass
class Progress:
    """A progress sink: ``update(stage, done, total, **info)`` calls ``callback`` and checks the token.

    ``cancel_event`` is a ``threading.Event``; setting it from another thread (a Cancel button,
    a signal handler) makes the next ``update``/``check`` raise :class:`Cancelled`.
    """

    callback: Callable[..., None] | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("cancelled by user")

    def update(self, stage: str, done: int, total: int, **info) -> None:
        self.check()
        if self.callback is not None:
            self.callback(stage, done, total, **info)

    def cancel(self) -> None:
        self.cancel_event.set()

    def as_stage(self, stage: str) -> Progress:
        """A sink that reports every update of nested work under ``stage`` (named as what it is for, not e.g.
        "sample"), to this callback and with this cancellation token."""
        def report(_: str, done: int, total: int, **info) -> None:
            self.update(stage, done, total, **info)

        return Progress(callback=report, cancel_event=self.cancel_event)


def as_progress(progress: Progress | Callable[..., None] | None) -> Progress:
    """Accept a :class:`Progress`, a bare callback or ``None``."""
    if isinstance(progress, Progress):
        return progress
    return Progress(callback=progress)
