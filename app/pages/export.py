"""The Export page: the adapted model as one GGUF file."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QLabel

from app.pages.widgets import FileRow, Page


class ExportPage(Page):
    key, title = "export", "Export"
    intro = "Write the adapted model as a single GGUF file that llama.cpp-based apps (and the Chat page) can run."
    exported = Signal(str)  # the written file, for the Chat page

    def build(self) -> None:
        form = QFormLayout()
        self.type = QComboBox()
        for label, kind in (("small (q8_0, recommended)", "q8_0"), ("half (f16)", "f16"), ("full (f32)", "f32")):
            self.type.addItem(label, kind)
        self.type.setToolTip("How precisely the numbers are stored. small (q8_0): 8 bits each, a quarter of full's "
                             "size, answers nearly the same — the one to use. half (f16): half the size of full. "
                             "full (f32): every number exact, the biggest file.")
        self.type.currentIndexChanged.connect(lambda _i: self.project and self._default_path())
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
        self.dest.set_path(p.export_dir / f"{p.folder.name}-{self.type.currentData()}.gguf")

    def go(self) -> None:
        from core.export import ExportSettings

        out = self.dest.path or None
        # The QFileDialog already asked before replacing a file it picked; a typed path is asked about here.
        overwrite = bool(out) and Path(out).exists() and self.ctx.confirm(f"{out} exists. Replace it?")
        if out and Path(out).exists() and not overwrite:
            return
        project, settings = self.project, ExportSettings(type=self.type.currentData(), overwrite=overwrite)
        self.run(lambda progress, cancel: project.export(settings, out, progress=progress, cancel=cancel),
                 self._done, "Exporting")

    def _done(self, result) -> None:
        self.result.setText(f"Wrote <b>{result.path}</b> ({result.bytes / 1e6:,.1f} MB, {result.type})")
        self.exported.emit(str(result.path))
        self.ctx.stage_done()

    def project_changed(self) -> None:
        self._default_path()
