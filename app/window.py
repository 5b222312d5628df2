"""The wizard window: step list, pages, log, and the one progress bar / Cancel button every job reports to."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QThreadPool
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app import pages
from app.workers import Eta, Job
from core.jobs import Progress
from core.project import Project

SETTINGS = ("Tweety Studio", "Tweety Studio")

# Where a reopened project resumes: the page that runs its first unfinished stage.
STAGE_PAGE = {"data": "data", "tokenizer": "tokenizer", "align": "align", "map": "align", "init": "align",
              "finetune": "finetune", "evaluate": "evaluate", "export": "export", None: "chat"}


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Tweety Studio")
        self.resize(1200, 760)
        self.project: Project | None = None
        self.job: Job | None = None
        self.busy = False  # from run_job until the job's outcome has been handled on the GUI thread
        self.pool = QThreadPool.globalInstance()
        self._eta = Eta()

        self.steps = QListWidget()
        self.steps.setFixedWidth(190)
        self.stack = QStackedWidget()
        self.pages: dict[str, pages.Page] = {}
        for cls in pages.PAGES:
            page = cls(self)
            self.pages[page.key] = page
            self.stack.addWidget(page)
            self.steps.addItem(page.title)
        self.steps.currentRowChanged.connect(self._show_page)

        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(5000)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.eta_label = QLabel("Ready")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_job)

        top = QWidget()
        row = QHBoxLayout(top)
        row.addWidget(self.steps)
        row.addWidget(self.stack, 1)
        bottom = QWidget()
        col = QVBoxLayout(bottom)
        bar = QHBoxLayout()
        bar.addWidget(self.progress_bar, 1)
        bar.addWidget(self.eta_label, 2)
        bar.addWidget(self.cancel_button)
        col.addLayout(bar)
        col.addWidget(self.log_view)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(top)
        split.addWidget(bottom)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        self.setCentralWidget(split)
        self._update_steps()
        self.steps.setCurrentRow(0)
        # Keyboard: Ctrl+PgDown / Ctrl+PgUp step through the wizard (like tabs), Esc cancels the running job.
        QShortcut(QKeySequence("Ctrl+PgDown"), self, lambda: self.step_by(1))
        QShortcut(QKeySequence("Ctrl+PgUp"), self, lambda: self.step_by(-1))
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self.cancel_job)
        self.cancel_button.setToolTip("Stop the running job (Esc)")
        self.steps.setToolTip("Ctrl+PgDown / Ctrl+PgUp: next / previous step")

    # -- project --
    def new_project(self, folder: str | Path) -> None:
        self._set_project(Project.create(folder))
        self.log(f"Created project {folder}")

    def open_project(self, folder: str | Path) -> None:
        self._set_project(Project.open(folder))
        self.log(f"Opened project {folder} (finished: {', '.join(self.project.finished) or 'nothing yet'})")

    def _set_project(self, project: Project) -> None:
        self.project = project
        QSettings(*SETTINGS).setValue("last_project", str(project.folder))
        self._update_steps()
        for page in self.pages.values():
            page.project_changed()
        self.go(STAGE_PAGE[project.next_stage] if project.finished else "source")

    def _update_steps(self) -> None:
        # Without a project only the Project page makes sense; every other page acts on one.
        for i in range(1, self.steps.count()):
            item = self.steps.item(i)
            flags = item.flags()
            enabled = self.project is not None and self.stack.widget(i).available
            item.setFlags(flags | Qt.ItemFlag.ItemIsEnabled if enabled else flags & ~Qt.ItemFlag.ItemIsEnabled)

    def go(self, key: str) -> None:
        self.steps.setCurrentRow(list(self.pages).index(key))

    def step_by(self, delta: int) -> None:
        """Go to the next (or previous) step that is enabled."""
        row = self.steps.currentRow() + delta
        while 0 <= row < self.steps.count():
            if self.steps.item(row).flags() & Qt.ItemFlag.ItemIsEnabled:
                self.steps.setCurrentRow(row)
                return
            row += delta

    def _show_page(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        self.stack.widget(row).shown()

    def stage_done(self) -> None:
        """A page finished a stage: later pages may now have something to show."""
        self._update_steps()
        self.pages["project"].project_changed()

    # -- jobs --
    def run_job(self, fn: Callable[..., Any], on_done: Callable[[Any], None], *, name: str,
                on_error: Callable[[str], None] | None = None, on_end: Callable[[], None] | None = None) -> Job | None:
        """Run `fn(progress=, cancel=)` in the pool, reporting to the bar and log. One job at a time: every stage
        writes into the same project, so two at once could read each other's half-finished state."""
        if self.busy:
            self.show_warning(f"“{self.job.name}” is still running; wait for it or press Cancel.")
            return None
        job = Job(fn, name)
        s = job.signals
        s.progress.connect(self._on_progress)
        s.finished.connect(lambda result: (self._job_ended(f"{name}: done"), on_done(result)))
        s.failed.connect(lambda msg: (self._job_ended(f"{name} failed: {msg}"),
                                      on_error(msg) if on_error else self.show_warning(msg)))
        s.crashed.connect(lambda tb: (self._job_ended(f"{name} crashed:\n{tb}"),
                                      self.show_warning(f"{name} stopped because of an unexpected error "
                                                        "(details in the log). Please report it.")))
        s.cancelled.connect(lambda: self._job_ended(f"{name}: cancelled"))
        for signal in (s.finished, s.failed, s.crashed, s.cancelled):
            if on_end:
                signal.connect(on_end)
        self.job, self.busy = job, True
        self._eta = Eta()
        self.progress_bar.setRange(0, 0)
        self.eta_label.setText(f"{name}…")
        self.cancel_button.setEnabled(True)
        self.log(f"{name}…")
        return job.start(self.pool)

    def cancel_job(self) -> None:
        if self.busy:
            self.job.cancel()
            self.eta_label.setText("Cancelling…")
            self.log(f"{self.job.name}: cancelling")

    def _on_progress(self, p: Progress) -> None:
        if p.total:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(1000 * min(1.0, p.done / p.total)))
        else:
            self.progress_bar.setRange(0, 0)  # busy indicator
        self.eta_label.setText(self._eta.update(p))

    def _job_ended(self, message: str) -> None:
        self.busy = False
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.eta_label.setText(message.splitlines()[0])
        self.cancel_button.setEnabled(False)
        self.log(message)

    # -- messages --
    def log(self, message: str) -> None:
        self.log_view.appendPlainText(message)

    def show_warning(self, message: str) -> None:
        QMessageBox.warning(self, "Tweety Studio", message)

    def confirm(self, question: str) -> bool:
        answer = QMessageBox.question(self, "Tweety Studio", question)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.busy:
            if not self.confirm(f"“{self.job.name}” is still running. Stop it and quit?"):
                event.ignore()
                return
            self.job.cancel()
        # Workers touch the project folder: let them reach their next cancel check and clean up first.
        self.pool.waitForDone()
        event.accept()
