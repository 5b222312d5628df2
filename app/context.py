"""What a wizard page may ask of the window it sits in — and nothing more.

Pages never import the window nor reach into each other's widgets: each gets a `Context` (the main window implements
it), starts its `core` job through `run_job`, and talks to the user through `log`, `show_warning` and `confirm`.
When one page's result concerns another (an exported file the Chat page should offer), the page emits a signal and
the window relays it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PySide6.QtCore import QThreadPool

    from app.workers import Job
    from core.project import Project


class Context(Protocol):
    project: Project | None  # the open project (None until one is created or opened)
    busy: bool  # a job is running: it may read or write the project folder, so nothing else may
    pool: QThreadPool  # for read-only side jobs (file previews) that run alongside the one stage job

    def run_job(
        self,
        fn: Callable[..., Any],
        on_done: Callable[[Any], None],
        *,
        name: str,
        on_error: Callable[[str], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> Job | None:
        """Run `fn(progress=, cancel=)` off the GUI thread, reporting to the progress bar and log; None (after
        telling the user) while another job runs."""

    def cancel_job(self) -> None: ...

    def log(self, message: str) -> None: ...

    def show_warning(self, message: str) -> None: ...

    def confirm(self, question: str, details: str = "") -> bool:
        """Yes or No; `details` (plain text or HTML, e.g. a licence's terms) is shown scrollable above the question."""

    def go(self, key: str) -> None:
        """Show the page with this key."""

    def stage_done(self) -> None:
        """A stage finished (or the project's record changed): the step list and overview refresh."""

    def new_project(self, folder: str | Path) -> None: ...

    def open_project(self, folder: str | Path) -> None: ...
