"""The Language & data page: the new language's name, its text, and the translation resources (parallel corpora and
bilingual dictionaries, each with a weight) that tell which words correspond."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
)

from app.pages.widgets import TIPS, FileRow, Page, red, table
from app.workers import Job
from core.errors import TweetyError
from core.resources import DICTIONARY, PARALLEL, Resource

TEXT = "text"  # a plain text file, one line per row (the target text, the held-out text, a corpus' first side)
KIND_NAMES = {PARALLEL: "Parallel corpus", DICTIONARY: "Dictionary"}
FILTER = "Text files (*.txt *.gz *.tsv *.tmx *.dict *.index);;All files (*)"
# English–Spanish Bible verses shipped with the app (also the layout inside a PyInstaller bundle)
DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@dataclass
class ResourceRow:
    """One resource in the list (its weight follows the spin box in the table)."""

    kind: str
    files: tuple[str, ...]
    weight: float = 1.0
    name: str = ""

    def resource(self) -> Resource:
        return Resource(self.kind, self.files, self.weight, self.name)


class DataPage(Page):
    key, title = "data", "Language & data"
    intro = (
        "Name the new language and choose its text. Parallel corpora (the same sentences in the source model's "
        "language and the new one) and bilingual dictionaries tell Tweety Studio which words correspond; add "
        "as many as you have, each with a weight."
    )
    FILES = {"target": "Target-language text", "heldout": "Held-out text for evaluation (optional)"}

    def build(self) -> None:
        form = QFormLayout()
        self.name = QLineEdit(placeholderText="e.g. Spanish")
        self.code = QLineEdit(placeholderText="e.g. es")
        self.code.setMaximumWidth(80)
        form.addRow("Language name", self.name)
        form.addRow("Language code (ISO 639)", self.code)
        self.rows: dict[str, FileRow] = {}
        self.errors: dict[str, QLabel] = {}
        self.previews = QTabWidget()
        self.preview_text: dict[str, QPlainTextEdit] = {}
        for key, label in self.FILES.items():
            self._file_row(key, label, form)
        self.layout_.addLayout(form)
        self.layout_.addWidget(self._resource_box())
        self.previews.setMaximumHeight(150)
        self.layout_.addWidget(self.previews)
        row = QHBoxLayout()
        row.addWidget(self.button("Use these files", self.use, "Check every file and record them in the project"))
        if (DEMO / "bible.train.es.gz").is_file():
            row.addWidget(
                self.button(
                    "Try with the demo data",
                    self.use_demo,
                    "Fill in Spanish Bible verses (Reina-Valera 1909) with the English King James "
                    "Version as parallel corpus",
                )
            )
        row.addWidget(
            self.button(
                "Is adapting worth it?",
                self.advise,
                "Measure the chosen source model on a sample of your text (about half a minute): "
                "does it already read your language? Keep it, extend its vocabulary, or replace "
                "it",
            )
        )
        self.counts = QLabel()
        row.addWidget(self.counts, 1)
        self.layout_.addLayout(row)
        self.advice = QLabel(wordWrap=True)
        self.advice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.advice)
        self.error = red(QLabel())
        self.layout_.addWidget(self.error)
        self._wanted: dict[str, tuple] = {}  # per preview: the choice whose result is awaited
        self._jobs: dict[str, Job] = {}  # running previews (Qt must not delete them under us)

    def _file_row(self, key: str, label: str, form: QFormLayout) -> FileRow:
        row = FileRow("open", filter=FILTER)
        row.changed.connect(lambda _path, k=key: self.preview(k))
        row.changed.connect(lambda _path: self.error.clear())  # the last check's message was about other files
        self.rows[key], self.errors[key] = row, red(QLabel())
        self.errors[key].hide()
        form.addRow(label, row)
        form.addRow("", self.errors[key])
        self.preview_text[key] = QPlainTextEdit(readOnly=True)
        self.previews.addTab(self.preview_text[key], label.split(" (")[0])
        return row

    def _resource_box(self) -> QGroupBox:
        box = QGroupBox("Translation resources")
        form = QFormLayout(box)
        self.kind = QComboBox()
        for kind, text in (
            (PARALLEL, "Parallel corpus: source and target files, or one .tsv/.tmx file"),
            (DICTIONARY, "Bilingual dictionary: one file of source → target entries"),
        ):
            self.kind.addItem(text, kind)
        self.kind.currentIndexChanged.connect(self._kind_changed)
        form.addRow("Add a", self.kind)
        self.preview_text["resource"] = QPlainTextEdit(readOnly=True)
        self.previews.addTab(self.preview_text["resource"], "Resource")
        for key, label in (("first", "File"), ("second", "Target side")):
            row = FileRow("open", filter=FILTER)
            row.changed.connect(lambda _path: self.preview("resource"))
            self.rows[key] = row
            form.addRow(label, row)
        self.rows["first"].edit.setPlaceholderText("source side, or one .tsv/.tmx file")
        self.rows["second"].edit.setPlaceholderText("target side (empty for a .tsv/.tmx file)")
        self.errors["resource"] = red(QLabel())
        self.errors["resource"].hide()
        form.addRow("", self.errors["resource"])
        self.weight = self._weight_box(1.0)
        add = QHBoxLayout()
        add.addWidget(QLabel("Weight"))
        add.addWidget(self.weight)
        add.addWidget(self.button("Add to the list", self._add_chosen, "Add this resource to the list below"))
        add.addWidget(self.button("Remove selected", self.remove_selected, "Take the selected resource off the list"))
        add.addStretch(1)
        form.addRow(add)
        self.resource_table = table()
        self.resource_table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.resource_table.setMaximumHeight(130)
        form.addRow(self.resource_table)
        self.resource_rows: list[ResourceRow] = []
        self._refresh_table()
        form.addRow("Dictionary word rules", self._word_rules())
        return box

    def _word_rules(self) -> QHBoxLayout:
        """How a dictionary's words meet the text's: the language's own rules, shown as the placeholder and the
        first choice, or the user's (core.dictionary.DictionarySettings.for_language / chosen)."""
        row = QHBoxLayout()
        row.addWidget(QLabel("Plural endings"))
        self.endings = QLineEdit()
        self.endings.setToolTip(
            "A word of your text that is a dictionary word plus one of these endings (e.g. "
            "“s, es”) is read as its plural. Empty: the language's own; “none”: no plural rule."
        )
        row.addWidget(self.endings, 1)
        row.addWidget(QLabel("Cognates"))
        self.cognates = QComboBox()
        self.cognates.setToolTip(
            "A word the dictionary lacks (a name, a loanword) takes the source-language word "
            "spelled most like it, across scripts too (“компьютер” → computer)."
        )
        for text, value in (("the language's own", None), ("on", True), ("off", False)):
            self.cognates.addItem(text, value)
        row.addWidget(self.cognates)
        self.code.textChanged.connect(self._language_rules)
        self._language_rules()
        return row

    def _language_rules(self, *_args) -> None:
        from core.dictionary import DictionarySettings

        own = DictionarySettings.for_language(self.code.text().strip())
        self.endings.setPlaceholderText(f"the language's own: {', '.join(own.plural_endings) or 'none'}")
        self.cognates.setItemText(0, f"the language's own ({'on' if own.cognates else 'off'})")

    def word_rules(self) -> dict:
        """The user's word rules as `Inputs` fields (None: the language's own); raises TweetyError on bad endings."""
        from core.dictionary import parse_endings

        typed = self.endings.text().strip()
        return {"plural_endings": parse_endings(typed) if typed else None, "cognates": self.cognates.currentData()}

    @staticmethod
    def _weight_box(value: float) -> QDoubleSpinBox:
        box = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=100.0, singleStep=0.5, value=value)
        box.setToolTip(TIPS["weight"])
        return box

    def _kind_changed(self, *_args) -> None:
        parallel = self.kind.currentData() == PARALLEL
        self.rows["second"].setEnabled(parallel)
        self.rows["first"].edit.setPlaceholderText(
            "source side, or one .tsv/.tmx file" if parallel else "dictionary file (.tsv, .dict, .index)"
        )
        self.preview("resource")

    # -- the resource list --
    def chosen_files(self) -> tuple[str, ...]:
        first, second = self.rows["first"].path, self.rows["second"].path
        if self.kind.currentData() == DICTIONARY:
            return (first,) if first else ()
        return tuple(f for f in (first, second) if f) if first else ()

    def _add_chosen(self) -> None:
        files = self.chosen_files()
        if not files:
            self.ctx.show_warning("Choose the resource's file first.")
            return
        self.add_resource(self.kind.currentData(), files, self.weight.value())
        for key in ("first", "second"):
            self.rows[key].edit.clear()
        self.preview_text["resource"].clear()
        self.errors["resource"].hide()

    def add_resource(self, kind: str, files, weight: float = 1.0, name: str = "") -> None:
        self.resource_rows.append(ResourceRow(kind, tuple(str(f) for f in files), float(weight), name))
        self._refresh_table()

    def remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.resource_table.selectedIndexes()}, reverse=True)
        for r in rows:
            del self.resource_rows[r]
        self._refresh_table()

    def clear_resources(self) -> None:
        self.resource_rows.clear()
        self._refresh_table()

    def resources(self) -> tuple[Resource, ...]:
        return tuple(r.resource() for r in self.resource_rows)

    def _refresh_table(self) -> None:
        t = self.resource_table
        t.clear()
        t.setColumnCount(3)
        t.setHorizontalHeaderLabels(["Kind", "Files", "Weight"])
        t.setRowCount(len(self.resource_rows))
        for r, row in enumerate(self.resource_rows):
            t.setItem(r, 0, QTableWidgetItem(KIND_NAMES.get(row.kind, row.kind)))
            files = QTableWidgetItem("  ‖  ".join(Path(f).name for f in row.files))
            files.setToolTip("\n".join(row.files))
            t.setItem(r, 1, files)
            weight = self._weight_box(row.weight)  # the table owns (and deletes) its cell widgets: a new one each time
            weight.valueChanged.connect(lambda value, row=row: setattr(row, "weight", value))
            t.setCellWidget(r, 2, weight)
        header = t.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)

    # -- previews --
    def preview(self, key: str) -> None:
        """First rows and count of the chosen file (or resource), or what is wrong with it (`core` names file, line
        and fix). Read in the thread pool — a corpus can be gigabytes — and shown only if the choice is still the
        same."""
        label, view = self.errors[key], self.preview_text[key]
        label.hide()
        view.clear()
        if key == "resource":
            kind, files = self.kind.currentData(), self.chosen_files()
        else:
            kind, files = TEXT, (self.rows[key].path,) if self.rows[key].path else ()
        if not files:
            self._wanted.pop(key, None)
            return
        view.setPlainText("Reading…")
        self._wanted[key] = wanted = (kind, files)
        job = Job(lambda progress, cancel: preview_rows(kind, files), f"preview of {files[0]}")

        def unless_stale(show):  # a newer choice in the same row makes this result stale
            return lambda value: self._wanted.get(key) == wanted and show(value)

        job.signals.finished.connect(unless_stale(lambda text: view.setPlainText(text)))
        job.signals.failed.connect(unless_stale(lambda message: self._show_error(key, message)))
        job.signals.crashed.connect(unless_stale(lambda tb: self._show_error(key, tb.strip().splitlines()[-1])))
        self._jobs[key] = job.start(self.ctx.pool)

    def _show_error(self, key: str, message: str) -> None:
        self.preview_text[key].clear()
        self.errors[key].setText(message)
        self.errors[key].show()

    def use_demo(self) -> None:
        self.name.setText("Spanish")
        self.code.setText("es")
        self.rows["target"].set_path(DEMO / "bible.train.es.gz")
        self.rows["heldout"].set_path(DEMO / "bible.heldout.es.gz")
        self.clear_resources()
        self.add_resource(PARALLEL, (DEMO / "bible.train.en.gz", DEMO / "bible.train.es.gz"))
        self.use()  # filled in but not recorded, the next page would find no input files

    def advise(self) -> None:
        text = self.rows["target"].path
        if not text:
            self.error.setText("Choose the target-language text first: the advice is measured on it.")
            return
        project = self.project
        self.error.clear()
        self.advice.setText("Measuring the source model on your text…")
        self.bring_into_view(self.advice)

        def show(advice) -> None:
            self.advice.setText(advice_text(advice))
            self.bring_into_view(self.advice)

        self.run(
            lambda progress, cancel: project.advise(text, progress=progress, cancel=cancel),
            show,
            "Measuring the source model",
            on_error=lambda message: (self.advice.clear(), self.error.setText(message)),
        )

    # -- the project --
    def inputs(self):
        from core.layout import Inputs

        code = self.code.text().strip()
        return Inputs(
            target_text=self.rows["target"].path,
            resources=self.resources(),
            language_code=code,
            language_name=self.name.text().strip() or code,
            heldout_text=self.rows["heldout"].path or None,
            **self.word_rules(),
        )

    def recorded(self) -> bool:
        """The page shows the inputs the project has recorded (nothing changed since “Use these files”)."""
        if "data" not in self.project.state.stages or self.project.state.inputs is None:
            return False

        def choice(i) -> tuple:  # what the user chose; the project may name resources apart (distinct_labels)
            return (
                i.target_text,
                i.heldout_text or None,
                i.language_code,
                i.language_name,
                [(r.kind, tuple(r.files), r.weight) for r in i.resources],
                i.plural_endings,
                i.cognates,
            )

        try:
            return choice(self.project.state.inputs) == choice(self.inputs())
        except TweetyError:  # endings that are no endings: `use` says so
            return False

    def ready_to_leave(self, then) -> bool:
        """Next records what the page shows (the checks of “Use these files”) and moves on once that succeeded: a
        page filled in but not recorded left the next step without input files."""
        if self.recorded():
            return True
        self.use(then)
        return False

    def use(self, then=None) -> None:
        self.error.clear()
        try:
            inputs = self.inputs()
        except TweetyError as e:
            self.error.setText(str(e))
            return
        if not inputs.language_code or not inputs.target_text:
            self.error.setText(
                "Fill in at least the language code and the target-language text (or press “Try with the demo data”)."
            )
            return
        project = self.project
        if not self.confirm_rerun("data", "Recording the input files"):
            return
        self.run(
            lambda progress, cancel: project.set_inputs(inputs),
            lambda counts: (self._done(counts), then and then()),
            "Checking input files",
            on_error=self.error.setText,
        )

    def _done(self, counts: dict) -> None:
        self.counts.setText(" · ".join(f"{v:,} {k}" for k, v in counts.items()))
        self.ctx.stage_done()

    def project_changed(self) -> None:
        try:
            inputs = self.project.inputs()
        except TweetyError:
            return
        self.name.setText(inputs.language_name)
        self.code.setText(inputs.language_code)
        self.rows["target"].set_path(inputs.target_text)
        self.rows["heldout"].set_path(inputs.heldout_text)
        self.endings.setText(
            ", ".join(inputs.plural_endings) if inputs.plural_endings else "none" if inputs.plural_endings == () else ""
        )
        self.cognates.setCurrentIndex(self.cognates.findData(inputs.cognates))
        self.resource_rows.clear()
        for r in inputs.resources:
            self.resource_rows.append(ResourceRow(r.kind, tuple(r.files), r.weight, r.name))
        self._refresh_table()


ADVICE = {
    "keep": "Keep the model as it is",
    "extend": "Extend its vocabulary (Tokenizer page)",
    "replace": "Replace its vocabulary (Tokenizer page)",
}


def advice_text(advice) -> str:
    """core.advise.Advice in plain words: the choice, its reason, and the two measurements behind it."""
    return (
        f"<b>{ADVICE.get(advice.choice, advice.choice)}</b>: {advice.reason}.<br>Measured on "
        f"{advice.chars:,} characters of your text in {advice.seconds:.0f} s: {advice.bits_per_char:.2f} bits a "
        f"character (how surprised the model is; lower is better) and {advice.tokens_per_char:.2f} tokens a "
        "character (how finely it cuts the text; about 0.25 for a vocabulary made for the language)."
    )


def preview_rows(kind: str, files: tuple[str, ...]) -> str:
    """Count and first rows of a text file or translation resource (raises `TweetyError` when it is unreadable)."""
    from core import resources

    if kind == DICTIONARY:
        entries = resources.read_dictionary(files[0])
        n, first, what = len(entries), [f"{e.source}  →  {e.target}" for e in entries[:5]], "entries"
    elif kind == PARALLEL and (len(files) == 2 or Path(files[0]).suffix.lower() in (".tsv", ".tmx")):
        corpus = resources.read_parallel(files[0], files[1] if len(files) == 2 else None)
        n, what = len(corpus.source), "pairs"
        first = [f"{s}  ‖  {t}" for s, t in zip(corpus.source[:5], corpus.target[:5])]
    else:  # a text file, or a corpus' first side while the second is still to be chosen
        lines = resources.read_lines(files[0])
        n, first, what = len(lines), lines[:5], "rows"
    return f"{n:,} {what}\n" + "\n".join(first)
