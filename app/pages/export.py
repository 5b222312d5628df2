"""The Export page: the adapted model as one GGUF file, with its model card, and the hand-offs to Ollama (a Modelfile
and the one command that makes the model) and LM Studio (the file placed in its models folder)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel

from app.pages.widgets import FileRow, Page


class ExportPage(Page):
    key, title = "export", "Export"
    intro = (
        "Write the adapted model as a single GGUF file that llama.cpp-based apps (and the Chat page) can run, "
        "with a model card (README.md) beside it. Ollama and LM Studio can take it from there."
    )
    exported = Signal(str)  # the written file, for the Chat page

    def build(self) -> None:
        form = QFormLayout()
        self.type = QComboBox()
        for label, kind in (("small (q8_0, recommended)", "q8_0"), ("half (f16)", "f16"), ("full (f32)", "f32")):
            self.type.addItem(label, kind)
        self.type.setToolTip(
            "How precisely the numbers are stored. small (q8_0): 8 bits each, a quarter of full's "
            "size, answers nearly the same — the one to use. half (f16): half the size of full. "
            "full (f32): every number exact, the biggest file."
        )
        self.type.currentIndexChanged.connect(lambda _i: self.project and self._default_path())
        self.dest = FileRow("save", filter="GGUF models (*.gguf)")
        form.addRow("Type", self.type)
        form.addRow("Destination", self.dest)
        self.layout_.addLayout(form)
        self.ollama = QCheckBox("Also write an Ollama Modelfile")
        self.ollama.setToolTip(
            "A Modelfile beside the GGUF: the model's chat template in Ollama's own syntax and "
            "where its turns end. The page then shows the one command that makes the Ollama model."
        )
        self.layout_.addWidget(self.ollama)
        buttons = QHBoxLayout()
        buttons.addWidget(self.button("Export", lambda: self.go()))  # not clicked(bool) as `lmstudio`
        buttons.addWidget(
            self.button(
                "Export for LM Studio…",
                self.for_lmstudio,
                "Choose LM Studio's models folder (by default ~/.lmstudio/models): the file goes into "
                "tweety-studio/<project>/ there, where LM Studio lists it under My Models.",
            )
        )
        buttons.addStretch(1)
        self.layout_.addLayout(buttons)
        self.result = QLabel()
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layout_.addWidget(self.result)
        self.command = QLabel()  # the `ollama create` command, to copy into a terminal
        self.command.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.command.setStyleSheet("font-family: monospace;")
        self.command.setVisible(False)
        self.layout_.addWidget(self.command)

    def _default_path(self) -> None:
        p = self.project
        self.dest.set_path(p.export_dir / f"{p.folder.name}-{self.type.currentData()}.gguf")

    def for_lmstudio(self) -> None:
        from core.handoff import lmstudio_models_dir

        folder = QFileDialog.getExistingDirectory(self, "LM Studio's models folder", str(lmstudio_models_dir()))
        if folder:
            self.go(lmstudio=folder)

    def go(self, lmstudio: str | None = None) -> None:
        from core import handoff
        from core.errors import TweetyError
        from core.export import ExportSettings

        project = self.project
        given = handoff.HandOff(ollama=self.ollama.isChecked(), lmstudio=lmstudio or None)
        name = project.folder.resolve().name
        typed = self.dest.path or str(project.export_dir / f"{project.folder.name}-{self.type.currentData()}.gguf")
        out = handoff.destination(typed, name, given)
        # Replacing the GGUF, or a README.md or Modelfile beside it that the user wrote, is asked about first.
        taken = [out] if out.exists() else []
        for path, marker, needed in (
            (out.parent / handoff.CARD, handoff.CARD_MARKER, True),
            (out.parent / handoff.MODELFILE, handoff.MODELFILE_MARKER, given.ollama),
        ):
            try:
                if needed:
                    handoff.check_free(path, marker, overwrite=False)
            except TweetyError:
                taken.append(path)
        overwrite = bool(taken) and self.ctx.confirm(f"{' and '.join(map(str, taken))} already exist. Replace?")
        if taken and not overwrite:
            return
        settings = ExportSettings(type=self.type.currentData(), overwrite=overwrite)
        self.command.setVisible(False)
        self.run(
            lambda progress, cancel: project.export(settings, typed, handoff=given, progress=progress, cancel=cancel),
            self._done,
            "Exporting",
        )

    def _done(self, result) -> None:
        given = result.handoff
        text = f"Wrote <b>{result.path}</b> ({result.bytes / 1e6:,.1f} MB, {result.type}) and its model card."
        if given is not None and given.modelfile is not None:
            text += f"<br>Ollama: the Modelfile is {given.modelfile}; make the model with this command:"
            self.command.setText(given.ollama_command)
            self.command.setVisible(True)
        for warning in result.warnings:
            text += f"<br>Note: {warning}"
        self.result.setText(text)
        self.exported.emit(str(result.path))
        self.ctx.stage_done()

    def project_changed(self) -> None:
        self._default_path()
        self.command.setVisible(False)
        self.result.setText("")
