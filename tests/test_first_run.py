"""A new user's first hour in the wizard (issue 32): each trap one met, driven as they drove it (offscreen Qt).

The window fixture and `wait_job` are test_app's: a warning dialog is recorded in `w.warnings` instead of blocking."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
from conftest import demo_lines, write_lines
from PySide6.QtWidgets import QAbstractButton, QApplication, QGroupBox, QTabWidget
from test_app import TIMEOUT, wait_job, window  # noqa: F401 - `window` is a fixture


def shown(text: str) -> str:
    """A button's or label's text as the screen shows it: `&&` is a literal `&`, a lone `&` marks a shortcut key."""
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&")


def button(widget, text: str) -> QAbstractButton:
    """The button that reads `text` on screen, as a user finds it."""
    found = [b for b in widget.findChildren(QAbstractButton) if shown(b.text()) == text]
    assert len(found) == 1, [shown(b.text()) for b in widget.findChildren(QAbstractButton)]
    return found[0]


def test_trap1_demo_data_is_recorded_and_next_goes_on_to_a_tokenizer_that_has_its_input(qtbot, window, tmp_path):
    """“Try with the demo data” filled the page without recording it: Next moved on, and Train tokenizer said “no input
    files chosen yet”. The demo button records the inputs as “Use these files” does."""
    w = window
    w.new_project(tmp_path / "proj")
    w.go("data")
    button(w.pages["data"], "Try with the demo data").click()
    wait_job(qtbot, w)
    assert "data" in w.project.state.stages and w.project.inputs().language_code == "es"
    assert "30,423 target lines" in w.pages["data"].counts.text()
    w.next_button.click()
    assert w.stack.currentWidget() is w.pages["tokenizer"]


def test_trap1_next_records_the_filled_in_inputs_or_stays_and_says_why(qtbot, window, tmp_path):
    """Next used to move on from a page whose files were wrong, or never recorded. Now it records what the page shows
    (the same checks as “Use these files”) and moves on only when that succeeded."""
    from core.resources import PARALLEL

    w = window
    w.new_project(tmp_path / "proj")
    w.go("data")
    page = w.pages["data"]
    w.next_button.click()  # nothing filled in: no job, a plain sentence on the page
    assert w.stack.currentWidget() is page and not w.busy and "language code" in page.error.text()

    es = write_lines(tmp_path / "es.txt", demo_lines("bible.train.es.gz", 300))
    en = write_lines(tmp_path / "en.txt", demo_lines("bible.train.en.gz", 300))
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    page.code.setText("es")
    page.rows["target"].set_path(binary)
    page.add_resource(PARALLEL, (en, es))
    w.next_button.click()
    wait_job(qtbot, w)
    assert w.stack.currentWidget() is page and "weights.bin" in page.error.text()
    assert "data" not in w.project.state.stages

    page.rows["target"].set_path(es)
    w.next_button.click()
    wait_job(qtbot, w)
    assert w.stack.currentWidget() is w.pages["tokenizer"] and "data" in w.project.state.stages
    assert w.project.inputs().target_text == str(es)
    w.go("data")
    w.next_button.click()  # recorded and unchanged: straight on, nothing re-checked
    assert w.stack.currentWidget() is w.pages["tokenizer"] and not w.busy


def test_trap2_texts_with_an_ampersand_show_it_and_make_no_shortcut(qtbot, window, tmp_path):
    """“Next: Language _data”: an `&` in a button's text was taken as a shortcut marker (the next letter underlined,
    the `&` gone). Every button, group and tab of every page reads as written."""
    w = window
    w.new_project(tmp_path / "proj")
    texts = []
    for key in w.pages:
        w.go(key)
        QApplication.processEvents()
        texts.append(shown(w.next_button.text()))
        for b in w.findChildren(QAbstractButton):
            assert b.shortcut().isEmpty(), (key, b.text())
            assert b.text().replace("&&", "").count("&") == 0, (key, b.text())
        for box in w.findChildren(QGroupBox):
            assert box.title().replace("&&", "").count("&") == 0, (key, box.title())
        for tabs in w.findChildren(QTabWidget):
            for i in range(tabs.count()):
                assert tabs.tabText(i).replace("&&", "").count("&") == 0, (key, tabs.tabText(i))
    assert "Next: Language & data ▶" in texts and "Next: Align & map ▶" in texts
    assert "Next: Chat & Translate ▶" in texts


@pytest.fixture
def unjoined_gemma(tmp_path, monkeypatch):
    """The gemma extra as freshly installed: its model file not joined yet (into a folder of this test), every join
    counted. Asked for before `window`, so the Source page lists the models under it."""
    from core import models

    if models.importlib.util.find_spec(models.GEMMA_PACKAGE) is None:
        pytest.skip("the gemma extra is not installed")
    package = models.importlib.import_module(models.GEMMA_PACKAGE)
    target = tmp_path / "gemma-cache" / package.MODEL_NAME
    target.parent.mkdir()
    joins = []
    assemble = package.assemble
    monkeypatch.setattr(package, "default_output_path", lambda base_dir=None: target)
    monkeypatch.setattr(package, "assemble", lambda *a, **kw: joins.append(target) or assemble(*a, **kw))
    return target, joins


def test_trap3_gemma_declined_shows_the_model_in_use_and_nothing_was_unpacked(qtbot, unjoined_gemma, window,
                                                                             tmp_path, monkeypatch):
    """Declining the Gemma terms left Gemma shown as chosen while the project used SmolLM2; the terms were a file path
    in the question; and merely listing or choosing Gemma joined its 253 MB model file."""
    from core import models

    target, joins = unjoined_gemma
    w = window
    w.new_project(tmp_path / "proj")
    page = w.pages["source"]
    asked = []
    w.confirm = lambda question, details="": asked.append((question, details)) or False
    page.models.setCurrentIndex(page.models.findData(str(target)))
    assert "Gemma 3" in page.card.text() and "253 MB" in page.card.text() and not joins
    button(page, "Use this model").click()
    assert w.project.state.source_model == models.DEFAULT_MODEL
    assert page.models.currentData() == models.DEFAULT_MODEL and "SmolLM2" in page.card.text()
    assert "keeps using SmolLM2" in page.info.text()
    question, terms = asked[0]
    assert "Gemma Terms of Use" in question and "GEMMA_TERMS" not in question  # no path to go and open
    assert "you agree to be bound by this Agreement" in terms and "Español" not in terms  # the terms, not the menus
    assert not joins and not target.exists()

    w.confirm = lambda question, details="": True
    page.models.setCurrentIndex(page.models.findData(str(target)))
    button(page, "Use this model").click()
    assert w.project.state.source_model == str(target) and not joins  # accepted, but not used yet
    monkeypatch.setattr(models, "_converted", lambda gguf: gguf)  # a conversion takes minutes; the join is tested
    assert models.resolve(str(target)) == target and joins == [target] and target.stat().st_size > 250e6


def test_trap3_a_long_text_to_accept_is_shown_scrollable(qtbot, window):
    """The question with details (a licence's terms) is a dialog with the text in a scroll area, Yes and No."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QTextBrowser

    from app.window import MainWindow

    w = window
    terms = "<h1>Terms</h1>" + "".join(f"<p>Clause {i}: you agree.</p>" for i in range(200))
    seen = []

    def read_and_decline() -> None:
        dialog = QApplication.activeModalWidget()
        text = dialog.findChild(QTextBrowser)
        seen.append((text.toPlainText(), text.verticalScrollBar().maximum()))
        button(dialog, "No").click()

    QTimer.singleShot(0, read_and_decline)
    assert MainWindow.confirm(w, "Do you accept them?", details=terms) is False
    text, scroll = seen[0]
    assert "Clause 199: you agree." in text and scroll > 0


def test_trap4_hydra_tuning_before_the_data_and_a_new_projects_chat_page(qtbot, window, tmp_path):
    """Tuning the Hydra before the language was set said “type the code (e.g. es) in To” (there is no To), the status
    stayed at “Tuning…”, and the error followed into the next project — whose Chat page offered the previous
    project's model file."""
    from core.layout import StageRecord

    w = window
    w.new_project(tmp_path / "first")
    w.go("chat")
    chat = w.pages["chat"]
    box = chat.hydra_box
    button(box, "Tune").click()
    wait_job(qtbot, w)
    assert box.isVisibleTo(chat) and not box.error.isHidden()
    assert "Language & data" in box.error.text() and " in To" not in box.error.text(), box.error.text()
    assert "Tuning" not in box.status.text() and box.tune_button.isEnabled()

    gguf = tmp_path / "first" / "export" / "first-q8_0.gguf"
    w.project.state.stages["export"] = StageRecord(1.0, "export", {"file": str(gguf)})
    w.project.save()
    w.open_project(tmp_path / "first")
    assert chat.file.path == str(gguf)
    w.new_project(tmp_path / "second")
    assert chat.file.path == "" and box.error.isHidden() and "Not tuned yet" in box.status.text()


def test_trap8_the_window_keeps_its_width_from_page_to_page(qtbot, window, tmp_path):
    """The window widened by itself between pages: a long one-line message (a job's error in the status line under the
    pages) pushed it out, and it stayed that wide."""
    from core.errors import TweetyError

    w = window
    w.new_project(tmp_path / "proj")
    width = w.width()

    def fail(progress, cancel):
        raise TweetyError("this folder has no config.json, so it is not an adapted model " * 3,
                          path=tmp_path / "proj" / "model", fix="choose the folder written by the Align & map step")

    w.run_job(fail, lambda _result: None, name="Tuning the Hydra", on_error=lambda message: None)
    qtbot.waitUntil(lambda: not w.busy)
    QApplication.processEvents()
    assert w.width() == width and "no config.json" in w.eta_label.text()
    assert "no config.json" in w.eta_label.toolTip()  # the whole message, where the line is too short for it
    widths = {}
    for key in w.pages:
        w.go(key)
        QApplication.processEvents()
        widths[key] = w.width()
    assert set(widths.values()) == {width}, widths


def test_trap5_the_overview_and_the_model_details_in_plain_words(qtbot, window, tmp_path):
    """“initial_bpb: 2.3673003645728294” on the Project page and “Tied embeddings: True” on the Source page: numbers
    rounded, names in words, the jargon in tooltips."""
    from core.layout import StageRecord

    w = window
    w.new_project(tmp_path / "proj")
    w.project.state.stages["finetune"] = StageRecord(361.2, "finetuned", {
        "stage": "embeddings", "steps": 300, "initial_bpb": 2.3673003645728294, "final_bpb": 1.8431234567,
        "tokens_per_s": 1234.5})
    w.stage_done()
    overview = w.pages["project"].stages
    summary = overview.item(0, 2).text()
    assert "initial_bpb" not in summary and "2.3673003645728294" not in summary, summary
    assert "bits per byte before: 2.367" in summary and "after: 1.843" in summary, summary
    assert "lower is better" in overview.item(0, 2).toolTip().lower()

    page = w.pages["source"]
    button(page, "Inspect").click()
    wait_job(qtbot, w)
    assert "Tied embeddings" not in page.info.text() and "True" not in page.info.text(), page.info.text()
    assert "one table for reading and writing" in page.info.text().lower() and "tied" in page.info.toolTip().lower()
