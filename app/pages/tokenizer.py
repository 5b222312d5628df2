"""The Tokenizer page: how the new language's text is cut into pieces — a new vocabulary, or the source model's
extended with pieces of the new language."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QButtonGroup, QFormLayout, QLabel, QPlainTextEdit, QRadioButton, QVBoxLayout

from app.pages.widgets import TIPS, Page, readable, red, spin
from core.layout import EXTEND, REPLACE

TIPS_HERE = {
    REPLACE: "A vocabulary of the new language only: shortest sequences in the new language; the model then reads "
    "only the new language well.",
    EXTEND: "Keep every source token (the source language reads exactly as before) and add new ones learnt from "
    "the target text. Needs a parallel corpus: its source side must tokenize as before, and its alignment "
    "initialises the new tokens.",
}


class TokenizerPage(Page):
    key, title = "tokenizer", "Tokenizer"
    intro = "Learn how to cut the new language's text into pieces. The model gets one embedding per piece."

    def build(self) -> None:
        from core.extend import ExtensionSettings
        from core.tokenizer import MAX_VOCAB_SIZE, TokenizerSettings

        choice = QVBoxLayout()
        self.vocabulary = QButtonGroup(self)
        self.radios: dict[str, QRadioButton] = {}
        for i, (key, text) in enumerate(
            (
                (REPLACE, "Replace the vocabulary"),
                (EXTEND, "Extend the vocabulary (keep the source tokens, add new ones)"),
            )
        ):
            radio = QRadioButton(text)
            radio.setToolTip(TIPS_HERE[key])
            self.radios[key] = radio
            self.vocabulary.addButton(radio, i)
            choice.addWidget(radio)
        self.radios[REPLACE].setChecked(True)
        self.layout_.addLayout(choice)
        form = QFormLayout()
        # Up to the biggest vocabulary a model has: core refuses more (a typed zero too many), and the text may
        # support fewer — the result then says so.
        self.vocab = spin(500, MAX_VOCAB_SIZE, TokenizerSettings().vocab_size, TIPS["vocab"])
        self.vocab.setSingleStep(1000)
        label = QLabel("Vocabulary size")
        label.setToolTip(TIPS["vocab"])
        form.addRow(label, self.vocab)
        self.new_tokens = spin(
            1,
            256_000,
            ExtensionSettings().new_tokens,
            "How many target-language tokens to add to the source vocabulary",
        )
        self.new_tokens.setSingleStep(1000)
        form.addRow("New tokens", self.new_tokens)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.layout_.addLayout(form)
        self.vocabulary.idToggled.connect(self._choice_changed)
        self._choice_changed()
        self.layout_.addWidget(self.button("Train tokenizer", self.train, TIPS["vocab"]), 0, Qt.AlignmentFlag.AlignLeft)
        self.error = red(QLabel())
        self.result = QLabel(wordWrap=True)
        self.samples = QPlainTextEdit(readOnly=True, placeholderText="Sample segmentations appear here")
        self.samples.setMaximumHeight(200)
        self.layout_.addWidget(self.error)
        self.layout_.addWidget(self.result)
        self.layout_.addWidget(self.samples)

    def choice(self) -> str:
        return EXTEND if self.radios[EXTEND].isChecked() else REPLACE

    def _choice_changed(self, *_args) -> None:
        self.vocab.setEnabled(self.choice() == REPLACE)
        self.new_tokens.setEnabled(self.choice() == EXTEND)

    def train(self) -> None:
        from core.extend import ExtensionSettings
        from core.tokenizer import TokenizerSettings

        project, vocabulary = self.project, self.choice()
        if not self.confirm_rerun("tokenizer", "Training the tokenizer"):
            return
        settings = TokenizerSettings(vocab_size=self.vocab.value())
        extension = ExtensionSettings(new_tokens=self.new_tokens.value())
        self.error.clear()

        def fn(progress, cancel):
            tok = project.train_tokenizer(
                settings, vocabulary=vocabulary, extension=extension, progress=progress, cancel=cancel
            )
            return len(tok), segmentations(project, tok), project.state.stages["tokenizer"].summary.get("warning")

        self.run(fn, self._done, "Training tokenizer", on_error=self.error.setText)

    def _done(self, result) -> None:
        size, samples, warning = result
        start = "▁ marks a word start" if self.choice() == REPLACE else "Ġ marks a space before the piece"
        said = f"Trained: {warning[0].upper()}{warning[1:]}." if warning else f"Trained: {size:,} tokens."
        self.result.setText(f"{said} Pieces are separated by “ | ”; {start}.")
        self.samples.setPlainText("\n\n".join(samples))
        self.ctx.stage_done()

    def project_changed(self) -> None:
        state = self.project.state
        self.radios[EXTEND if state.vocabulary == EXTEND else REPLACE].setChecked(True)
        settings = state.settings.get("tokenizer")
        if settings and "vocab_size" in settings:
            self.vocab.setValue(settings["vocab_size"])
        extension = state.settings.get("extend")
        if extension and "new_tokens" in extension:
            self.new_tokens.setValue(extension["new_tokens"])


def segmentations(project, tok, n: int = 3) -> list[str]:
    from core.resources import read_lines
    from core.tokenizer import is_byte_level

    # An extended vocabulary is byte-level: its lone byte of a Cyrillic letter (Ñ) must show as <0xD1>, not a letter.
    byte_level = is_byte_level(tok)
    lines = [line for line in read_lines(project.inputs().target_text) if line.strip()][:n]
    return [f"{line}\n→ {' | '.join(readable(piece, byte_level) for piece in tok.tokenize(line))}" for line in lines]
