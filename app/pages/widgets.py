"""What every wizard page shares: the `Page` base class, the file picker, small table and spin-box helpers and the
tooltips that explain the jargon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.context import Context

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
    "tied": "Tied embeddings: the model reads its input and writes its output with one and the same vocabulary "
    "table; untied, it has a separate output table.",
    "tpb": "Tokens per byte: how many tokens the tokenizer needs per byte of text. Lower means shorter sequences.",
    "weight": "Weight: how much this resource's evidence counts when several resources suggest sources for the same "
    "token (2 counts twice as much as 1; 0 ignores it).",
}


# What each stage made, in the user's words (for "this would discard …" questions).
STAGE_WORDS = {
    "data": "the checked input files",
    "tokenizer": "the tokenizer",
    "align": "the alignment",
    "map": "the mapping",
    "init": "the initialised model",
    "finetune": "the fine-tuned model",
    "evaluate": "the evaluation",
    "export": "the export record",
    "hydra": "the tuned Hydra",
}


def readable(piece: str, byte_level: bool | None = None) -> str:
    """A tokenizer piece as readable text, the same on both sides: a leading space as ▁ (byte-level tokenizers write
    it Ġ, and a newline Ċ), raw bytes as <0x..>. `byte_level`: whether the piece comes from a byte-level tokenizer
    (GPT-2's alphabet, e.g. SmolLM2's); None guesses from the piece, which cannot tell a lone byte of a multi-byte
    character from a Latin-1 letter: SmolLM2's `Ñ` is byte 0xD1, half of a Cyrillic `ё`, a Spanish vocabulary's `Ñ`
    is the letter — only a caller that knows the tokenizer shows the first as <0xD1>."""
    if piece.startswith("<0x") and piece.endswith(">"):
        return piece
    from core.tokenizer import BYTE_OF_CHAR as decode  # GPT-2's byte-level alphabet, reversed: stand-in → byte

    if not piece or byte_level is False or not all(c in decode for c in piece):
        return piece
    # Guessing: byte-level when some character stands for a space, a control byte or part of a multi-byte character
    # (a piece of plain ASCII reads the same either way).
    if byte_level is None and not any(ord(c) >= 0x80 for c in piece):
        return piece
    data = bytes(decode[c] for c in piece)
    text = data.decode("utf-8", errors="surrogateescape")  # a byte that is no whole character: U+DC80–U+DCFF
    broken = any("\udc80" <= c <= "\udcff" for c in text)
    if broken and byte_level is None and not any(ord(c) > 0xFF for c in piece + text if not "\udc80" <= c <= "\udcff"):
        # Latin-1 letters that are no UTF-8 (`ção`, `Ñ`): as written, unless surely byte-level — a stand-in beyond
        # Latin-1 (Ġ) or a whole multi-byte character among the bytes (`Ð¾Ð` is `о` and half of the next letter).
        return piece
    return "".join(
        "▁"
        if c == " "
        else f"<0x{ord(c) - 0xDC00:02X}>"
        if "\udc80" <= c <= "\udcff"
        else c
        if c.isprintable()
        else "".join(f"<0x{b:02X}>" for b in c.encode())
        for c in text
    )


def literal(text: str) -> str:
    """`text` for a button, group box or tab, which take an `&` as the marker of a shortcut letter (“Language & data”
    would read “Language _data”, with Alt+Space as its shortcut): every `&` shown as written."""
    return text.replace("&", "&&")


class Note(QLabel):
    """A sentence on a page that wraps at its box's width and is never cut off. Qt's layouts take a wrapped label's
    height for its text as a wish, not a need: a column short of height (the Chat page's Translate box at 1280×800)
    squeezed its sentences and cut their last lines. A note's minimum height is its whole text's at its width, so
    the room comes from what may shrink (text boxes); its width is the box's (Ignored: a long text never widens it).
    """

    def __init__(self, text: str = ""):
        super().__init__(text)
        self.setWordWrap(True)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._laid_out = False  # its width is the layout's: until then, a guess would inflate the page's minimum

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        if not self._laid_out:
            return hint
        return QSize(hint.width(), max(hint.height(), self.heightForWidth(self.width())))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width() or not self._laid_out:
            self._laid_out = True
            self.updateGeometry()  # another width, another height for the text


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


class Fold(QWidget):
    """A section shown folded, its title a button with an arrow: settings most users never need (a cluster's
    rendezvous, a learning rate) stay out of the main path, one click away. Fill `body`."""

    def __init__(self, title: str, tip: str = ""):
        super().__init__()
        self.toggle = QToolButton(text=literal(title), checkable=True, autoRaise=True, toolTip=tip)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.body = QWidget()
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        col.addWidget(self.body)
        self.toggle.toggled.connect(self.set_open)
        self.set_open(False)

    def set_open(self, open_: bool) -> None:
        self.toggle.setChecked(open_)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.body.setVisible(open_)


def fill_table(table: QTableWidget, headers: list[str], rows: list[list[Any]]) -> None:
    table.clear()
    table.setColumnCount(len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            text = rounded(value) if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
            item = QTableWidgetItem(str(text))
            item.setToolTip(str(text))  # a cell too narrow for its text shows it cut with “…”: here it is whole
            table.setItem(r, c, item)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)


def rounded(value: float) -> str:
    """A measurement as a person reads it: 2.157 bits per byte, 36.1 seconds, 589 perplexity (not 588.9071)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


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
    """One step of the wizard: a small widget class plus the `core` job it starts through its `Context`."""

    key = ""
    title = ""
    intro = ""
    available = True  # False: shown greyed out in the step list
    fills = False  # True: the page has a widget that should take the spare height (no trailing stretch)

    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx
        self.layout_ = QVBoxLayout(self)
        heading = QLabel(f"<h2>{self.title}</h2><p>{self.intro}</p>")
        heading.setWordWrap(True)
        self.layout_.addWidget(heading)
        self.build()
        if not self.fills:
            self.layout_.addStretch(1)

    @property
    def project(self):
        return self.ctx.project

    def build(self) -> None: ...

    def bring_into_view(self, widget: QWidget) -> None:
        """Scroll the page until `widget` shows, once the layout has made room for its new text: the window scrolls a
        page taller than itself, and a result that appears below the fold would go unseen (found in a walk at
        1280×800: "Is adapting worth it?" answered out of sight)."""

        def scroll() -> None:
            area = self.parentWidget()
            while area is not None and not isinstance(area, QScrollArea):
                area = area.parentWidget()
            if area is not None:
                area.ensureWidgetVisible(widget)

        # A word-wrapped label settles its height over more than one layout pass: scroll again once it has.
        for ms in (0, 150):
            QTimer.singleShot(ms, widget, scroll)  # not called once the widget is gone

    def project_changed(self) -> None:
        """A project was opened: show what it already has."""

    def shown(self) -> None:
        """The user switched to this page."""

    def ready_to_leave(self, then) -> bool:
        """Next was pressed: True to move on now. False to stay — after saying why on the page, or while a job this
        page started (recording what it shows) runs; that job calls `then()` once it succeeded."""
        return True

    def run(self, fn, on_done, name: str, **kw):
        return self.ctx.run_job(fn, on_done, name=name, **kw)

    def confirm_rerun(self, stage: str, action: str) -> bool:
        """Before re-running `stage`: ask first when it would discard later steps' work (Project.stale_after)."""
        stale = self.project.stale_after(stage)
        if not stale:
            return True
        names = ", ".join(STAGE_WORDS.get(s, s) for s in stale)
        return self.ctx.confirm(
            f"{action} again discards what the later steps made: {names}. They will have to be run again. Continue?"
        )

    def idle(self) -> bool:
        """False (after telling the user) while a job runs: it may be reading the files an action would change."""
        if self.ctx.busy:
            self.ctx.show_warning("A job is still running; wait for it to finish or press Cancel first.")
            return False
        return True

    def button(self, text: str, slot, tip: str = "") -> QPushButton:
        return button(text, slot, tip)


def button(text: str, slot, tip: str = "") -> QPushButton:
    """The one way a page makes a push button: its text shown as written, `slot` on click."""
    b = QPushButton(literal(text))
    b.clicked.connect(slot)
    b.setToolTip(tip)
    return b
