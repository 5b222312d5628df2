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


class Eta:
    """What a running job is doing and the time left, from the rate observed in this run: a phase of a stage (its
    reports in one unit: tokenizing 0…30,000 lines, then EM steps 0…100) is timed on its own, from its first report
    after a short warm-up — a first slow step (loading, caches) is not the pace to come, nor another phase's. Until
    then, and for a step without a fraction, the time it has been running."""

    WARMUP_S = 2.0  # of a phase, not counted in its rate
    SPAN_S = 2.0  # of measured progress before a time left is shown

    def __init__(self, name: str = "") -> None:
        self.name = name  # the job's, shown until its first report
        self._stage: str | None = None
        self._start = self._phase_start = time.monotonic()
        self._total: float | None = None
        self._last_done = 0.0
        self._ref: tuple[float, float] | None = None  # (time, done) where the phase's rate is measured from
        self._eta: tuple[float, float] | None = None  # (seconds left, when estimated)
        self._told = False  # the stage reports its own ETA
        self._last: Progress | None = None

    def update(self, p: Progress, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        new_stage = p.stage != self._stage
        if new_stage:
            self._stage, self._start, self._told = p.stage, now, False
        if new_stage or p.total != self._total or p.done < self._last_done:  # a new phase: its own units and pace
            self._phase_start, self._total, self._ref, self._eta = now, p.total, None, None
        self._last, self._last_done = p, p.done
        if p.total and p.total > 0:
            if p.metrics and "eta_s" in p.metrics:  # the stage knows better (fine-tuning: evaluations included)
                self._eta, self._told = (p.metrics["eta_s"], now), True
            elif not self._told:
                self._measure(p, now)
        return self.text(now)

    def _measure(self, p: Progress, now: float) -> None:
        if self._ref is None:
            if now - self._phase_start >= self.WARMUP_S:
                self._ref = (now, p.done)
            return
        since, done = now - self._ref[0], p.done - self._ref[1]
        if since >= self.SPAN_S and done > 0:
            self._eta = ((p.total - p.done) * since / done, now)

    def text(self, now: float | None = None) -> str:
        """The status line now: between reports (the window asks every second) the time left counts down and the
        time elapsed counts up, so a long step is seen to be alive."""
        now = time.monotonic() if now is None else now
        p = self._last
        if p is None:
            return f"{self.name}… — {format_seconds(now - self._start)} elapsed"
        doing = f"{p.stage} — {p.message + ' — ' if p.message else ''}"
        if p.total is None or p.total <= 0:  # no fraction: say what it is doing and for how long
            return f"{doing}{format_seconds(now - self._start)} elapsed"
        fraction = min(1.0, p.done / p.total)
        if fraction >= 1:
            return f"{doing}100%"
        if self._eta is None:
            return f"{doing}{fraction:.0%} — {format_seconds(now - self._start)} elapsed"
        left, when = self._eta
        return f"{doing}{fraction:.0%} — about {format_seconds(max(0.0, left - (now - when)))} left"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
