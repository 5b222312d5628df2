"""The wizard's pages and the project's stages (offscreen Qt): the one stage ↔ page table, the Align page's mapping
read off the GUI thread and its baselines folded away, the Fine-tune page built and shown without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from conftest import ROOT

from core.layout import STAGES, StageRecord


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


def mapped_project(folder: Path, rows: int, align_settings: dict | None = None):
    """A project whose map stage is recorded, with a mapping.jsonl of `rows` tokens (what the Align page reads)."""
    from core.mapping import TABLE_FILE
    from core.project import Project

    project = Project.create(folder)
    project.mapping_dir.mkdir(parents=True)
    lines = (
        json.dumps(
            {"id": i, "token": f"▁w{i}", "origin": "alignment", "sources": [["Ġw", 1, 1.0]], "from": [{"bible": 1.0}]}
        )
        + "\n"
        for i in range(rows)
    )
    (project.mapping_dir / TABLE_FILE).write_text("".join(lines), encoding="utf-8")
    project.state.stages["map"] = StageRecord(0.0, "work/mapping", {"alignment": rows})
    project.state.settings["align"] = align_settings or {}
    project.save()
    return project


def test_align_page_reads_the_mapping_off_the_gui_thread(window, qtbot, tmp_path, monkeypatch):
    """Opening a project returns before its mapping.jsonl is parsed: the rows are read in the pool and shown when
    they come (a 32k-token vocabulary's file froze the window)."""
    from app.pages import align

    readers: list[threading.Thread] = []
    real = align.read_mapping
    monkeypatch.setattr(
        align, "read_mapping", lambda project: (readers.append(threading.current_thread()), real(project))[1]
    )
    project = mapped_project(tmp_path / "p", 3000)
    page = window.pages["align"]
    with qtbot.waitSignal(page.mapping_shown, timeout=30_000):
        window.open_project(project.folder)
        assert page.model.rowCount() == 0  # the rows arrive through the event loop, after open_project returned
    assert readers and all(t is not threading.main_thread() for t in readers)
    assert page.model.rowCount() == 3000 and page.model.rows[0][1] == "▁w0"


def test_align_page_keeps_the_baselines_under_advanced(window, tmp_path):
    """The main path is one button with the defaults that measured best; fast_align and More links are folded away
    (opened for a project that was aligned with one)."""
    page = window.pages["align"]
    window._set_project(mapped_project(tmp_path / "p", 1))
    window.go("align")
    assert page.aligner.currentData() == "torch" and page.links.currentData() == "auto"
    assert page.advanced.isVisibleTo(page) and not page.aligner.isVisibleTo(page)
    assert not page.links.isVisibleTo(page)
    window._set_project(mapped_project(tmp_path / "q", 1, {"method": "torch", "symmetrize": "grow-diag-final-and"}))
    assert page.links.currentData() == "grow-diag-final-and" and page.links.isVisibleTo(page)


# Run in a fresh interpreter: who imports torch, and on which thread. The pytest process has torch loaded already.
FINETUNE_PAGE = r"""
import json, sys, threading
from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication

gui_imports = []

class Watch:  # a first import of torch on the GUI thread is recorded (the finder finds nothing itself)
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and threading.current_thread() is threading.main_thread():
            gui_imports.append(name)
        return None

sys.meta_path.insert(0, Watch())
app = QApplication([])
QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, sys.argv[2])
from app.window import MainWindow

w = MainWindow()
w.open_project(sys.argv[1])
page, loop = w.pages["finetune"], QEventLoop()
page.device_shown.connect(loop.quit)
QTimer.singleShot(240_000, loop.quit)  # a limit only: the device's signal ends the wait
w.go("finetune")
said = page.device.text()
loop.exec()
print(json.dumps({"gui_imports": gui_imports, "torch": "torch" in sys.modules, "said": said,
                  "device": page.device.text(), "estimate": page.estimate.text()}))
"""


def test_finetune_page_never_imports_torch_on_the_gui_thread(tmp_path):
    """Building and showing the Fine-tune page leaves torch to the pool (seconds of import, the window frozen
    meanwhile); the page says what it trains on once the pool has found out."""
    from core.project import Project

    Project.create(tmp_path / "p")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [sys.executable, "-c", FINETUNE_PAGE, str(tmp_path / "p"), str(tmp_path / "settings")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["gui_imports"] == [] and seen["torch"], seen  # imported, by the pool only
    assert seen["said"] == "finding out…" and seen["device"].startswith(("CPU", "GPU")), seen
    assert seen["estimate"].startswith("about "), seen


def test_data_page_word_rules_are_the_languages_own_until_the_user_chooses(window, qtbot, tmp_path):
    """The dictionary's word rules on the Language & data page: the language's own shown as the default (Russian: no
    plural rule, no cognates), what the user types kept in project.json and shown again, wrong endings refused in
    words on the page."""
    from conftest import demo_lines, write_lines
    from test_app import wait_job

    from core.resources import DICTIONARY

    w = window
    w.new_project(tmp_path / "proj")
    w.go("data")
    page = w.pages["data"]
    page.code.setText("ru")
    assert "none" in page.endings.placeholderText() and "(off)" in page.cognates.itemText(0)
    page.code.setText("es")
    assert page.endings.placeholderText().endswith(": s") and "(on)" in page.cognates.itemText(0)
    assert page.inputs().plural_endings is None and page.inputs().cognates is None
    page.rows["target"].set_path(write_lines(tmp_path / "es.txt", demo_lines("bible.train.es.gz", 300)))
    page.add_resource(DICTIONARY, (write_lines(tmp_path / "dict.tsv", ["God\tDios", "earth\ttierra"]),))
    page.endings.setText("s, %s")
    page.use()
    assert not w.busy and "not a word ending" in page.error.text()
    page.endings.setText("s, es")
    page.cognates.setCurrentIndex(page.cognates.findData(False))
    page.use()
    wait_job(qtbot, w)
    assert not page.error.text(), page.error.text()
    kept = json.loads((tmp_path / "proj" / "project.json").read_text())["inputs"]
    assert (kept["plural_endings"], kept["cognates"]) == (["s", "es"], False)
    page.endings.clear()
    page.cognates.setCurrentIndex(0)
    page.project_changed()  # the page shows the project's record again
    assert page.endings.text() == "s, es" and page.cognates.currentData() is False and page.recorded()


def test_measurements_are_shown_rounded_as_a_person_reads_them():
    """“588.9071” token perplexity and “2.1569” bits per byte on the Evaluate page: rounded sensibly now."""
    from app.pages.widgets import rounded

    assert [rounded(v) for v in (588.9071, 2.15693, 0.38521, 36.125, 12345.6)] == [
        "589",
        "2.157",
        "0.385",
        "36.1",
        "12,346",
    ]
