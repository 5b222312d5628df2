"""The wizard's pages. Each one gathers settings, calls one `Project` method through `window.run_job`, and shows the
result; the work itself lives in `core`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.workers import Job, TextRelay
from core.errors import TweetyError
from core.resources import OverrideLine

if TYPE_CHECKING:
    from app.window import MainWindow

TIPS = {
    "vocab": "Vocabulary size: how many distinct pieces (words and word parts) the new tokenizer may use. Bigger "
             "vocabularies cut text into fewer, longer pieces but need more text to learn.",
    "align": "Alignment: finding which source-language pieces correspond to which target-language pieces in "
             "translated sentence pairs.",
    "mapping": "Mapping: for every new target token, the source-model tokens (with weights) whose embeddings "
               "initialise it.",
    "edit": "Your corrections go into overrides.tsv in the project folder (you may also edit it by hand); the "
            "mapping and the model are then rebuilt from the saved alignment in seconds.",
    "bpb": "Bits per byte: how surprised the model is by held-out text, normalised by text length so that models "
           "with different tokenizers compare fairly. Lower is better.",
    "stage": "Embeddings and output layer: only the new vocabulary's vectors train, the rest of the model stays as "
             "it was (fast, safe). With outer layers, the first and last transformer layers also adapt to the "
             "language (slower, more gain, needs more text).",
    "steps": "Training steps. Each step reads batch size × sequence length tokens of your target text; a few "
             "hundred steps already help, a GPU makes thousands practical.",
    "tpb": "Tokens per byte: how many tokens the tokenizer needs per byte of text. Lower means shorter sequences.",
}


def red(label: QLabel) -> QLabel:
    label.setStyleSheet("color: #b00020;")
    label.setWordWrap(True)
    return label


class FileRow(QWidget):
    """A path field with a Browse… button (file, folder or save-as): the one file picker every page uses."""
    changed = Signal(str)

    def __init__(self, mode: str = "open", placeholder: str = "", filter: str = "All files (*)"):
        super().__init__()
        self.mode, self.filter = mode, filter
        self.edit = QLineEdit(placeholderText=placeholder)
        self.edit.editingFinished.connect(lambda: self.changed.emit(self.path))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(browse)

    @property
    def path(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str | Path | None) -> None:
        self.edit.setText(str(path or ""))
        self.changed.emit(self.path)

    def _browse(self) -> None:
        if self.mode == "dir":
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", self.path)
        elif self.mode == "save":
            path, _ = QFileDialog.getSaveFileName(self, "Save as", self.path, self.filter)
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a file", self.path, self.filter)
        if path:
            self.set_path(path)


def fill_table(table: QTableWidget, headers: list[str], rows: list[list[Any]]) -> None:
    table.clear()
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            text = f"{value:.4f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
            table.setItem(r, c, QTableWidgetItem(str(text)))
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)


def spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox(minimum=low, maximum=high, value=value)
    box.setGroupSeparatorShown(True)
    box.setToolTip(tip)
    return box


def table() -> QTableWidget:
    t = QTableWidget()
    t.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    t.verticalHeader().setVisible(False)
    return t


class Page(QWidget):
    key = ""
    title = ""
    intro = ""
    available = True  # False: shown greyed out in the step list
    fills = False  # True: the page has a widget that should take the spare height (no trailing stretch)

    def __init__(self, window: MainWindow):
        super().__init__()
        self.window_ = window
        self.layout_ = QVBoxLayout(self)
        heading = QLabel(f"<h2>{self.title}</h2><p>{self.intro}</p>")
        heading.setWordWrap(True)
        self.layout_.addWidget(heading)
        self.build()
        if not self.fills:
            self.layout_.addStretch(1)

    @property
    def project(self):
        return self.window_.project

    def build(self) -> None: ...

    def project_changed(self) -> None:
        """A project was opened or a stage finished: show what it already has."""

    def shown(self) -> None:
        """The user switched to this page."""

    def run(self, fn, on_done, name: str, **kw):
        return self.window_.run_job(fn, on_done, name=name, **kw)

    def button(self, text: str, slot, tip: str = "") -> QPushButton:
        b = QPushButton(text)
        b.clicked.connect(slot)
        b.setToolTip(tip)
        return b


class ProjectPage(Page):
    key, title = "project", "Project"
    intro = ("A project is a folder holding everything Tweety Studio makes for one language. Start a new one in an "
             "empty folder, or open an existing one to continue where you left off.")

    def build(self) -> None:
        row = QHBoxLayout()
        row.addWidget(self.button("New project…", self._new))
        row.addWidget(self.button("Open project…", self._open))
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.status = QLabel("No project open.")
        self.status.setWordWrap(True)
        self.layout_.addWidget(self.status)
        self.stages = table()
        self.layout_.addWidget(self.stages)

    def _new(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a new, empty folder for the project")
        if folder:
            self._try(self.window_.new_project, folder)

    def _open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project folder")
        if folder:
            self._try(self.window_.open_project, folder)

    def _try(self, action, folder: str) -> None:
        try:
            action(folder)
        except TweetyError as e:
            self.window_.show_warning(str(e))

    def project_changed(self) -> None:
        p = self.project
        self.status.setText(f"<b>{p.folder}</b><br>Source model: {p.state.source_model}<br>"
                            f"Next step: {p.next_stage or 'all done — chat with the model'}")
        fill_table(self.stages, ["Stage", "Seconds", "Summary"],
                   [[name, rec.seconds, ", ".join(f"{k}: {v}" for k, v in rec.summary.items()
                                                  if not isinstance(v, dict))]
                    for name, rec in p.state.stages.items()])


class SourcePage(Page):
    key, title = "source", "Source model"
    intro = ("The existing language model whose knowledge is transferred to the new language. The embedded "
             "default (SmolLM2-135M) is small and fast; any Llama-architecture model works.")
    KINDS = ("Embedded default (SmolLM2-135M)", "Hugging Face model folder", "GGUF file")

    def build(self) -> None:
        self.group = QButtonGroup(self)
        for i, text in enumerate(self.KINDS):
            radio = QRadioButton(text)
            self.group.addButton(radio, i)
            self.layout_.addWidget(radio)
        self.group.button(0).setChecked(True)
        self.file = FileRow("dir", "model folder or .gguf file")
        self.group.idToggled.connect(self._kind_changed)
        self.layout_.addWidget(self.file)
        row = QHBoxLayout()
        row.addWidget(self.button("Inspect", self.inspect, "Read the model's configuration (size, vocabulary)"))
        row.addWidget(self.button("Use this model", self.use, "Changing the model clears every finished stage"))
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.info = QLabel()
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.info)
        self._kind_changed()

    def _kind_changed(self, *_args) -> None:
        kind = self.group.checkedId()
        self.file.setEnabled(kind != 0)
        self.file.mode = "dir" if kind == 1 else "open"
        self.file.filter = "GGUF models (*.gguf)"

    def spec(self) -> str:
        return "default" if self.group.checkedId() == 0 else self.file.path

    def project_changed(self) -> None:
        spec = self.project.state.source_model
        self.group.button(0 if spec == "default" else 2 if spec.endswith(".gguf") else 1).setChecked(True)
        self.file.set_path("" if spec == "default" else spec)

    def inspect(self) -> None:
        spec = self.spec()

        def fn(progress, cancel):
            import torch

            from core.models import model_info

            device = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
            return model_info(spec), device

        self.run(fn, self._show_info, "Inspecting model")

    def _show_info(self, result) -> None:
        info, device = result
        self.info.setText(f"Type: <b>{info.model_type}</b> &nbsp; Layers: {info.n_layers} &nbsp; Hidden size: "
                          f"{info.hidden_size} &nbsp; Vocabulary: {info.vocab_size:,} &nbsp; Parameters: "
                          f"~{info.parameters / 1e6:,.0f} M &nbsp; Tied embeddings: {info.tied_embeddings}<br>"
                          f"Runs on: {device}")

    def use(self) -> None:
        if self.spec() != self.project.state.source_model and self.project.finished and not self.window_.confirm(
                "Changing the source model discards every finished stage. Continue?"):
            return
        self.project.set_source_model(self.spec())
        self.window_.log(f"Source model: {self.spec()}")
        self.window_.stage_done()


class DataPage(Page):
    key, title = "data", "Language & data"
    intro = ("Name the new language and choose its text. A parallel corpus (the same sentences in the source "
             "model's language and the new one, one per line) and/or a bilingual dictionary tell Tweety Studio "
             "which words correspond.")
    FILES = {"target": "Target-language text", "parallel_source": "Parallel corpus: source side",
             "parallel_target": "Parallel corpus: target side", "dictionary": "Bilingual dictionary (optional)",
             "heldout": "Held-out text for evaluation (optional)"}

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
            row = FileRow("open", filter="Text files (*.txt *.gz *.tsv *.tmx *.dict *.index);;All files (*)")
            row.changed.connect(lambda _path, k=key: self.preview(k))
            self.rows[key], self.errors[key] = row, red(QLabel())
            self.errors[key].hide()
            form.addRow(label, row)
            form.addRow("", self.errors[key])
            self.preview_text[key] = QPlainTextEdit(readOnly=True)
            self.previews.addTab(self.preview_text[key], label.split(" (")[0])
        self.layout_.addLayout(form)
        self.previews.setMaximumHeight(170)
        self.layout_.addWidget(self.previews)
        row = QHBoxLayout()
        row.addWidget(self.button("Use these files", self.use, "Check every file and record them in the project"))
        self.counts = QLabel()
        row.addWidget(self.counts, 1)
        self.layout_.addLayout(row)
        self.error = red(QLabel())
        self.layout_.addWidget(self.error)
        self._wanted: dict[str, tuple] = {}  # per file row: the choice whose preview is awaited
        self._jobs: dict[str, Job] = {}  # running previews (Qt must not delete them under us)

    def preview(self, key: str) -> None:
        """First rows and count of the chosen file, or what is wrong with it (`core` names file, line and fix).
        Read in the thread pool — a corpus can be gigabytes — and shown only if the choice is still the same."""
        path, label, view = self.rows[key].path, self.errors[key], self.preview_text[key]
        label.hide()
        view.clear()
        if not path:
            return
        other = None
        if key.startswith("parallel"):
            other = self.rows["parallel_target" if key == "parallel_source" else "parallel_source"].path or None
        view.setPlainText("Reading…")
        self._wanted[key] = wanted = (path, other)
        job = Job(lambda progress, cancel: preview_rows(key, path, other), f"preview of {path}")

        def unless_stale(show):  # a newer choice in the same row makes this result stale
            return lambda value: self._wanted.get(key) == wanted and show(value)

        job.signals.finished.connect(unless_stale(lambda result: self._show_preview(key, *result)))
        job.signals.failed.connect(unless_stale(lambda message: self._show_error(key, message)))
        job.signals.crashed.connect(unless_stale(lambda tb: self._show_error(key, tb.strip().splitlines()[-1])))
        self._jobs[key] = job.start(self.window_.pool)

    def _show_preview(self, key: str, text: str, paired: bool) -> None:
        if paired:  # both sides line up: an earlier mismatch message on either side is gone
            self.errors["parallel_source"].hide()
            self.errors["parallel_target"].hide()
        self.preview_text[key].setPlainText(text)

    def _show_error(self, key: str, message: str) -> None:
        self.preview_text[key].clear()
        self.errors[key].setText(message)
        self.errors[key].show()

    def inputs(self):
        from core.project import Inputs

        r = {k: row.path or None for k, row in self.rows.items()}
        parallel = (r["parallel_source"], r["parallel_target"] or "") if r["parallel_source"] else None
        return Inputs(self.name.text().strip() or self.code.text().strip(), self.code.text().strip(),
                      r["target"] or "", parallel, r["dictionary"], r["heldout"])

    def use(self) -> None:
        inputs = self.inputs()
        self.error.clear()
        if not inputs.language_code or not inputs.target_text:
            self.error.setText("Fill in at least the language code and the target-language text.")
            return
        project = self.project
        self.run(lambda progress, cancel: project.set_inputs(inputs), self._done, "Checking input files",
                 on_error=self.error.setText)

    def _done(self, counts: dict) -> None:
        self.counts.setText(" · ".join(f"{v:,} {k}" for k, v in counts.items()))
        self.window_.stage_done()

    def project_changed(self) -> None:
        try:
            inputs = self.project.inputs()
        except TweetyError:
            return
        self.name.setText(inputs.language_name)
        self.code.setText(inputs.language_code)
        values = {"target": inputs.target_text, "dictionary": inputs.dictionary, "heldout": inputs.heldout_text,
                  "parallel_source": inputs.parallel[0] if inputs.parallel else None,
                  "parallel_target": inputs.parallel[1] if inputs.parallel else None}
        for key, value in values.items():
            self.rows[key].set_path(value)


def preview_rows(key: str, path: str, other: str | None) -> tuple[str, bool]:
    """(count and first rows of a data-page file, whether it was checked against the other parallel side)."""
    from core import resources

    paired = key.startswith("parallel") and bool(other)
    if key == "dictionary":
        entries = resources.read_dictionary(path)
        n, first = len(entries), [f"{e.source}  →  {e.target}" for e in entries[:5]]
    elif paired:
        src, tgt = (path, other) if key == "parallel_source" else (other, path)
        corpus = resources.read_parallel(src, tgt)
        n, first = len(corpus.source), [f"{s}  ‖  {t}" for s, t in zip(corpus.source[:5], corpus.target[:5])]
    else:
        lines = resources.read_lines(path)
        n, first = len(lines), lines[:5]
    return f"{n:,} rows\n" + "\n".join(first), paired


class TokenizerPage(Page):
    key, title = "tokenizer", "Tokenizer"
    intro = ("Learn how to cut the new language's text into pieces. The model gets one embedding per piece.")

    def build(self) -> None:
        form = QFormLayout()
        self.vocab = QSpinBox(minimum=500, maximum=256_000, singleStep=1000, value=16000)
        self.vocab.setToolTip(TIPS["vocab"])
        label = QLabel("Vocabulary size")
        label.setToolTip(TIPS["vocab"])
        form.addRow(label, self.vocab)
        self.layout_.addLayout(form)
        self.layout_.addWidget(self.button("Train tokenizer", self.train, TIPS["vocab"]), 0,
                               Qt.AlignmentFlag.AlignLeft)
        self.result = QLabel()
        self.samples = QPlainTextEdit(readOnly=True, placeholderText="Sample segmentations appear here")
        self.samples.setMaximumHeight(200)
        self.layout_.addWidget(self.result)
        self.layout_.addWidget(self.samples)

    def train(self) -> None:
        from core.tokenizer import TokenizerSettings

        project, settings = self.project, TokenizerSettings(vocab_size=self.vocab.value())

        def fn(progress, cancel):
            tok = project.train_tokenizer(settings, progress=progress, cancel=cancel)
            return len(tok), segmentations(project, tok)

        self.run(fn, self._done, "Training tokenizer")

    def _done(self, result) -> None:
        size, samples = result
        self.result.setText(f"Trained: {size:,} tokens. Pieces are separated by “ | ”; ▁ marks a word start.")
        self.samples.setPlainText("\n\n".join(samples))
        self.window_.stage_done()

    def project_changed(self) -> None:
        settings = self.project.state.settings.get("tokenizer")
        if settings:
            self.vocab.setValue(settings["vocab_size"])


def segmentations(project, tok, n: int = 3) -> list[str]:
    from core.resources import read_lines

    lines = [line for line in read_lines(project.inputs().target_text) if line.strip()][:n]
    return [f"{line}\n→ {' | '.join(tok.tokenize(line))}" for line in lines]


class MappingModel(QAbstractTableModel):
    """Rows of `mapping.jsonl`: one per target token, with its strongest source tokens."""
    HEADERS = ("ID", "Token", "Origin", "From", "Top source tokens (weight)")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.raw: list[dict] = []

    def set_rows(self, rows: list[dict]) -> None:
        self.beginResetModel()
        self.raw = rows
        self.rows = [(str(r["id"]), r["token"], r["origin"], provenance(r),
                      ", ".join(f"{piece} ({weight:.2f})" for piece, _id, weight in r["sources"][:5]))
                     for r in rows]
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(self.HEADERS)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole:
            return self.rows[index.row()][index.column()]
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None


def provenance(row: dict) -> str:
    """Which resources a token's weights came from, e.g. "bible 70%, freedict 30%" (largest first)."""
    totals: dict[str, float] = {}
    for shares in row.get("from", []):
        for name, weight in shares.items():
            totals[name] = totals.get(name, 0.0) + weight
    total = sum(totals.values()) or 1.0
    return ", ".join(f"{name} {w / total:.0%}" for name, w in sorted(totals.items(), key=lambda kv: -kv[1]))


def read_mapping(project) -> list[dict]:
    from core.mapping import TABLE_FILE

    with open(project.mapping_dir / TABLE_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class AlignPage(Page):
    key, title = "align", "Align & map"
    fills = True
    intro = ("Find which source pieces correspond to each new piece (alignment), turn that into a weighted "
             "mapping, and initialise the adapted model's embeddings from it.")

    def build(self) -> None:
        import importlib.util

        form = QFormLayout()
        self.aligner = QComboBox()
        self.aligner.addItem("Tweety's aligner (fast_align's model, fastest)", "torch")
        self.aligner.addItem("fast_align", "fast_align")
        if importlib.util.find_spec("eflomal") is not None:
            self.aligner.addItem("eflomal (slower)", "eflomal")
        self.aligner.setToolTip(TIPS["align"])
        self.links = QComboBox()
        self.links.addItem("Most precise (recommended)", "auto")
        self.links.addItem("More links", "grow-diag-final-and")
        self.links.setToolTip("Alignment runs in both directions. Most precise keeps the links both directions agree "
                              "on (intersection), which initialises best; More links also keeps neighbouring ones "
                              "(grow-diag-final-and, the only choice fast_align offers).")
        form.addRow("Aligner", self.aligner)
        form.addRow("Links", self.links)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.layout_.addLayout(form)
        go = self.button("Align, map and initialise", self.go, TIPS["align"] + "\n\n" + TIPS["mapping"])
        self.layout_.addWidget(go, 0, Qt.AlignmentFlag.AlignLeft)
        self.coverage = table()
        self.coverage.setMaximumHeight(62)
        self.coverage.setToolTip("How each new token was initialised")
        self.layout_.addWidget(self.coverage)
        self.filter = QLineEdit(placeholderText="Filter tokens, e.g. ▁Dios")
        self.filter.setToolTip(TIPS["mapping"])
        self.model = MappingModel()
        self.proxy = QSortFilterProxyModel()
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterKeyColumn(1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.verticalHeader().setVisible(False)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.setMinimumHeight(260)
        self.layout_.addWidget(self.filter)
        self.layout_.addWidget(self.view, 1)
        edits = QHBoxLayout()
        for text, slot, tip in (
                ("Set sources…", self.set_sources, "Choose the source words the selected token's embedding comes "
                 "from (replaces what was computed)."),
                ("Remove a link…", self.remove_link, "Take a wrong source token out of the selected token's mix.")):
            edits.addWidget(self.button(text, slot, tip + "\n\n" + TIPS["edit"]))
        edits.addStretch(1)
        self.layout_.addLayout(edits)

    def selected(self) -> dict | None:
        index = self.proxy.mapToSource(self.view.currentIndex())
        return self.model.raw[index.row()] if index.isValid() else None

    def set_sources(self) -> None:
        row = self.selected()
        if row is None:
            return self.window_.show_warning("Select a token in the table first.")
        text, ok = QInputDialog.getText(
            self, "Set sources", f"Source words for {row['token']}, separated by commas\n"
            "(a word as in running text, or [piece] for exactly one source token):")
        words = [w.strip() for w in text.split(",") if w.strip()] if ok else []
        if words:
            self.apply_overrides([OverrideLine(f"[{row['token']}]", w) for w in words])

    def remove_link(self) -> None:
        row = self.selected()
        if row is None or not row["sources"]:
            return self.window_.show_warning("Select a token that has source tokens first.")
        items = [f"[{piece}]" for piece, _id, _weight in row["sources"]]
        item, ok = QInputDialog.getItem(self, "Remove a link", f"{row['token']} should not come from:", items, 0,
                                        False)
        if ok:
            self.apply_overrides([OverrideLine(f"[{row['token']}]", item, remove=True)])

    def apply_overrides(self, lines: list) -> None:
        """Record the corrections in the project's overrides file, then rebuild mapping and model from them."""
        project = self.project
        try:
            project.add_overrides(lines)
        except (OSError, TweetyError) as e:
            return self.window_.show_warning(str(e))

        def fn(progress, cancel):
            coverage = project.remap(progress=progress, cancel=cancel).coverage()
            return coverage, read_mapping(project)

        self.run(fn, self._done, "Applying your corrections")

    def go(self) -> None:
        from core.align import AlignSettings

        project = self.project
        settings = AlignSettings(method=self.aligner.currentData(), symmetrize=self.links.currentData())

        def fn(progress, cancel):
            project.align(settings, progress=progress, cancel=cancel)
            coverage = project.build_mapping(progress=progress, cancel=cancel).coverage()
            project.initialise(progress=progress, cancel=cancel)
            return coverage, read_mapping(project)

        self.run(fn, self._done, "Aligning, mapping and initialising")

    def _done(self, result) -> None:
        coverage, rows = result
        self.show_mapping(coverage, rows)
        self.window_.stage_done()

    def show_mapping(self, coverage: dict, rows: list[dict]) -> None:
        coverage = {k: v for k, v in coverage.items() if v}
        fill_table(self.coverage, list(coverage), [list(coverage.values())])
        self.model.set_rows(rows)
        self.view.resizeColumnsToContents()

    def project_changed(self) -> None:
        chosen = self.project.state.settings.get("align", {})
        for combo, key in ((self.aligner, "method"), (self.links, "symmetrize")):
            if key in chosen and combo.findData(chosen[key]) >= 0:
                combo.setCurrentIndex(combo.findData(chosen[key]))
        if "map" in self.project.state.stages:
            try:
                self.show_mapping(self.project.state.stages["map"].summary, read_mapping(self.project))
            except OSError:
                pass
        else:
            self.model.set_rows([])
            self.coverage.clear()


class FineTunePage(Page):
    key, title = "finetune", "Fine-tune"
    intro = ("Optional, and where most of the gain is: train the new embeddings on your target text so the model "
             "really reads the language. Held-out bits per byte should fall as it trains. Pause or stop at any "
             "time: a stopped run resumes where it left off.")
    fills = True

    def build(self) -> None:
        import pyqtgraph as pg
        from PySide6.QtWidgets import QSizePolicy

        from core.finetune import FinetuneSettings

        d = FinetuneSettings()
        form = QFormLayout()
        self.stage = QComboBox()
        self.stage.addItem("Embeddings and output layer", "embeddings")
        self.stage.addItem("Embeddings, output layer and outer transformer layers", "outer-layers")
        self.stage.setToolTip(TIPS["stage"])
        self.outer = spin(1, 64, d.outer_layers, "How many of the first and of the last transformer layers train "
                                                 "in the outer-layers stage")
        self.stage.currentIndexChanged.connect(lambda _i: self.outer.setEnabled(self.stage.currentIndex() == 1))
        self.outer.setEnabled(False)
        self.steps = spin(1, 1_000_000, d.steps, TIPS["steps"])
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=0.1, singleStep=1e-4, value=d.lr)
        self.lr.setToolTip("Learning rate: how big each training step is. The default suits the embeddings stage; "
                           "use a smaller one (e.g. 0.0002) when transformer layers train too.")
        self.batch = spin(1, 1024, d.batch_size, "Sequences per step. Larger batches use more memory.")
        self.block = spin(16, 8192, d.block_size, "Tokens per training sequence")
        form.addRow("What trains", self.stage)
        form.addRow("Outer layers", self.outer)
        form.addRow("Steps", self.steps)
        form.addRow("Learning rate", self.lr)
        form.addRow("Batch size", self.batch)
        form.addRow("Sequence length", self.block)
        self.device = QLabel()
        form.addRow("Trains on", self.device)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.layout_.addLayout(form)
        cluster = QGroupBox("Or train on a cluster: a job folder to run with torchrun (several GPUs or machines)")
        cluster_form = QFormLayout(cluster)
        self.nproc = spin(1, 64, 1, "Training processes per machine: one per GPU. The batch size is split between all "
                                    "processes, so it must be a multiple of their number.")
        self.nnodes = spin(1, 1024, 1, "Machines in the job; each runs the job's launch.sh (or use its SLURM script)")
        self.rdzv = QLineEdit(placeholderText="HOST:PORT where the machines meet, e.g. node1:29500")
        self.nnodes.valueChanged.connect(lambda n: self.rdzv.setEnabled(n > 1))
        self.rdzv.setEnabled(False)
        self.job_info = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        cluster_form.addRow("Processes per machine", self.nproc)
        cluster_form.addRow("Machines", self.nnodes)
        cluster_form.addRow("Rendezvous", self.rdzv)
        prepare = self.button("Prepare a cluster job", self.prepare_cluster_job, "Write job.json, launch.sh and "
                              "slurm.sbatch into the project's cluster-job folder; nothing runs here (docs/cluster.md)")
        prepare.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # not the form's full width
        cluster_form.addRow(prepare)
        cluster_form.addRow(self.job_info)
        cluster_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.rdzv.setMinimumWidth(360)
        row = QHBoxLayout()
        self.start_button = self.button("Start", self.start, "Start a new run on this machine (from the initialised "
                                                             "model)")
        self.resume_button = self.button("Resume", self.resume, "Continue the stopped run from its last step")
        self.pause_button = self.button("Pause", self.toggle_pause, "Pause training (the Cancel button stops it)")
        self.pause_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        for b in (self.start_button, self.resume_button, self.pause_button):
            row.addWidget(b)
        self.status = QLabel()
        row.addWidget(self.status, 1)
        self.layout_.addLayout(row)
        self.layout_.addWidget(cluster)

        pg.setConfigOptions(antialias=True, background="w", foreground="#333")
        plots = pg.GraphicsLayoutWidget()
        self.loss_plot = plots.addPlot(title="Training loss")
        self.bpb_plot = plots.addPlot(title="Held-out bits per byte (lower is better)")
        for plot in (self.loss_plot, self.bpb_plot):
            plot.setLabel("bottom", "step")
            plot.showGrid(x=True, y=True, alpha=0.3)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#4c72b0", width=1.5))
        self.bpb_curve = self.bpb_plot.plot(pen=pg.mkPen("#dd8452", width=2), symbol="o", symbolSize=6,
                                            symbolBrush="#dd8452")
        plots.setToolTip(TIPS["bpb"])
        plots.setMinimumHeight(260)
        self.layout_.addWidget(plots, 1)
        self.job = None
        self.points: dict[str, list[tuple[float, float]]] = {"loss": [], "bpb": []}

    def settings(self, steps_only_from_run: dict | None = None):
        from core.finetune import FinetuneSettings

        if steps_only_from_run:  # resuming: the run's own settings, only the number of steps may change
            return FinetuneSettings(**{**steps_only_from_run, "steps": self.steps.value()})
        return FinetuneSettings(stage=self.stage.currentData(), outer_layers=self.outer.value(),
                                steps=self.steps.value(), lr=self.lr.value(), batch_size=self.batch.value(),
                                block_size=self.block.value())

    def start(self) -> None:
        run = self.project.finetune_checkpoint()
        if run and not run.finished and not self.window_.confirm(
                f"A stopped run (step {run.step} of {run.settings['steps']}) would be discarded. Start over?"):
            return
        self.project.discard_finetune()
        self._go(self.settings(), resume=False)

    def resume(self) -> None:
        run = self.project.finetune_checkpoint()
        if run is None:
            return
        self._go(self.settings(run.settings), resume=True)

    def prepare_cluster_job(self) -> None:
        """The project's fine-tuning as a job folder for torchrun (core.distributed.write_job): the stopped run's
        own settings when there is one (the job resumes it), else the page's. Its checkpoint and model land in the
        project's finetuned/ folder, where this page shows them."""
        from core import distributed

        run = self.project.finetune_checkpoint()
        resume = run is not None and not run.finished
        settings = self.settings(run.settings) if resume else self.settings()
        launch = distributed.LaunchSettings(self.nproc.value(), self.nnodes.value(), self.rdzv.text().strip())
        try:
            train, held = self.project.texts()
            folder, command = distributed.write_job(self.project.folder / "cluster-job", self.project.model_dir, train,
                                                    held, self.project.finetune_dir, settings, launch, resume=resume)
        except TweetyError as e:
            self.window_.show_warning(str(e))
            return
        where = f"on each of the {launch.nnodes} machines" if launch.nnodes > 1 else "on the machine"
        self.job_info.setText(f"{'Resuming job' if resume else 'Job'} written to {folder}. Run launch.sh {where}, "
                              "or submit slurm.sbatch with sbatch.")
        self.window_.log(f"Cluster job written to {folder}: {command}")

    def _go(self, settings, *, resume: bool) -> None:
        project = self.project
        self._plot_run(project.finetune_checkpoint() if resume else None)
        self.job = self.run(lambda progress, cancel: project.finetune(settings, resume=resume, progress=progress,
                                                                      cancel=cancel),
                            self._done, "Fine-tuning", on_end=self._ended)
        if self.job is not None:
            self.job.signals.progress.connect(self._progress)
            self.pause_button.setEnabled(True)
            for b in (self.start_button, self.resume_button):
                b.setEnabled(False)

    def toggle_pause(self) -> None:
        token = self.job.token
        if token.paused:
            token.resume()
            self.pause_button.setText("Pause")
            self.window_.log("Fine-tuning: continued")
        else:
            token.pause()
            self.pause_button.setText("Continue")
            self.status.setText(self.status.text() + " — pausing after this step")
            self.window_.log("Fine-tuning: paused")

    def _progress(self, p) -> None:
        m = p.metrics
        if not m:
            return
        if "loss" in m:
            self.points["loss"].append((m["step"], m["loss"]))
        if "heldout_bpb" in m:
            self.points["bpb"].append((m["step"], m["heldout_bpb"]))
        self._redraw()
        if "loss" in m:
            bpb = self.points["bpb"][-1][1] if self.points["bpb"] else None
            self.status.setText(f"Step {m['step']:,} of {p.total:,.0f} · loss {m['loss']:.3f}"
                                + (f" · held-out {bpb:.3f} bits/byte" if bpb is not None else "")
                                + f" · {m['tokens_per_s']:,.0f} tokens/s")

    def _redraw(self) -> None:
        for key, curve in (("loss", self.loss_curve), ("bpb", self.bpb_curve)):
            xs, ys = zip(*self.points[key]) if self.points[key] else ((), ())
            curve.setData(list(xs), list(ys))

    def _plot_run(self, run) -> None:
        self.points = {"loss": [], "bpb": []}
        if run is not None:
            if run.initial_bpb is not None:
                self.points["bpb"].append((0, run.initial_bpb))
            for r in run.curve:
                self.points["loss"].append((r.step, r.loss))
                if r.heldout_bpb is not None:
                    self.points["bpb"].append((r.step, r.heldout_bpb))
        self._redraw()

    def _done(self, result) -> None:
        self.window_.stage_done()

    def _ended(self) -> None:
        self.job = None
        self.pause_button.setText("Pause")
        self.pause_button.setEnabled(False)
        self.start_button.setEnabled(True)
        self._show_state()

    def _show_state(self) -> None:
        run = self.project.finetune_checkpoint()
        self.resume_button.setEnabled(run is not None)
        if run is None:
            self.status.setText("Not fine-tuned yet: the Evaluate and Export pages use the initialised model.")
        elif not run.finished:
            self.status.setText(f"Stopped at step {run.step:,} of {run.settings['steps']:,}. "
                                "Resume continues from there.")
        else:
            bpbs = [r.heldout_bpb for r in run.curve if r.heldout_bpb is not None]
            self.status.setText(f"Done: {run.step:,} steps; held-out bits per byte {run.initial_bpb:.3f} → "
                                f"{bpbs[-1]:.3f}. Resume with more steps to train further."
                                if bpbs and run.initial_bpb is not None else f"Done: {run.step:,} steps.")

    def project_changed(self) -> None:
        if self.job is not None:
            return
        self._plot_run(self.project.finetune_checkpoint())
        self._show_state()

    def shown(self) -> None:
        import torch  # already loaded by the earlier stages' workers: no wait here

        self.device.setText(f"GPU ({torch.cuda.get_device_name(0)}, bf16)" if torch.cuda.is_available() else
                            "CPU — works, but a GPU is many times faster for more than a few hundred steps")


class EvaluatePage(Page):
    key, title = "evaluate", "Evaluate"
    intro = ("Compare the source model (with its own tokenizer), the adapted model as initialised and, once "
             "fine-tuned, the fine-tuned model on held-out text in the new language.")
    max_bytes = 0  # 0: all held-out text; tests use a small slice

    def build(self) -> None:
        self.layout_.addWidget(self.button("Run evaluation", self.go, TIPS["bpb"]), 0, Qt.AlignmentFlag.AlignLeft)
        self.results = table()
        self.results.setMaximumHeight(140)
        self.results.setToolTip(TIPS["bpb"] + "\n\n" + TIPS["tpb"])
        self.layout_.addWidget(self.results)

    def go(self) -> None:
        project, max_bytes = self.project, self.max_bytes
        self.run(lambda progress, cancel: project.evaluate(max_bytes=max_bytes, progress=progress, cancel=cancel),
                 self._done, "Evaluating")

    def _done(self, results: dict) -> None:
        self.show_results(results)
        self.window_.stage_done()

    def show_results(self, results: dict) -> None:
        metrics = (("Bits per byte (lower is better)", "bits_per_byte"), ("Tokens per byte", "tokens_per_byte"),
                   ("Token perplexity", "token_ppl"), ("Bytes evaluated", "bytes"))
        fill_table(self.results, ["Metric", *results], [[label, *(r[key] for r in results.values())]
                                                         for label, key in metrics])
        self.results.item(0, 0).setToolTip(TIPS["bpb"])
        self.results.item(1, 0).setToolTip(TIPS["tpb"])

    def project_changed(self) -> None:
        record = self.project.state.stages.get("evaluate")
        if record:
            self.show_results(record.summary)
        else:
            self.results.clear()


class ExportPage(Page):
    key, title = "export", "Export"
    intro = "Write the adapted model as a single GGUF file that llama.cpp-based apps (and the Chat page) can run."

    def build(self) -> None:
        form = QFormLayout()
        self.type = QComboBox()
        self.type.addItems(["q8_0", "f16", "f32"])
        self.type.setToolTip("q8_0: 8-bit, about a quarter of f32's size, nearly lossless")
        self.type.currentTextChanged.connect(lambda _t: self.project and self._default_path())
        self.dest = FileRow("save", filter="GGUF models (*.gguf)")
        form.addRow("Type", self.type)
        form.addRow("Destination", self.dest)
        self.layout_.addLayout(form)
        self.layout_.addWidget(self.button("Export", self.go), 0, Qt.AlignmentFlag.AlignLeft)
        self.result = QLabel()
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.result)

    def _default_path(self) -> None:
        p = self.project
        self.dest.set_path(p.export_dir / f"{p.folder.name}-{self.type.currentText()}.gguf")

    def go(self) -> None:
        from core.export import ExportSettings

        out = self.dest.path or None
        # The QFileDialog already asked before replacing a file it picked; a typed path is asked about here.
        overwrite = bool(out) and Path(out).exists() and self.window_.confirm(f"{out} exists. Replace it?")
        if out and Path(out).exists() and not overwrite:
            return
        project, settings = self.project, ExportSettings(type=self.type.currentText(), overwrite=overwrite)
        self.run(lambda progress, cancel: project.export(settings, out, progress=progress, cancel=cancel),
                 self._done, "Exporting")

    def _done(self, result) -> None:
        self.result.setText(f"Wrote <b>{result.path}</b> ({result.bytes / 1e6:,.1f} MB, {result.type})")
        self.window_.pages["chat"].file.set_path(result.path)
        self.window_.stage_done()

    def project_changed(self) -> None:
        self._default_path()


class ChatPage(Page):
    key, title = "chat", "Chat & Translate"
    intro = ("Try the exported model: chat with it, or translate a text — with it, or with the Hydra (the source "
             "model reading, the new vocabulary writing). Everything runs on this computer.")
    max_tokens = 256  # longest reply; tests use fewer
    fills = True

    def build(self) -> None:
        from core.runtime import Chat  # noqa: F401 - fail early if the runtime module is broken

        self.llm = None
        self.chat = None
        self._hydra = None  # (key, core.hydra.Hydra) built on first use
        row = QHBoxLayout()
        self.file = FileRow("open", "exported .gguf file", "GGUF models (*.gguf)")
        row.addWidget(self.file, 1)
        row.addWidget(self.button("Load model", self.load))
        self.layout_.addLayout(row)
        self.card = QLabel("No model loaded.")
        self.layout_.addWidget(self.card)

        chat = QGroupBox("Chat")
        col = QVBoxLayout(chat)
        self.transcript = QPlainTextEdit(readOnly=True)
        self.input = QLineEdit(placeholderText="Type a message and press Enter")
        self.input.returnPressed.connect(self.send)
        send_row = QHBoxLayout()
        send_row.addWidget(self.input, 1)
        send_row.addWidget(self.button("Send", self.send))
        send_row.addWidget(self.button("Stop", self.window_.cancel_job, "Stop the reply being written"))
        col.addWidget(self.transcript)
        col.addLayout(send_row)

        box = QGroupBox("Translate")
        grid = QVBoxLayout(box)
        langs = QHBoxLayout()
        self.src = QLineEdit("en")
        self.tgt = QLineEdit()
        for label, edit in (("From", self.src), ("To", self.tgt)):
            edit.setMaximumWidth(70)
            langs.addWidget(QLabel(label))
            langs.addWidget(edit)
        langs.addWidget(self.button("Translate", self.translate))
        langs.addStretch(1)
        self.use_hydra = QCheckBox("Hydra: read with the source model, write in the new language")
        self.use_hydra.setToolTip("Translate without the exported file: the source model's body reads the text with "
                                  "its own vocabulary and writes with the adapted model's (zero-shot translation). "
                                  "Needs a model whose body fine-tuning left untouched (stage: embeddings).")
        self.text_in = QPlainTextEdit(placeholderText="Text to translate")
        self.text_out = QPlainTextEdit(readOnly=True, placeholderText="Translation")
        grid.addLayout(langs)
        grid.addWidget(self.use_hydra)
        grid.addWidget(self.text_in)
        grid.addWidget(self.text_out)
        split = QHBoxLayout()
        split.addWidget(chat, 3)
        split.addWidget(box, 2)
        self.layout_.addLayout(split, 1)
        self.relay = TextRelay()
        self._sink: QPlainTextEdit = self.transcript
        self.relay.text.connect(self._append)

    def project_changed(self) -> None:
        self.tgt.setText(self.project.state.language or "")
        record = self.project.state.stages.get("export")
        if record:
            self.file.set_path(record.summary.get("file", ""))

    def shown(self) -> None:
        if not self.tgt.text() and self.project is not None:  # the language may have been set after opening
            self.tgt.setText(self.project.state.language or "")

    def load(self) -> None:
        from core.runtime import RuntimeSettings, load, model_card

        path, max_tokens = self.file.path, self.max_tokens

        def fn(progress, cancel):
            llm = load(path, RuntimeSettings(max_tokens=max_tokens))
            return llm, model_card(llm)

        self.run(fn, self._loaded, "Loading model")

    def _loaded(self, result) -> None:
        from core.runtime import Chat, RuntimeSettings

        self.llm, card = result
        self.chat = Chat(self.llm, RuntimeSettings(max_tokens=self.max_tokens))
        self.card.setText(f"Loaded <b>{card.name}</b> · vocabulary {card.vocab_size:,} · context {card.context:,}"
                          f" · languages: {', '.join(card.languages) or 'unknown'}")

    def _append(self, text: str) -> None:
        self._sink.moveCursor(self._sink.textCursor().MoveOperation.End)
        self._sink.insertPlainText(text)

    def _ready(self) -> bool:
        if self.chat is None:
            self.window_.show_warning("Load a model first.")
        return self.chat is not None

    def send(self) -> None:
        text = self.input.text().strip()
        if not text or not self._ready():
            return
        self.input.clear()
        self._sink = self.transcript
        self.transcript.appendPlainText(f"You: {text}\nModel: ")
        chat, emit = self.chat, self.relay.text.emit
        self.run(lambda progress, cancel: chat.send(text, on_text=emit, cancel=cancel), lambda _reply: None,
                 "Chatting", on_end=lambda: self.transcript.appendPlainText(""))

    def translate(self) -> None:
        from core.runtime import translate

        text = self.text_in.toPlainText().strip()
        if not text or (not self.use_hydra.isChecked() and not self._ready()):
            return
        self._sink = self.text_out
        self.text_out.clear()
        llm, src, tgt, emit = self.llm, self.src.text().strip(), self.tgt.text().strip(), self.relay.text.emit
        max_tokens = self.max_tokens
        if self.use_hydra.isChecked():
            self.run(self._hydra_job(text, src, tgt), lambda _out: None, "Translating with the Hydra")
            return
        self.run(lambda progress, cancel: translate(llm, text, src, tgt, max_tokens=max_tokens, on_text=emit,
                                                    cancel=cancel),
                 lambda _out: None, "Translating")

    def _hydra_job(self, text: str, src: str, tgt: str):
        from core import hydra

        project, max_tokens, emit = self.project, self.max_tokens, self.relay.text.emit
        key = (str(project.final_model_dir), src, tgt)
        cached = self._hydra if self._hydra is not None and self._hydra[0] == key else None

        def fn(progress, cancel):
            model = cached[1] if cached else project.hydra(src, tgt)
            self._hydra = (key, model)  # a plain assignment: the next translation reuses it
            return hydra.translate(model, text, src, tgt, max_new_tokens=max_tokens, on_text=emit, cancel=cancel)
        return fn


PAGES = (ProjectPage, SourcePage, DataPage, TokenizerPage, AlignPage, FineTunePage, EvaluatePage, ExportPage,
         ChatPage)
