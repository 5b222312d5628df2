"""The Chat page's Hydra section: tune the Hydra's tables of the new language on translation pairs — the parallel
corpus's, or the target text back-translated by the Hydra itself — with progress and Cancel."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from app.context import Context
from app.pages.widgets import button, red, spin

# (key, what the list shows, what its tooltip adds): short entries keep the page within a 1280-pixel screen
SOURCES = (
    ("parallel", "Parallel pairs", "The first parallel corpus of the project"),
    ("back-translation", "Back-translation", "The target text, translated back by the Hydra"),
)


class HydraTuningBox(QGroupBox):
    """Settings and a Tune button; `tuned` carries the step losses once the tuned Hydra is saved in the project."""

    tuned = Signal(object)  # list[float]: the loss of each step

    def __init__(self, ctx: Context):
        from core.hydra import HydraTuning

        super().__init__("Tune the Hydra")
        self.ctx = ctx
        d = HydraTuning()
        self.setToolTip(
            "Train the new language's tables of the Hydra on translation pairs, so it translates better; "
            "the tuned Hydra is kept in the project's hydra/ folder and used from then on."
        )
        self.language = QLineEdit()
        self.language.setFixedWidth(70)
        self.language.setPlaceholderText("project's")
        self.language.setToolTip("The language whose tables are tuned (ISO code); empty: the project's language")
        self.source = QComboBox()
        for key, text, tip in SOURCES:
            self.source.addItem(text, key)
            self.source.setItemData(self.source.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.source.setToolTip(
            "Parallel pairs: real translations, best when you have them. Back-translation: pairs "
            "made from target-language text alone (for a project with only a dictionary)."
        )
        self.steps = spin(1, 100_000, d.steps, "Optimizer steps")
        self.batch = spin(1, 256, d.batch_size, "Pairs per step")
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=0.1, singleStep=1e-3, value=d.lr)
        self.lr.setToolTip("Learning rate of the tables")
        self.lines = spin(1, 1_000_000, 400, "How many pairs to tune on")
        # Three short rows across the page (under Chat and Translate), so that it fits a 1280-pixel screen: what to
        # tune on, how, then Tune and what came of it.
        col = QVBoxLayout(self)
        what, how, buttons = QHBoxLayout(), QHBoxLayout(), QHBoxLayout()
        for row, pairs in (
            (what, (("Language", self.language), ("Pairs from", self.source), ("Pairs", self.lines))),
            (how, (("Steps", self.steps), ("Batch", self.batch), ("Learning rate", self.lr))),
        ):
            for label, box in pairs:
                row.addWidget(QLabel(label))
                row.addWidget(box)
            row.addStretch(1)
        self.tune_button = button("Tune", self.tune)
        buttons.addWidget(self.tune_button)
        buttons.addWidget(button("Cancel", ctx.cancel_job))
        self.status = QLabel()
        self.status.setWordWrap(True)
        buttons.addWidget(self.status, 1)
        col.addLayout(what)
        col.addLayout(how)
        col.addLayout(buttons)
        self.error = red(QLabel())
        self.error.hide()  # until there is an error to show
        col.addWidget(self.error)

    def _failed(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()
        self.status.setText("Not tuned: see why below.")  # not “Tuning…” any more

    def settings(self):
        from core.hydra import HydraTuning

        return HydraTuning(steps=self.steps.value(), batch_size=self.batch.value(), lr=self.lr.value())

    def tune(self) -> None:
        project = self.ctx.project
        language = self.language.text().strip() or None
        settings, source, lines = self.settings(), self.source.currentData(), self.lines.value()
        self.error.clear()
        self.error.hide()
        job = self.ctx.run_job(
            lambda progress, cancel: project.tune_hydra(
                language, settings, source=source, lines=lines, progress=progress, cancel=cancel
            ),
            self._done,
            name="Tuning the Hydra",
            on_error=self._failed,
        )
        if job is not None:
            self.tune_button.setEnabled(False)
            self.status.setText("Tuning…")
            job.signals.progress.connect(self._progress)
            for s in (job.signals.finished, job.signals.failed, job.signals.crashed, job.signals.cancelled):
                s.connect(lambda *_: self.tune_button.setEnabled(True))
            job.signals.crashed.connect(lambda *_: self.status.setText("Not tuned: the log says why."))
            job.signals.cancelled.connect(
                lambda: self.status.setText(
                    "Cancelled: the Hydra is as it was. Tuning again with the same settings continues where it stopped."
                )
            )

    def _progress(self, p) -> None:
        loss = (p.metrics or {}).get("loss")
        if loss is not None and p.total:
            self.status.setText(f"Step {p.done:,.0f} of {p.total:,.0f} · loss {loss:.3f}")

    def _done(self, losses: list[float]) -> None:
        if losses:
            last = losses[-10:]
            self.status.setText(
                f"Tuned: {len(losses):,} steps, loss {losses[0]:.3f} → {sum(last) / len(last):.3f}. "
                "Translations with the Hydra use it now."
            )
        self.tuned.emit(losses)
        self.ctx.stage_done()

    def show_project(self, project) -> None:
        self.error.clear()  # about the project shown before
        self.error.hide()
        self.language.setText(project.state.language or "")
        record = project.state.stages.get("hydra")
        self.status.setText(
            f"Tuned before: {record.summary.get('steps')} steps on {record.summary.get('pairs')} "
            f"pairs ({record.summary.get('from')})."
            if record
            else "Not tuned yet."
        )
