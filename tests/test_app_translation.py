"""The wizard's translation parts (app.pages.translation), driven like a user would, on a small real project: 2,000
demo verse pairs, a five-word dictionary, a 1,000-token Spanish vocabulary (offscreen Qt). The tests run in file order
on one project: measure, look up and translate files, then teach (which drops the measurement) and cancel."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from conftest import demo_lines, verse_project, write_lines
from PySide6.QtWidgets import QApplication, QFileDialog
from test_app import TIMEOUT, wait_job, window  # noqa: F401 - `window` is a fixture

SHOTS = Path(tempfile.gettempdir()) / "tweety-translation-shots"
PAIRS = 3  # held-out pairs measured: the Hydra takes seconds a line on a processor


@pytest.fixture(scope="module")
def verses():
    return demo_lines("bible.train.en.gz", 2000), demo_lines("bible.train.es.gz", 2000)


@pytest.fixture(scope="module")
def project(module_tmp):
    """A real adapted project with a parallel corpus (tests/test_translating.py's)."""
    return verse_project(module_tmp("app-translation"))


def shot(w, key: str, name: str) -> Path:
    w.go(key)
    QApplication.processEvents()
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    image = w.grab()
    assert (image.width(), image.height()) == (1280, 800)  # the page fits: the window did not have to grow
    assert image.save(str(path))
    return path


def wait_button(qtbot, w, button, timeout: int = 600_000) -> None:
    """Until the job a JobButton started has ended and the button says so again: its end reaches each slot as its
    own queued event, posted one by one from the worker (the button's last), so `not w.busy` alone comes too early."""
    qtbot.waitUntil(lambda: not w.busy and not button.running, timeout=timeout)
    wait_job(qtbot, w)


def cells(table, column: int) -> list[str]:
    return [table.item(r, column).text() for r in range(table.rowCount())]


def test_without_a_corpus_the_translation_parts_say_what_they_need(qtbot, window, tmp_path):
    w = window
    w.new_project(tmp_path / "proj")
    ev, teach, chat = w.pages["evaluate"], w.pages["finetune"].teach, w.pages["chat"]
    w.go("evaluate")
    assert not ev.tabs.isTabEnabled(1) and "parallel corpus" in ev.tabs.tabToolTip(1)
    assert not teach.isEnabled() and "parallel corpus" in teach.status.text()
    w.go("chat")
    assert not chat.file_translation.button.isEnabled()
    chat.text_in.setPlainText("In the beginning")
    chat.translate()  # no model, no corpus: only the usual warning, no lookup
    assert w.warnings == ["Load a model first."] and chat.memory_match.isHidden()
    w.warnings.clear()


def test_evaluate_measures_the_translators(qtbot, window, project):
    from app.pages.translation import CHRF_TIP, SYSTEM_TIPS
    from core import translating

    w = window
    w.open_project(project)
    w.go("evaluate")
    ev = w.pages["evaluate"]
    assert ev.tabs.isTabEnabled(1)
    ev.tabs.setCurrentIndex(1)
    box = ev.translation
    box.pairs = PAIRS
    box.button.click()
    assert box.button.text() == "Cancel" and "English → Spanish on 3 held-out pairs" in box.about.text()
    wait_button(qtbot, w, box.button)
    assert box.button.text() == "Measure translation"
    names = [n.removesuffix(" (best)") for n in cells(box.scores, 0)]
    assert {"copy", "dictionary", "memory", "hydra"} <= set(names) == set(translating.systems(w.project, "en", "es"))
    assert sum(n.endswith(" (best)") for n in cells(box.scores, 0)) == 1
    assert all(0 <= float(x) <= 100 for x in cells(box.scores, 1))
    assert box.scores.horizontalHeaderItem(1).toolTip() == CHRF_TIP
    assert all(box.scores.item(r, 0).toolTip() == SYSTEM_TIPS[n] for r, n in enumerate(names))  # each in plain words
    assert box.verdict.text().startswith("Best on the held-out pairs:")
    # the first held-out line, its reference and each translator's output side by side
    headers = [box.sample.horizontalHeaderItem(c).text() for c in range(box.sample.columnCount())]
    assert headers[2:] == names and box.sample.rowCount() == 1
    assert box.sample.item(0, 0).text() and box.sample.item(0, 1).text() != box.sample.item(0, 0).text()
    assert box.sample.item(0, 2 + names.index("copy")).text() == box.sample.item(0, 0).text()
    recorded = w.project.state.stages["translation"].summary
    assert recorded["pairs"] == PAIRS and set(recorded["scores"]) == set(names)
    shot(w, "evaluate", "evaluate-translation")
    # reopened: the recorded scores come back (not the lines, which project.json does not keep)
    w.open_project(project)
    assert [n.removesuffix(" (best)") for n in cells(box.scores, 0)] == names
    assert box.verdict.text().startswith("Best on the held-out pairs:") and box.sample.rowCount() == 0


def test_chat_shows_the_memory_match_and_translates_files(qtbot, window, project, verses, tmp_path, monkeypatch):
    from core import translating

    en, es = verses
    w = window
    w.open_project(project)
    if translating.recorded_best(w.project, "en", "es") is None:  # (this test alone: measure quickly first)
        translating.evaluate(w.project, "en", "es", limit=PAIRS)
    w.go("chat")
    chat = w.pages["chat"]
    assert chat.file_translation.button.isEnabled()
    assert chat.using() == "project"  # a project with a corpus translates with its best translator
    chat.use("model")
    chat.text_in.setPlainText(en[5])  # a training line: its own pair
    chat.translate()
    assert w.warnings == ["Load a model first."]  # no model to translate with, but the memory answers anyway
    w.warnings.clear()
    qtbot.waitUntil(lambda: chat.memory_match.isVisible(), timeout=TIMEOUT)
    text = chat.memory_match.text()
    assert text.startswith("Translation memory's closest match:") and es[5] in text and "very same line" in text
    chat.text_in.setPlainText("And God said unto Noah, make thee an ark")
    chat.translate()
    w.warnings.clear()
    qtbot.waitUntil(lambda: "similar:" in chat.memory_match.text(), timeout=TIMEOUT)
    assert "Noah" in chat.memory_match.text() or "ark" in chat.memory_match.text()

    # Translate a file…: picked, saved under a new name, translated by the recorded best translator
    src = write_lines(tmp_path / "psalm.txt", [en[0], "", en[1]])
    out = tmp_path / "psalm.es.txt"
    asked = {}

    def save_as(parent, caption, suggested, filter, **kw):
        asked.update(suggested=suggested, options=kw.get("options"))
        return str(out), filter

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **kw: (str(src), ""))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_as)
    chat.file_translation.button.click()
    assert asked["suggested"] == str(out) and asked["options"] == QFileDialog.Option.DontConfirmOverwrite
    wait_button(qtbot, w, chat.file_translation.button)
    best = translating.recorded_best(w.project, "en", "es")
    assert f"3 lines translated by {best} (English → Spanish)" in chat.file_translation.text()
    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[0] and lines[2]
    if best == "memory":
        assert lines[0] == es[0]

    # never over an existing file unless the user says so; never over the file being translated
    out.write_text("mine\n", encoding="utf-8")
    questions = []
    w.confirm = lambda question: questions.append(question) or False
    chat.file_translation.button.click()
    assert not w.busy and questions == [f"{out} exists. Replace it?"] and out.read_text() == "mine\n"
    chat.file_translation.translate(str(src), str(src))
    assert not w.busy and "file being translated" in w.warnings.pop()

    # a gettext catalogue: its empty entries, counted as entries
    pot = tmp_path / "app.pot"
    pot.write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
        f'msgid "{en[0]}"\nmsgstr ""\n\nmsgid "{en[1]}"\nmsgstr ""\n',
        encoding="utf-8",
    )
    chat.file_translation.translate(str(pot), str(tmp_path / "es.po"))
    wait_button(qtbot, w, chat.file_translation.button)
    assert f"2 entries translated by {best}" in chat.file_translation.text()
    assert (tmp_path / "es.po").is_file()
    shot(w, "chat", "chat-translation")


def test_teach_it_to_translate(qtbot, window, project):
    w = window
    w.open_project(project)
    w.go("finetune")
    teach = w.pages["finetune"].teach
    assert teach.isEnabled() and teach.steps.value() == 300
    teach.steps.setValue(2)
    teach.button.click()
    assert teach.button.text() == "Cancel"
    qtbot.waitUntil(lambda: "elapsed" in teach.status.text(), timeout=TIMEOUT)
    wait_button(qtbot, w, teach.button)
    status = teach.status.text()
    assert status.startswith("Done: 2 steps") and "It now translates with" in status, status
    assert "Measure it on the Evaluate page." in status and teach.button.text() == "Start"
    record = w.project.state.stages["hydra"].summary
    assert record["for"] == "translation" and record["steps"] == 2
    shot(w, "finetune", "finetune-teach")
    w.go("evaluate")  # the measurement was of the Hydra before: gone, and the page says so
    assert w.pages["evaluate"].translation.scores.rowCount() == 0
    assert "Not measured yet" in w.pages["evaluate"].translation.about.text()


def test_cancel_stops_teaching(qtbot, window, project):
    w = window
    w.open_project(project)
    before = dict(w.project.state.stages["hydra"].summary) if "hydra" in w.project.state.stages else None
    w.go("finetune")
    teach = w.pages["finetune"].teach
    teach.steps.setValue(300)
    teach.button.click()
    qtbot.waitUntil(lambda: "loss" in teach.status.text(), timeout=600_000)  # training: a step done
    with qtbot.waitSignal(w.job.signals.cancelled, timeout=TIMEOUT):
        teach.button.click()  # the Start button reads Cancel while it runs
    wait_button(qtbot, w, teach.button, timeout=TIMEOUT)
    kept = w.project.hydra_tuning_checkpoint()  # the steps done, to continue from (core's tests check that)
    assert kept is not None and kept.steps == 300 and kept.step >= 1
    assert teach.status.text() == (
        f"Cancelled after step {kept.step} of 300: it translates as before. Start again "
        "with 300 steps to continue from there."
    )
    assert "Teaching it to translate: cancelled" in w.log_view.toPlainText() and teach.button.text() == "Start"
    after = w.project.state.stages.get("hydra")
    assert (after.summary if after else None) == before  # the Hydra as it was
    teach.show_project(w.project)  # the project shown again (reopened): where Start goes on from
    assert teach.status.text() == (
        f"Stopped at step {kept.step} of 300 last time: Start with 300 steps continues "
        "from there (other steps start over)."
    )
