"""The wizard window: step list, pages, log, and the one progress bar / Cancel button every job reports to.

The window is the pages' `app.context.Context`; pages know nothing of it or of each other. It relays what concerns
more than one page as signals: `project_opened` (every page shows the new project), `stage_finished` (the overview
follows), and a page's own signals to the page they concern (an exported file → the Chat page)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QSize, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QBrush, QCloseEvent, QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app import pages
from app.pages.widgets import literal
from app.workers import Job
from core.jobs import Eta, Progress
from core.project import Project

SETTINGS = ("Tweety Studio", "Tweety Studio")


class PageStack(QStackedWidget):
    """The wizard's pages, as large as the page shown: a stack is otherwise as large as its largest page, and in its
    scroll area a short page would scroll for the sake of a tall one."""

    def sizeHint(self) -> QSize:
        page = self.currentWidget()
        return page.sizeHint() if page is not None else super().sizeHint()

    def minimumSizeHint(self) -> QSize:
        page = self.currentWidget()
        return page.minimumSizeHint() if page is not None else super().minimumSizeHint()

    def heightForWidth(self, width: int) -> int:
        """The least height the page needs at `width` (its wrapped texts taller when narrower): the scroll area
        scrolls below it, and gives the page all the height there is above it."""
        page = self.currentWidget()
        if page is None or page.layout() is None:
            return super().heightForWidth(width)
        least = page.layout().minimumHeightForWidth(width)
        return least if least >= 0 else page.minimumSizeHint().height()


class MainWindow(QMainWindow):
    project_opened = Signal()  # a project was created or opened: every page shows what it already has
    stage_finished = Signal()  # a page finished a stage (or changed the project's record)

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Tweety Studio")
        self.resize(1200, 760)
        self.project: Project | None = None
        self.job: Job | None = None
        self.busy = False  # from run_job until the job's outcome has been handled on the GUI thread
        self.pool = QThreadPool.globalInstance()
        self._eta = Eta()
        # Every second while a job runs, the status line is redrawn: a step that reports no fraction (or nothing,
        # for 38 s) shows its time running up, and the time left counts down between reports.
        self._clock = QTimer(self, interval=1000)
        self._clock.timeout.connect(self._tick)

        self.steps = QListWidget()
        self.steps.setFixedWidth(210)
        self.stack = PageStack()
        self.pages: dict[str, pages.Page] = {}
        for cls in pages.PAGES:
            page = cls(self)
            self.pages[page.key] = page
            self.stack.addWidget(page)
            self.steps.addItem(page.title)
            self.project_opened.connect(page.project_changed)
        self.stage_finished.connect(self.pages["project"].project_changed)
        self.pages["export"].exported.connect(self.pages["chat"].offer_model_file)
        self.steps.currentRowChanged.connect(self._show_page)

        self.log_view = QPlainTextEdit(readOnly=True)
        self.log_view.setMaximumBlockCount(5000)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.eta_label = QLabel("Ready")
        # One line under the pages: a long message (a job's error) is cut at the window's edge — whole in its tooltip
        # and in the log — instead of widening the window, which then stayed that wide.
        self.eta_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_job)

        self.back_button = QPushButton("◀ Back")
        self.next_button = QPushButton("Next ▶")
        self.back_button.clicked.connect(lambda: self.step_by(-1))
        self.next_button.clicked.connect(lambda: self.step_by(1))
        self.next_button.setDefault(True)
        nav = QHBoxLayout()
        nav.addWidget(self.back_button)
        nav.addStretch(1)
        self.step_hint = QLabel()
        nav.addWidget(self.step_hint)
        nav.addWidget(self.next_button)
        top = QWidget()
        row = QHBoxLayout(top)
        row.addWidget(self.steps)
        page_col = QVBoxLayout()
        # The page scrolls when the window is smaller than it (an 11-point font on a 1280×800 screen): the window's
        # own minimum stays that of its frame, never taller than the screen.
        pane = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        pane.setWidget(self.stack)
        page_col.addWidget(pane, 1)
        page_col.addLayout(nav)
        row.addLayout(page_col, 1)
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
        self.steps.setToolTip(
            "✓ done · ▶ this step · ○ needs an earlier step first\nCtrl+PgDown / Ctrl+PgUp: next / previous step"
        )
        self._build_menu()

    def _build_menu(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        for text, slot, keys in (
            ("&New project…", lambda: self._project_page_action("new"), QKeySequence.StandardKey.New),
            ("&Open project…", lambda: self._project_page_action("open"), QKeySequence.StandardKey.Open),
        ):
            action = QAction(text, self)
            action.setShortcut(keys)
            action.triggered.connect(slot)
            file_menu.addAction(action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)
        self.addAction(self.quit_action)
        help_menu = bar.addMenu("&Help")
        guide = QAction("&Help: the wizard, step by step", self)
        guide.setShortcut(QKeySequence.StandardKey.HelpContents)
        guide.triggered.connect(self.open_help)
        about = QAction("&About Tweety Studio", self)
        about.triggered.connect(self.show_about)
        help_menu.addAction(guide)
        help_menu.addAction(about)

    def _project_page_action(self, which: str) -> None:
        self.go("project")
        page = self.pages["project"]
        page.name.setFocus() if which == "new" else page._open()

    def open_help(self) -> None:
        from app.guide import GuideDialog

        self.guide = GuideDialog(self)
        self.guide.show()

    def about_text(self) -> str:
        return about_text()

    def show_about(self) -> None:
        QMessageBox.about(self, "About Tweety Studio", self.about_text())

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
        self.project_opened.emit()
        self.go(pages.page_of(project.next_stage) if project.finished else "source")

    def step_state(self, key: str) -> str:
        """ "done", "current", "needs" (an earlier step first) or "open" (can run, not run yet)."""
        row = self.steps.currentRow()
        if row >= 0 and key == list(self.pages)[row]:
            return "current"
        if key == "project":
            return "done" if self.project is not None else "open"
        if self.project is None:
            return "needs"
        stages = self.project.state.stages
        if key == "source":
            return "done"
        step = pages.step_of(key)
        if step is not None and step.done in stages:
            return "done"
        if step is not None and step.needs and step.needs not in stages:
            return "needs"
        return "open"

    def _update_steps(self) -> None:
        # Without a project only the Project page makes sense; every other page acts on one.
        marks = {"done": "✓", "current": "▶", "needs": "○", "open": "•"}
        tips = {"done": "done", "current": "this step", "needs": "needs an earlier step first", "open": "ready to run"}
        for i, page in enumerate(self.pages.values()):
            item = self.steps.item(i)
            state = self.step_state(page.key)
            item.setText(f"{marks[state]}  {page.title}")
            item.setToolTip(tips[state])
            item.setForeground(QBrush(QColor("#999" if state == "needs" else "#1b7f3b" if state == "done" else "#000")))
            if i == 0:
                continue
            flags = item.flags()
            enabled = self.project is not None and self.stack.widget(i).available
            item.setFlags(flags | Qt.ItemFlag.ItemIsEnabled if enabled else flags & ~Qt.ItemFlag.ItemIsEnabled)
        self._update_nav()

    def _update_nav(self) -> None:
        row = self.steps.currentRow()
        keys = list(self.pages)
        nxt = next(
            (r for r in range(row + 1, len(keys)) if self.steps.item(r).flags() & Qt.ItemFlag.ItemIsEnabled), None
        )
        self.back_button.setEnabled(row > 0)
        self.next_button.setEnabled(nxt is not None)
        self.next_button.setText(literal(f"Next: {self.pages[keys[nxt]].title} ▶") if nxt is not None else "Next ▶")
        self.step_hint.setText("" if self.project is not None else "Create or open a project to begin.")

    def go(self, key: str) -> None:
        self.steps.setCurrentRow(list(self.pages).index(key))

    def step_by(self, delta: int) -> None:
        """Go to the next (or previous) step that is enabled. Forward only once the page is ready to be left (the
        Language & data page first records what it shows, and moves on when that succeeded)."""
        page = self.stack.currentWidget()
        if delta > 0 and not page.ready_to_leave(lambda: self.stack.currentWidget() is page and self.step_by(delta)):
            return
        row = self.steps.currentRow() + delta
        while 0 <= row < self.steps.count():
            if self.steps.item(row).flags() & Qt.ItemFlag.ItemIsEnabled:
                self.steps.setCurrentRow(row)
                return
            row += delta

    def _show_page(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        self.stack.updateGeometry()  # the scroll area asks the new page's size
        self.stack.widget(row).shown()
        self._update_steps()

    def stage_done(self) -> None:
        """A page finished a stage: later pages may now have something to show."""
        self._update_steps()
        self.stage_finished.emit()

    # -- jobs --
    def run_job(
        self,
        fn: Callable[..., Any],
        on_done: Callable[[Any], None],
        *,
        name: str,
        on_error: Callable[[str], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> Job | None:
        """Run `fn(progress=, cancel=)` in the pool, reporting to the bar and log. One job at a time: every stage
        writes into the same project, so two at once could read each other's half-finished state."""
        if self.busy:
            self.show_warning(f"“{self.job.name}” is still running; wait for it or press Cancel.")
            return None
        job = Job(fn, name)
        s = job.signals
        s.progress.connect(self._on_progress)
        s.finished.connect(lambda result: (self._job_ended(f"{name}: done"), on_done(result)))
        s.failed.connect(
            lambda msg: (
                self._job_ended(f"{name} failed: {plain_message(msg)}"),
                on_error(plain_message(msg)) if on_error else self.show_warning(msg),
            )
        )
        s.crashed.connect(
            lambda tb: (
                self._job_ended(f"{name} crashed:\n{tb}"),
                self.show_warning(
                    f"{name} stopped because of an unexpected error (details in the log). Please report it."
                ),
            )
        )
        s.cancelled.connect(lambda: self._job_ended(f"{name}: cancelled"))
        for signal in (s.finished, s.failed, s.crashed, s.cancelled):
            if on_end:
                signal.connect(on_end)
        self.job, self.busy = job, True
        self._eta = Eta(name)
        self._clock.start()
        self.progress_bar.setRange(0, 0)
        self._status(f"{name}…")
        self.cancel_button.setEnabled(True)
        self.log(f"{name}…")
        return job.start(self.pool)

    def cancel_job(self) -> None:
        if self.busy:
            self.job.cancel()
            self._status("Cancelling…")
            self.log(f"{self.job.name}: cancelling")

    def _on_progress(self, p: Progress) -> None:
        if p.total:
            self.progress_bar.setRange(0, 1000)
            self.progress_bar.setValue(int(1000 * min(1.0, p.done / p.total)))
        else:
            self.progress_bar.setRange(0, 0)  # busy indicator
        self._status(self._eta.update(p))

    def _tick(self) -> None:
        if self.busy and not (self.job.token.cancelled or self.job.token.paused):  # “Cancelling…” stays as said
            self._status(self._eta.text())

    def _status(self, text: str) -> None:
        self.eta_label.setText(text)
        self.eta_label.setToolTip(text)

    def _job_ended(self, message: str) -> None:
        self.busy = False
        self._clock.stop()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self._status(message.splitlines()[0])
        self.cancel_button.setEnabled(False)
        self.log(message)

    # -- messages --
    def log(self, message: str) -> None:
        self.log_view.appendPlainText(message)

    def show_warning(self, message: str) -> None:
        QMessageBox.warning(self, "Tweety Studio", plain_message(message))

    def confirm(self, question: str, details: str = "") -> bool:
        if details:
            return TextQuestion(self, question, details).exec() == QDialog.DialogCode.Accepted
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


class TextQuestion(QDialog):
    """A question about a long text (a licence's terms): the text to read in a scrollable box, the question under it,
    Yes and No — a message box would grow off the screen."""

    def __init__(self, parent: QWidget, question: str, details: str):
        super().__init__(parent)
        self.setWindowTitle("Tweety Studio")
        self.resize(820, 640)
        self.text = QTextBrowser()
        self.text.setOpenExternalLinks(True)
        if details.lstrip().startswith("<"):  # HTML (the Gemma terms ship as an HTML page)
            self.text.setHtml(details)
        else:
            self.text.setPlainText(details)
        label = QLabel(question)
        label.setWordWrap(True)
        label.setOpenExternalLinks(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Yes | QDialogButtonBox.StandardButton.No)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        col = QVBoxLayout(self)
        col.addWidget(self.text, 1)
        col.addWidget(label)
        col.addWidget(buttons)


def plain_message(message: str) -> str:
    """A core error's message in the wizard's words: `core` serves the command line too, and its fixes may name a
    command (“run `tweety align` first”) that a GUI user has no terminal for — said as the wizard's step instead."""
    import re

    titles = {page.key: page.title for page in pages.PAGES}
    steps = {command: titles[s.page] for s in pages.STEPS for command in s.runs}

    def step(match: re.Match) -> str:
        return f"the {steps.get(match.group(1), match.group(1))} step"

    message = re.sub(r"`tweety (\w+)[^`]*`", step, message)
    message = re.sub(rf"\btweety ({'|'.join(steps)})\b", step, message)
    return message.replace("`make demo` once", "the installer again").replace("`make demo`", "the installer")


def about_text() -> str:
    """Versions and licences, for the About box."""
    import platform
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import qVersion

    rows = [
        ("Tweety Studio", version("tweety-studio"), "MIT"),
        ("Python", platform.python_version(), "PSF"),
        ("Qt / PySide6", f"{qVersion()} / {pyside_version}", "LGPL-3.0"),
        ("PyTorch", version("torch"), "BSD-3-Clause"),
        ("Transformers", version("transformers"), "Apache-2.0"),
        ("llama-cpp-python", version("llama_cpp_python"), "MIT"),
        ("pyqtgraph", version("pyqtgraph"), "MIT"),
    ]
    table = "".join(f"<tr><td>{n}</td><td>{v}</td><td>{lic}</td></tr>" for n, v, lic in rows)
    return (
        "<h3>Tweety Studio</h3><p>Adapts a language model to a new language: a new vocabulary, its embeddings "
        "initialised from the source model's through translations, then a short fine-tune.</p>"
        f"<table cellspacing=6><tr><th align=left>Component</th><th align=left>Version</th>"
        f"<th align=left>Licence</th></tr>{table}</table>"
        "<p>Built-in model: SmolLM2-135M-Instruct (Apache-2.0). Demo texts: King James Version and Reina-Valera "
        "1909 (public domain).</p>"
    )
