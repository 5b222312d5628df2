"""The wizard's pages and the project's stages (offscreen Qt): the one stage ↔ page table, the Align page's mapping
read off the GUI thread and its baselines folded away, the Fine-tune page built and shown without torch."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


import pytest

from PySide6.QtCore import QSettings

from core.layout import STAGES, StageRecord


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    from app.window import MainWindow

    w = MainWindow()
    w.warnings = []
    monkeypatch.setattr(w, "show_warning", w.warnings.append)  # a dialog would block the test
    monkeypatch.setattr(w, "confirm", lambda question: True)
    qtbot.addWidget(w)
    return w


def test_every_stage_has_its_page():
    """Each stage of a project resumes on a page that exists; a project with nothing left resumes on Chat."""
    from app.pages import PAGES, STEPS, page_of

    keys = {page.key for page in PAGES}
    assert {page_of(stage) for stage in STAGES} <= keys
    assert page_of("map") == page_of("init") == "align" and page_of(None) == "chat"
    assert all(s.page in keys and {s.done, s.needs} - {""} <= set(STAGES) for s in STEPS)


def test_steps_done_and_waiting(window, tmp_path):
    """The step list reads the table: Align & map is done once the model is initialised (not merely aligned), and
    Fine-tune waits for it."""
    from core.project import Project

    project = Project.create(tmp_path / "p")
    window._set_project(project)
    assert window.step_state("tokenizer") == "needs" and window.step_state("data") in ("open", "current")
    for stage in ("data", "tokenizer", "align"):
        project.state.stages[stage] = StageRecord(0.0, "", {})
    assert window.step_state("align") != "done" and window.step_state("finetune") == "needs"
    project.state.stages["map"] = project.state.stages["init"] = StageRecord(0.0, "", {})
    assert window.step_state("align") == "done" and window.step_state("finetune") == "open"


def test_core_fix_said_as_the_wizard_step():
    from app.window import plain_message

    assert plain_message("run `tweety init --project P`") == "run the Align & map step"
    assert plain_message("see tweety eval") == "see the Evaluate step"
    assert plain_message("`tweety tokenizer` first") == "the Tokenizer step first"
