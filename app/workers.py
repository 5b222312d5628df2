"""Running `core` calls off the GUI thread: one `Job` type reused by every page.

A job wraps `fn(progress=..., cancel=token)`; `core` calls `progress` from the worker thread with plain
`core.jobs.Progress` records, which we forward through a Qt signal (queued onto the GUI thread), so widgets are only
ever touched from the GUI thread."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.errors import TweetyError, plain_os_error
from core.jobs import Cancelled, CancelToken, Progress

JobFn = Callable[..., Any]  # fn(progress=ProgressFn, cancel=CancelToken) -> result


def collect_garbage_on_gui_thread():
    """Python's cycle collector runs in whichever thread happens to allocate; a worker thread that collects a cycle
    holding Qt objects deletes them there, and Qt crashes (a segfault in a pool thread, "Garbage-collecting", seen
    in a test run). pyqtgraph's collector turns automatic collection off and collects on a timer of the GUI thread.
    Keep the returned object for as long as the application runs."""
    from pyqtgraph.util.garbage_collector import GarbageCollector

    return GarbageCollector()


class JobSignals(QObject):
    progress = Signal(object)  # core.jobs.Progress
    finished = Signal(object)  # the fn's return value
    failed = Signal(str)  # a TweetyError's message: the user can act on it
    crashed = Signal(str)  # any other exception's traceback: a bug, logged in full
    cancelled = Signal()


class Job(QRunnable):
    """One call of `fn` on the global thread pool. Exactly one of finished/failed/crashed/cancelled is emitted."""

    PROGRESS_INTERVAL = 0.05  # seconds; stages may report per item and a flood of signals would stall the GUI

    def __init__(self, fn: JobFn, name: str = "job"):
        super().__init__()
        self.setAutoDelete(False)  # the window keeps a reference while it runs; Qt must not delete it under us
        self.fn, self.name = fn, name
        self.token = CancelToken()
        self.signals = JobSignals()
        self.running = False
        self._last_progress = 0.0

    def start(self, pool: QThreadPool | None = None) -> Job:
        self.running = True
        (pool or QThreadPool.globalInstance()).start(self)
        return self

    def cancel(self) -> None:
        self.token.cancel()

    def _progress(self, p: Progress) -> None:
        now = time.monotonic()
        final = p.total is not None and p.done >= p.total
        # Events with metrics are points of a curve (one per fine-tuning step): never dropped.
        if final or p.metrics or now - self._last_progress >= self.PROGRESS_INTERVAL:
            self._last_progress = now
            self.signals.progress.emit(p)

    def run(self) -> None:  # worker thread
        try:
            result = self.fn(progress=self._progress, cancel=self.token)
        except Cancelled:
            self._done(self.signals.cancelled.emit)
        except TweetyError as error:
            message = str(error)
            self._done(lambda: self.signals.failed.emit(message))
        except BaseException as error:  # noqa: BLE001 - shown to the user as a bug report, never swallowed
            plain = plain_os_error(error)  # a full disk, a denied permission…: the user's to fix, not a bug
            if plain is not None:
                message = str(plain)
                self._done(lambda: self.signals.failed.emit(message))
            else:
                tb = traceback.format_exc()
                self._done(lambda: self.signals.crashed.emit(tb))
        else:
            # Returned normally: the work is done (and recorded) even if Cancel came too late to stop it; streaming
            # chat also returns normally on cancel, with the reply so far.
            self._done(lambda: self.signals.finished.emit(result))

    def _done(self, emit: Callable[[], None]) -> None:
        self.running = False
        emit()


class TextRelay(QObject):
    """Streams text (chat tokens) from a worker thread to the GUI: pass `relay.text.emit` as `on_text`."""

    text = Signal(str)
