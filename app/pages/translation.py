"""The wizard's translation parts, each a widget that the page holding it places: measuring the project's translators
on its held-out pairs (Evaluate), teaching its Hydra to translate (Fine-tune), and on the Chat & Translate page the
translation memory's closest match and translating a whole file. The work is `core.translating`'s, always in a
worker; these widgets only start it and show what came back."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from app.context import Context
from app.pages.widgets import Note, fill_table, spin, table
from app.workers import Job
from core.jobs import format_seconds

SOURCE_LANGUAGE = "en"  # the source models Tweety Studio adapts read and write English
CHRF_TIP = "chrF: how close to the reference translation, 0–100, higher is better"
SYSTEM_TIPS = {
    "copy": "The text left as it is: names, numbers and shared words already score.",
    "dictionary": "Each word looked up in the project's dictionary.",
    "memory": "The translation of the translation memory's most similar pair, as it is.",
    "memory + dictionary": "The memory's translation of a line it holds or nearly holds (a near-repeat), the "
    "dictionary word by word for every other line.",
    "corpus words": "Each word replaced by the word your parallel corpus most often translates it with (learnt "
    "from the corpus's own word alignment); names kept.",
    "memory + corpus words": "The memory's translation of a line it holds or nearly holds, the corpus's words for "
    "every other line.",
    "hydra": "The source model reading, your new vocabulary writing, with the memory's closest pairs as examples.",
    "exported model": "The exported model file, with the memory's closest pairs as examples.",
}
FILES = "Text or gettext files (*.txt *.po *.pot);;All files (*)"


def missing(project, *, hydra: bool = False) -> str:
    """Why the project's translation parts cannot run yet, in plain words ("" when they can). Every part needs a
    parallel corpus; teaching also needs the Hydra (a replaced vocabulary, an initialised model)."""
    from core.layout import REPLACE

    if project is None:
        return "Open a project first."
    if project.state.inputs is None or not project.state.inputs.parallel:
        return (
            "Needs a parallel corpus (Language & data page): its pairs are the translation memory, and pairs held "
            "out of it are what translation is measured on."
        )
    if hydra and project.state.vocabulary != REPLACE:
        return "Needs a project that replaced the vocabulary: an extended model translates with the memory as it is."
    if hydra and "init" not in project.state.stages:
        return "Needs the initialised model (Align & map page)."
    return ""


def direction_words(source: str, target: str) -> str:
    from core.translation import language_name

    return f"{language_name(source)} → {language_name(target)}"


class JobButton(QPushButton):
    """A button that starts a job and, while its job runs, reads Cancel and cancels it."""

    def __init__(self, text: str, start: Callable[[], None], ctx: Context, tip: str = ""):
        super().__init__(text)
        self.idle_text, self.ctx, self.running = text, ctx, False
        self.setToolTip(tip)
        self.clicked.connect(lambda: ctx.cancel_job() if self.running else start())

    def run(
        self,
        fn,
        on_done,
        name: str,
        *,
        on_cancelled: Callable[[], None] | None = None,
        on_crashed: Callable[[str], None] | None = None,
        **kw,
    ) -> Job | None:
        """`ctx.run_job`, with the button showing Cancel until the job has ended — after every other outcome handler
        has run (each is its own queued event, in the order connected), so a button reading its own text again means
        the page has said what came of the job."""
        job = self.ctx.run_job(fn, on_done, name=name, **kw)
        if job is not None:
            s = job.signals
            for signal, slot in ((s.cancelled, on_cancelled), (s.crashed, on_crashed)):
                if slot is not None:
                    signal.connect(slot)
            for signal in (s.finished, s.failed, s.crashed, s.cancelled):
                signal.connect(self._ended)
            self.running = True
            self.setText("Cancel")
        return job

    def _ended(self) -> None:
        self.running = False
        self.setText(self.idle_text)


class MeasureBox(QWidget):
    """Evaluate: chrF and speed of every translator the project offers (English → its language) on held-out pairs,
    the verdict, and the first held-out line as each translator wrote it."""

    pairs = 100  # held-out pairs measured; tests use fewer

    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx
        col = QVBoxLayout(self)
        row = QHBoxLayout()
        self.button = JobButton(
            "Measure translation",
            self.measure,
            ctx,
            "Translate held-out pairs of the parallel corpus — pairs never used as memory or for "
            "training — with each translator, and compare with their reference translations.\n" + CHRF_TIP,
        )
        row.addWidget(self.button)
        self.about = QLabel()
        self.about.setWordWrap(True)
        row.addWidget(self.about, 1)
        col.addLayout(row)
        results = QHBoxLayout()
        self.scores = table()
        self.scores.setMaximumWidth(520)
        self.scores.setToolTip(CHRF_TIP)
        results.addWidget(self.scores, 1)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setStyleSheet("font-size: 14px; font-weight: bold;")
        results.addWidget(self.verdict, 1, Qt.AlignmentFlag.AlignTop)
        col.addLayout(results)
        col.addWidget(QLabel("<b>The first held-out line</b>, as each translator wrote it:"))
        self.sample = table()
        self.sample.setWordWrap(True)
        col.addWidget(self.sample, 1)

    def measure(self) -> None:
        from core import translating

        project, limit = self.ctx.project, self.pairs
        source, target = SOURCE_LANGUAGE, project.state.language or ""
        self.about.setText(f"Measuring {direction_words(source, target)} on {limit:,} held-out pairs…")
        self.button.run(
            lambda progress, cancel: translating.evaluate(
                project, source, target, limit=limit, progress=progress, cancel=cancel
            ),
            self._done,
            "Measuring translation",
            on_error=self.about.setText,
        )

    def _done(self, result) -> None:
        self.show_scores(result.source, result.target, result.pairs, result.scores, result.best, result.verdict)
        headers = ["Held-out line", "Reference", *result.scores]
        row = [result.sources[0], result.references[0], *(s.samples[0] for s in result.scores.values())]
        fill_table(self.sample, headers, [row] if result.sources else [])
        self.sample.resizeRowsToContents()
        self.ctx.stage_done()

    def show_scores(self, source: str, target: str, pairs: int, scores: dict, best: str, verdict: str) -> None:
        fill_table(
            self.scores,
            ["Translator", "chrF (higher is better)", "Seconds a line"],
            [
                [f"{name} (best)" if name == best else name, f"{s.chrf:.1f}", f"{s.seconds_per_line:.2f}"]
                for name, s in scores.items()
            ],
        )
        self.scores.horizontalHeaderItem(1).setToolTip(CHRF_TIP)
        self.scores.setMaximumHeight(
            self.scores.horizontalHeader().sizeHint().height()  # its rows, no blank below
            + self.scores.verticalHeader().length()
            + 2 * self.scores.frameWidth()
        )
        for r, name in enumerate(scores):
            self.scores.item(r, 0).setToolTip(SYSTEM_TIPS.get(name, ""))
        self.about.setText(
            f"{direction_words(source, target)}, measured on {pairs:,} held-out pairs: pairs of the "
            "parallel corpus never used as memory or for training."
        )
        self.verdict.setText(verdict)

    def show_project(self, project) -> None:
        """The project's last measurement (project.json keeps the scores, not the held-out lines), or why there is
        none."""
        from core import translators as T
        from core.project import TRANSLATION

        if self.button.running:
            return
        clear(self.scores, self.sample)
        self.verdict.clear()
        self.button.setEnabled(not missing(project))
        record = project.state.stages.get(TRANSLATION) if project is not None else None
        if missing(project) or record is None:
            self.about.setText(missing(project) or "Not measured yet (or the translators changed since).")
            return
        scores = {name: T.Score(**s) for name, s in record.summary["scores"].items()}
        source, target = record.summary["direction"].split("->")
        self.show_scores(source, target, record.summary["pairs"], scores, record.summary["best"], T.verdict(scores))


def clear(*tables: QTableWidget) -> None:
    for t in tables:
        t.clear()
        t.setRowCount(0)
        t.setColumnCount(0)


class TeachBox(QGroupBox):
    """Fine-tune: teach the project's Hydra to translate (core.translating.tune) — an adapter on its body trained on
    the translation memory's pairs, each behind the very prompt translation uses."""

    def __init__(self, ctx: Context):
        super().__init__("Teach it to translate")
        self.ctx = ctx
        self.setToolTip(
            "Train a small adapter (LoRA) on the Hydra's body — the source model reading, your "
            "vocabulary writing — on the translation memory's pairs, each shown with its closest other "
            "pairs as examples, exactly as it translates. The adapter is used only to translate into "
            "your language; the model's own weights stay as they are; held-out pairs are never trained "
            "on."
        )
        col = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Steps"))
        self.steps = spin(1, 100_000, 300, "Training steps, 4 pairs each. 300 steps take a few minutes on a processor.")
        row.addWidget(self.steps)
        self.button = JobButton(
            "Start",
            self.start,
            ctx,
            "Start teaching. Cancel keeps the Hydra as it was and the "
            "steps done: Start again with the same steps continues from there.",
        )
        row.addWidget(self.button)
        row.addStretch(1)
        col.addLayout(row)
        self.status = QLabel()
        self.status.setWordWrap(True)
        col.addWidget(self.status)
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._tick)
        self._started, self._doing = 0.0, ""

    def start(self) -> None:
        from core import translating

        project, steps = self.ctx.project, self.steps.value()
        job = self.button.run(
            lambda progress, cancel: translating.tune(project, steps=steps, progress=progress, cancel=cancel),
            self._done,
            "Teaching it to translate",
            on_error=self._finish,
            on_cancelled=lambda: self._finish(self._cancelled(project)),
            on_crashed=lambda _tb: self._finish("Stopped by an unexpected error (details in the log)."),
        )
        if job is None:
            return
        self._started, self._doing = time.monotonic(), "Preparing the pairs"
        self._timer.start()
        self._tick()
        job.signals.progress.connect(self._progress)

    def _progress(self, p) -> None:
        loss = (p.metrics or {}).get("loss")
        if loss is not None and p.total:
            self._doing = f"Step {p.done:,.0f} of {p.total:,.0f} · loss {loss:.3f}"
        else:
            self._doing = f"{p.stage}{': ' + p.message if p.message else ''}"
        self._tick()

    def _tick(self) -> None:
        if self._timer.isActive():  # (a tick queued behind the job's end says nothing new)
            self.status.setText(f"{self._doing} · {format_seconds(time.monotonic() - self._started)} elapsed")

    def _finish(self, text: str) -> None:
        self._timer.stop()
        self.status.setText(text)

    @staticmethod
    def _cancelled(project) -> str:
        kept = project.hydra_tuning_checkpoint()
        if kept is None:
            return "Cancelled before the first step: nothing changed; it translates as before."
        return (
            f"Cancelled after step {kept.step:,} of {kept.steps:,}: it translates as before. Start again with "
            f"{kept.steps:,} steps to continue from there."
        )

    def _done(self, losses: list[float]) -> None:
        last = losses[-10:]
        pairs = self.ctx.project.state.stages["hydra"].summary.get("pairs", 0)
        self._finish(
            f"Done: {len(losses):,} steps on {pairs:,} pairs of the translation memory, loss "
            f"{losses[0]:.2f} → {sum(last) / len(last):.2f} in "
            f"{format_seconds(time.monotonic() - self._started)}. It now translates with the tuned Hydra "
            "whenever that measures best. Measure it on the Evaluate page."
        )
        self.ctx.stage_done()

    def show_project(self, project) -> None:
        if self.button.running:
            return
        why = missing(project, hydra=True)
        self.setEnabled(not why)
        record = project.state.stages.get("hydra") if project is not None else None
        done = record.summary if record is not None and record.summary.get("for") == "translation" else None
        stopped = project.hydra_tuning_checkpoint() if not why else None
        if stopped is not None:  # what Start will do next matters more than what was done before
            self.status.setText(
                f"Stopped at step {stopped.step:,} of {stopped.steps:,} last time: Start with "
                f"{stopped.steps:,} steps continues from there (other steps start over)."
            )
            return
        self.status.setText(
            why
            or (
                f"Taught before: {done.get('steps')} steps on {done.get('pairs'):,} pairs (loss "
                f"{done.get('first_loss')} → {done.get('last_loss')})."
                if done
                else "Not taught yet: the Hydra translates from its examples alone."
            )
        )


class MemoryMatch(Note):
    """Chat & Translate: the translation memory's closest pair to a text, looked up in the pool (the memory is built
    once per project, inputs and direction, then kept). `looked_up` then carries the text and each side's commonest
    words (core.translation.common_words, {language: words}), from which the page tells the text's language."""

    looked_up = Signal(str, object)

    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx
        self.setToolTip(
            "The pair of the project's parallel corpus whose source side is most like the text (BM25 "
            "word overlap): what a translator would find by looking it up."
        )
        self.hide()
        self._memory: tuple | None = None  # (key, (core.memory.TranslationMemory, its language_words))
        self._wanted: tuple | None = None
        self._jobs: set[Job] = set()  # running lookups (the pool does not own them)

    def look_up(self, project, text: str, source: str, target: str) -> None:
        from core import translating

        if missing(project):
            self.hide()
            return
        key = (
            str(project.folder),
            source,
            target,
            repr(project.state.inputs),
            tuple(sorted(project.state.inputs_sha256.items())),
        )
        cached = self._memory[1] if self._memory is not None and self._memory[0] == key else None
        self._wanted = wanted = (key, text)

        def fn(progress, cancel):
            if cached is not None:
                memory, words = cached
            else:  # made once per memory, kept with it: counting 30,000 pairs' words takes a moment
                memory = translating.memory(project, source, target)
                words = translating.language_words(memory, source, target)
            return memory, words, memory.search(text, 1)

        job = Job(fn, "translation memory")
        job.signals.finished.connect(lambda result: self._found(wanted, *result))
        job.signals.failed.connect(lambda message: self._wanted == wanted and self.hide())
        job.signals.crashed.connect(
            lambda tb: (
                self.ctx.log(f"Translation memory lookup failed:\n{tb}"),
                self._wanted == wanted and self.hide(),
            )
        )
        for signal in (job.signals.finished, job.signals.failed, job.signals.crashed):
            signal.connect(lambda *_: self._jobs.discard(job))
        self._jobs.add(job.start(self.ctx.pool))

    def reset(self) -> None:
        """Another project: nothing shown, and a lookup still under way shows nothing when it ends."""
        self._wanted = None
        self.hide()

    def _found(self, wanted: tuple, memory, words: dict, matches: list) -> None:
        self._memory = (wanted[0], (memory, words))
        if self._wanted != wanted:  # another text was looked up since
            return
        self.looked_up.emit(wanted[1], words)
        if not matches:
            self.setText("Translation memory: no pair shares a word with this text.")
        else:
            m = matches[0]
            similar = "the very same line" if m.score == float("inf") else f"similar: {html.escape(m.source)}"
            self.setText(f"Translation memory's closest match: <b>{html.escape(m.target)}</b> ({similar})")
        self.show()


class FileTranslation(Note):
    """Chat & Translate: translate a .txt file line by line, or a gettext catalogue's empty entries, with the
    project's best translator (core.translating.translate_file) — never over an existing file unless the user said
    so. The label says what came of it; the page places its `button` too."""

    def __init__(self, ctx: Context, direction: Callable[[], tuple[str, str]]):
        super().__init__()
        self.ctx, self.direction = ctx, direction
        self.hide()  # until there is something to say
        self.tip = (
            "Translate a text file line by line, or a gettext catalogue (.po/.pot), with the translator that "
            "measured best in this project (measured first if it never was)"
        )
        self.button = JobButton("Translate a file…", self.choose, ctx, self.tip)

    def choose(self) -> None:
        if self.ctx.busy:
            self.ctx.show_warning("A job is still running; wait for it to finish or press Cancel first.")
            return
        in_path, _ = QFileDialog.getOpenFileName(self, "A file to translate", "", FILES)
        if not in_path:
            return
        source, target = self.direction()
        path = Path(in_path)
        suggested = (
            path.with_name(f"{target}.po")
            if path.suffix.lower() in (".po", ".pot")
            else path.with_name(f"{path.stem}.{target}{path.suffix}")
        )
        # The question about an existing file is asked here (below), once, for a chosen or a typed name alike.
        out, _ = QFileDialog.getSaveFileName(
            self, "Save the translation as", str(suggested), FILES, options=QFileDialog.Option.DontConfirmOverwrite
        )
        if out:
            self.translate(in_path, out)

    def translate(self, in_path: str, out_path: str) -> None:
        from core import translating
        from core.pofile import is_po

        out, overwrite = Path(out_path), False
        if out.exists():
            if out.resolve() == Path(in_path).resolve():
                self.ctx.show_warning("The translation cannot replace the file being translated: choose another name.")
                return
            if not self.ctx.confirm(f"{out} exists. Replace it?"):
                return
            overwrite = True
        project, (source, target) = self.ctx.project, self.direction()
        units = ("entry", "entries") if is_po(in_path) else ("line", "lines")
        self.say(f"Translating {Path(in_path).name} ({direction_words(source, target)})…")

        def done(result: tuple[str, int]) -> None:
            name, n = result
            unit = units[n != 1]
            self.say(f"{n:,} {unit} translated by {name} ({direction_words(source, target)}) into {out.name}.")
            self.setToolTip(str(out))
            self.ctx.log(f"Translated {in_path} into {out}: {n:,} {unit}, by {name}")
            self.ctx.stage_done()  # the translators may have been measured first

        self.button.run(
            lambda progress, cancel: translating.translate_file(
                project, in_path, out, source, target, overwrite=overwrite, progress=progress, cancel=cancel
            ),
            done,
            "Translating a file",
            on_error=self.say,
            on_cancelled=lambda: self.say(
                "Cancelled: the translation so far is kept aside; translating the same file into the same place "
                "again resumes where it stopped."
            ),
        )

    def say(self, text: str) -> None:
        self.setText(text)
        self.show()

    def show_project(self, project) -> None:
        why = missing(project)
        if not self.button.running:
            self.button.setEnabled(not why)
            self.button.setToolTip(why or self.tip)
