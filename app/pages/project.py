"""The Project page: create a project (a name, in a folder of projects) or open one, and see its finished stages."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit

from app.pages.widgets import TIPS, FileRow, Page, fill_table, table
from core.errors import TweetyError, message_of

SETTINGS = ("Tweety Studio", "Tweety Studio")


def default_parent() -> Path:
    """Where new projects go unless the user chose another folder before."""
    return Path(QSettings(*SETTINGS).value("projects_folder", str(Path.home() / "Tweety Studio projects")))


class ProjectPage(Page):
    key, title = "project", "Project"
    intro = (
        "A project is a folder holding everything Tweety Studio makes for one language. Give a new project a "
        "name (a folder of that name is created), or open an existing one to continue where you left off."
    )

    def build(self) -> None:
        form = QFormLayout()
        self.name = QLineEdit(placeholderText="e.g. spanish-bible")
        self.name.setToolTip("The project's name: a new folder of this name is created in the folder below")
        self.name.returnPressed.connect(self.create)
        self.parent_folder = FileRow("dir", "folder that holds your projects")
        form.addRow("New project name", self.name)
        form.addRow("In folder", self.parent_folder)
        self.layout_.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.button("Create project", self.create, "Create the folder and start the new project"))
        row.addWidget(self.button("Open project…", self._open, "Continue a project made before"))
        row.addStretch(1)
        self.layout_.addLayout(row)
        self.status = QLabel("No project open.")
        self.status.setWordWrap(True)
        self.layout_.addWidget(self.status)
        self.stages = table()
        self.layout_.addWidget(self.stages)

    def shown(self) -> None:
        if not self.parent_folder.path:
            self.parent_folder.set_path(default_parent())

    def create(self) -> None:
        """A new project named by the name field, in the chosen folder (created if need be)."""
        name = self.name.text().strip()
        if not name:
            self.ctx.show_warning("Type a name for the new project first.")
            return
        if any(c in name for c in '/\\:*?"<>|') or name in (".", ".."):
            self.ctx.show_warning(f'“{name}” cannot be a folder name: leave out / \\ : * ? " < > |.')
            return
        parent = Path(self.parent_folder.path or default_parent()).expanduser()
        folder = parent / name
        if folder.exists() and any(folder.iterdir()):
            self.ctx.show_warning(
                f"A folder named “{name}” already exists in {parent} and has files in it. Choose "
                "another name, or open it with “Open project…” if it is a project."
            )
            return
        if self._try(self.ctx.new_project, folder):
            QSettings(*SETTINGS).setValue("projects_folder", str(parent))
            self.name.clear()

    def _open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project folder", str(default_parent()))
        if folder:
            self._try(self.ctx.open_project, folder)

    def _try(self, action, folder) -> bool:
        try:
            action(folder)
        except (OSError, TweetyError) as e:
            self.ctx.show_warning(message_of(e))
            return False
        return True

    def project_changed(self) -> None:
        """Also called after every finished stage (the window relays it): the overview follows the project."""
        p = self.project
        self.status.setText(
            f"<b>{p.folder}</b><br>Source model: {p.state.source_model}<br>"
            f"Next step: {p.next_stage or 'all done — chat with the model'}"
        )
        fill_table(
            self.stages,
            ["Stage", "Seconds", "Summary"],
            [[name, rec.seconds, summary_text(rec.summary)] for name, rec in p.state.stages.items()],
        )
        for row, rec in enumerate(p.state.stages.values()):
            if any("bpb" in key for key in rec.summary):
                item = self.stages.item(row, 2)
                item.setToolTip(f"{item.text()}\n\n{TIPS['bpb']}")  # the whole text, then what it means


# A stage record's keys (core's names, kept in project.json) in the user's words; others are shown with spaces.
SUMMARY_WORDS = {
    "initial_bpb": "bits per byte before",
    "final_bpb": "after",
    "tokens_per_s": "tokens per second",
    "stage": "what trained",
    "vocab_size": "vocabulary size",
    "steps": "steps",
}


def summary_text(summary: dict) -> str:
    """“bits per byte before: 2.367, after: 1.843”, not “initial_bpb: 2.3673003645728294”."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    return ", ".join(
        f"{SUMMARY_WORDS.get(k, k.replace('_', ' '))}: {value(v)}"
        for k, v in summary.items()
        if not isinstance(v, dict)
    )
