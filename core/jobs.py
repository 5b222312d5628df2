"""Progress reporting, cancellation and atomic outputs shared by every long-running stage.

The GUI and the CLI pass the same two things into `core`: a `ProgressFn` (called with plain `Progress` records, safe to
forward through a Qt signal) and a `CancelToken` (set from another thread; the stage raises `Cancelled` at its next
check). Outputs are written to a temporary sibling and renamed into place, so a cancelled or failed stage never leaves
a half-written file or folder behind.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import TweetyError


class Cancelled(Exception):
    """Raised inside a stage when the user asked to stop."""


class CancelToken:
    """Set from another thread. `pause()` makes the next `check()` block until `resume()` (or `cancel()`), so a
    stage pauses at a consistent point without knowing about pausing; `waiting` is set while a `check()` blocks in
    a pause (the step under way has finished and no other starts until `resume()`: what a paused run's display, and
    its test, can rely on)."""

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._paused = self._cancelled = False
        self.waiting = threading.Event()

    def cancel(self) -> None:
        with self._state:
            self._cancelled = True
            self._state.notify_all()

    def pause(self) -> None:
        with self._state:
            self._paused = True

    def resume(self) -> None:
        with self._state:
            self._paused = False
            self._state.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def paused(self) -> bool:
        return self._paused

    def check(self) -> None:
        with self._state:
            while self._paused and not self._cancelled:
                self.waiting.set()
                self._state.wait()
            self.waiting.clear()
            if self._cancelled:
                raise Cancelled()


@dataclass(frozen=True)
class Progress:
    stage: str  # short, user-facing: "Training tokenizer"
    done: float
    total: float | None  # None: no estimate (indeterminate bar)
    message: str = ""
    metrics: dict[str, float] | None = None  # figures a stage reports as it goes (fine-tuning: loss, BPB, tokens/s)


ProgressFn = Callable[[Progress], None]


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
            return f"{self.name}… — {self.time(now)}"
        doing = f"{p.stage} — {p.message + ' — ' if p.message else ''}"
        if p.total is None or p.total <= 0:  # no fraction: say what it is doing and for how long
            return f"{doing}{self.time(now)}"
        fraction = min(1.0, p.done / p.total)
        return f"{doing}100%" if fraction >= 1 else f"{doing}{fraction:.0%} — {self.time(now)}"

    def time(self, now: float | None = None) -> str:
        """“about 1:23 left” once the rate is measured, else “0:12 elapsed”."""
        now = time.monotonic() if now is None else now
        if self._eta is None or self._last is None or not self._last.total:
            return f"{format_seconds(now - self._start)} elapsed"
        left, when = self._eta
        return f"about {format_seconds(max(0.0, left - (now - when)))} left"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Laps:
    """Wall seconds per stage of a run, each stage timed from the end of the one before."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = time.monotonic()

    def __call__(self, stage: str) -> float:
        now = time.monotonic()
        self.seconds[stage] = round(now - self._clock, 2)
        self._clock = now
        return self.seconds[stage]


class Reporter:
    """What a stage holds: one call both reports progress and honours cancellation."""

    def __init__(self, progress: ProgressFn | None, cancel: CancelToken | None, stage: str):
        self._progress, self._cancel, self.stage = progress, cancel, stage

    def __call__(
        self, done: float, total: float | None = None, message: str = "", metrics: dict[str, float] | None = None
    ) -> None:
        # Report first, then honour cancel/pause: what was done is always told (a curve never misses a point).
        if self._progress is not None:
            self._progress(Progress(self.stage, done, total, message, metrics))
        if self._cancel is not None:
            self._cancel.check()

    def check(self) -> None:
        if self._cancel is not None:
            self._cancel.check()

    def wait(
        self, thread: threading.Thread | multiprocessing.process.BaseProcess, message: str = "", poll: float = 0.1
    ) -> None:
        """Wait for a worker thread or process running native code, staying cancellable and reporting elapsed time.
        On cancel a thread is abandoned (it only writes into a temporary folder); the caller kills a process."""
        start = time.monotonic()
        while thread.is_alive():
            self(time.monotonic() - start, None, message)
            thread.join(poll)


def run_in_child(report: Reporter, target: Callable[..., None], args: tuple, message: str = "") -> int | None:
    """`target(*args)` in a child process, waited for as `Reporter.wait` does; returns its exit code. For native code
    that never checks the cancel token (SentencePiece's trainer, fast_align, eflomal): on cancel, or any error while
    waiting, the child is killed, so its CPU use ends with the job instead of running on unseen. Spawned, not forked
    (a fork of a process with threads — Qt's, torch's — may deadlock); `target` must be importable by name."""
    worker = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    main = sys.modules["__main__"]
    script = getattr(main, "__file__", None)
    if script is not None and not os.path.isfile(script):
        # A script read from stdin (`python - <<EOF`, as benchmarks/gpu.sh does) is named "<stdin>": spawn would
        # re-run it in the child from that path and fail. `target` is importable by name, so the child needs no main.
        del main.__file__
    try:
        worker.start()
    finally:
        if script is not None:
            main.__file__ = script
    try:
        report.wait(worker, message)
    finally:
        if worker.is_alive():
            worker.kill()
        worker.join()
    return worker.exitcode


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    with _named_as(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes private files; outputs should look like any other file
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, replace_ours: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; move it into place only if the block succeeds.

    An existing `path` is replaced only if it is empty or was written by us (has `.tweety` marker) — never a
    user's own folder."""
    path = Path(path)
    with _named_as(path):
        check_output_dir(path, replace_ours=replace_ours)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
            (tmp / MARKER).write_text("written by Tweety Studio; safe to replace\n")
            unprivate(tmp)
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _named_as(path: Path) -> Iterator[None]:
    """An operating-system failure while writing `path` names `path`, the destination the user chose, rather than
    the hidden sibling the atomic writers write first (`.spanish.gguf.j3t24s17.tmp`, `.model.old`), which means
    nothing to them and is gone by the time they look. Every atomic output, of every stage, is told this way."""
    try:
        yield
    except OSError as error:
        for attr in ("filename", "filename2"):
            name = getattr(error, attr)
            if isinstance(name, (str, bytes)):
                setattr(error, attr, _destination(Path(os.fsdecode(name)), path))
        raise


def _destination(name: Path, path: Path) -> str:
    """`name` with the temporary sibling of `path` in it replaced by `path` (a file inside it stays inside)."""
    try:
        first, *inside = name.relative_to(path.parent).parts
    except ValueError:  # elsewhere (or `path`'s folder itself)
        return str(name)
    ours = first.startswith(f".{path.name}.") and first.endswith((".tmp", ".old"))
    return str(path.joinpath(*inside)) if ours else str(name)


MARKER = ".tweety"


def unprivate(folder: Path) -> None:
    """Give files written privately (safetensors writes 0600) the permissions any other output file gets."""
    mode = 0o666 & ~_umask()
    for f in folder.rglob("*"):
        if f.is_file() and not f.stat().st_mode & 0o077:
            f.chmod(mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(path: Path, *, replace_ours: bool = True) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise TweetyError("the output exists and is a file", path=path, fix="choose a new folder name")
    if any(path.iterdir()) and not (replace_ours and (path / MARKER).exists()):
        raise TweetyError(
            "the output folder exists and is not empty; Tweety Studio never overwrites your files",
            path=path,
            fix="choose a new or empty folder",
        )


def require_free_space(folder: str | Path, needed: int, what: str) -> None:
    """Refuse up front, in plain words, a long job whose output (`needed` bytes, estimated) cannot fit on the disk
    of `folder` — rather than failing when the disk fills an hour later. 5% and 16 MB of slack for estimates."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    free = shutil.disk_usage(path).free
    if needed * 1.05 + (16 << 20) > free:
        raise TweetyError(
            f"the disk is too full: {what} needs about {_size(needed)}, and the disk has {_size(free)} free",
            path=Path(folder),
            fix="free some space on that disk, or choose a folder on another disk",
        )


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"
