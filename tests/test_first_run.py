"""A new user's first hour in the wizard (issue 32): each trap one met, driven as they drove it (offscreen Qt).

The window fixture and `wait_job` are test_app's: a warning dialog is recorded in `w.warnings` instead of blocking."""

from __future__ import annotations

import os

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


def test_trap3_gemma_declined_shows_the_model_in_use_and_nothing_was_unpacked(
    qtbot, unjoined_gemma, window, tmp_path, monkeypatch
):
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
        raise TweetyError(
            "this folder has no config.json, so it is not an adapted model " * 3,
            path=tmp_path / "proj" / "model",
            fix="choose the folder written by the Align & map step",
        )

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


def test_trap8_every_page_fits_a_1280_pixel_screen_at_an_11_point_font(qtbot, tmp_path):
    """At an 11-point font (a common desktop default) the Chat & Translate page asked for 1,436 pixels: the Hydra
    tuning row put seven settings and a long list entry side by side; and the window was 839 pixels tall on every
    page, for the tallest page's sake. Every page fits a 1280-pixel-wide screen without scrolling sideways, and the
    window fits 1280×800 with a task bar (a page taller than that scrolls)."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QScrollArea

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    app = QApplication.instance()
    font = app.font()
    bigger = app.font()
    bigger.setPointSize(11)
    app.setFont(bigger)
    try:
        from app.window import MainWindow

        w = MainWindow()
        qtbot.addWidget(w)
        w.resize(1280, 740)
        w.show()
        pane = w.findChild(QScrollArea)
        widths = {}
        for key, page in w.pages.items():
            w.go(key)
            QApplication.processEvents()
            widths[key] = (page.minimumSizeHint().width(), pane.viewport().width())
            assert w.minimumSizeHint().height() <= 740 and w.height() == 740
        assert all(need <= have for need, have in widths.values()), widths
        w.go("chat")
        QApplication.processEvents()
        assert pane.verticalScrollBar().maximum() == 0  # the page the 135M model is used on: all of it in view
    finally:
        app.setFont(font)


def test_trap5_the_overview_and_the_model_details_in_plain_words(qtbot, window, tmp_path):
    """“initial_bpb: 2.3673003645728294” on the Project page and “Tied embeddings: True” on the Source page: numbers
    rounded, names in words, the jargon in tooltips."""
    from core.layout import StageRecord

    w = window
    w.new_project(tmp_path / "proj")
    w.project.state.stages["finetune"] = StageRecord(
        361.2,
        "finetuned",
        {
            "stage": "embeddings",
            "steps": 300,
            "initial_bpb": 2.3673003645728294,
            "final_bpb": 1.8431234567,
            "tokens_per_s": 1234.5,
        },
    )
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


@pytest.fixture
def locked_folder(tmp_path):
    """A folder nobody may write in, as a user meets one: read-only for a user; for root, whom permissions do not stop,
    immutable (`chattr +i`: “Operation not permitted”, as a locked folder on a Mac says)."""
    import subprocess
    import sys

    if sys.platform == "win32":
        pytest.skip("a read-only folder is a different thing on Windows")
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root on a file system without the immutable flag")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_trap6_a_new_project_in_a_locked_folder_is_refused_in_a_plain_sentence(qtbot, window, locked_folder):
    """“[Errno 1] Operation not permitted: '…/spanish-locked'”: the operating system's words. Now a sentence naming the
    folder that may not be written and what to do."""
    w = window
    page = w.pages["project"]
    page.parent_folder.set_path(locked_folder)
    page.name.setText("spanish-locked")
    button(page, "Create project").click()
    assert w.project is None
    message = w.warnings[0]
    assert "Errno" not in message and "Operation not permitted" not in message, message
    assert f"the folder {locked_folder} " in message and "choose" in message.lower(), message


def test_trap6_a_file_written_into_a_locked_folder_is_named_as_chosen_not_as_its_temporary(
    qtbot, window, locked_folder
):
    """An export into a read-only folder named the hidden temporary file it writes first (`.spanish.gguf.j3t24s17.tmp`).
    Every output goes through core.jobs' atomic writers: their failures name the destination the user chose."""
    from core.jobs import atomic_dir, atomic_file

    w = window
    w.new_project(locked_folder.parent / "proj")
    errors = []

    def write_file(progress, cancel):
        with atomic_file(locked_folder / "spanish.gguf") as tmp:
            tmp.write_bytes(b"GGUF")

    def write_folder(progress, cancel):
        with atomic_dir(locked_folder / "model") as tmp:
            (tmp / "config.json").write_text("{}")

    for fn in (write_file, write_folder):
        w.run_job(fn, lambda _result: None, name="Exporting", on_error=errors.append)
        wait_job(qtbot, w)
    for message, name in zip(errors, ("spanish.gguf", "model"), strict=True):
        assert ".tmp" not in message and "Errno" not in message, message
        assert str(locked_folder / name) in message and f"the folder {locked_folder} " in message, message


def test_trap6_an_output_under_a_file_is_explained_not_a_crash(qtbot, window, tmp_path):
    """A destination whose “folder” is a file (a typo, a file named like the folder): the job said “stopped because of
    an unexpected error … Please report it”, with a traceback in the log. It is the user's to fix, in plain words."""
    from core.jobs import atomic_file

    w = window
    w.new_project(tmp_path / "proj")
    (tmp_path / "exports").write_text("not a folder")
    errors = []
    for out in (tmp_path / "exports" / "spanish.gguf", tmp_path / "exports" / "es" / "spanish.gguf"):

        def write(progress, cancel, out=out):
            with atomic_file(out) as tmp:
                tmp.write_bytes(b"GGUF")

        w.run_job(write, lambda _result: None, name="Exporting", on_error=errors.append)
        wait_job(qtbot, w)
    assert len(errors) == 2, w.log_view.toPlainText()
    for message in errors:
        assert f"{tmp_path / 'exports'} is a file, not a folder" in message and "choose" in message.lower(), message


@pytest.fixture
def spanish(tmp_path):
    """300 demo verses and a two-word dictionary: enough for a small vocabulary, quickly."""
    text = write_lines(tmp_path / "es.txt", demo_lines("bible.train.es.gz", 300))
    words = write_lines(tmp_path / "dict.tsv", ["God\tDios", "earth\ttierra"])
    return text, words


def test_trap7_a_vocabulary_the_text_cannot_fill_is_said_not_silently_smaller(tmp_path, spanish, capsys):
    """`tweety adapt --vocab-size 1000000000` on 3,000 lines exited 0 with a 21,085-token vocabulary and no word that
    it was smaller than asked. A size beyond any model's is refused as the typo it is; a size the text cannot fill
    gets a warning line, and the tokenizer's stage record keeps it."""
    import json

    from core.cli import main

    text, words = spanish
    out = tmp_path / "out"
    assert main(["tokenizer", "--target-text", str(text), "--vocab-size", "1000000000", "--out", str(out)]) == 2
    assert "a vocabulary of 1,000,000,000 is bigger than any model's" in capsys.readouterr().err
    assert (
        main(
            [
                "adapt",
                "--target-text",
                str(text),
                "--dictionary",
                str(words),
                "--language",
                "es",
                "--vocab-size",
                "100000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    warning = json.loads((out / "project.json").read_text())["stages"]["tokenizer"]["summary"]["warning"]
    size = json.loads((out / "work" / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert f"{len(size):,} tokens, not the 100,000 asked" in warning, warning
    assert f"warning: {warning}" in err.splitlines(), err


def test_trap7_a_one_line_text_is_refused_naming_its_file(tmp_path, capsys):
    """A one-line target text: “only 1 non-empty lines of target text”, no file named. Now the file, and in English."""
    from core.cli import main

    one = write_lines(tmp_path / "one-line.es", ["En el principio creó Dios los cielos y la tierra."])
    assert main(["tokenizer", "--target-text", str(one), "--vocab-size", "1000", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert f"{one}: only 1 non-empty line of target text" in err, err


def test_trap7_the_wizard_shows_the_smaller_vocabulary_and_its_box_stops_at_a_real_size(
    qtbot, window, tmp_path, spanish
):
    """The wizard's Vocabulary size took any number up to 256,000 and said “Trained: 5,319 tokens” as if that were
    what was asked. It stops at the largest vocabulary real models have, and says when the text gave fewer."""
    from core.resources import DICTIONARY
    from core.tokenizer import MAX_VOCAB_SIZE

    text, words = spanish
    w = window
    w.new_project(tmp_path / "proj")
    w.go("data")
    data = w.pages["data"]
    data.code.setText("es")
    data.rows["target"].set_path(text)
    data.add_resource(DICTIONARY, (words,))
    w.next_button.click()
    wait_job(qtbot, w)
    page = w.pages["tokenizer"]
    assert w.stack.currentWidget() is page
    page.vocab.setValue(10**9)
    assert page.vocab.value() == page.vocab.maximum() == MAX_VOCAB_SIZE <= 262_144
    page.vocab.setValue(100_000)
    button(page, "Train tokenizer").click()
    wait_job(qtbot, w)
    assert "not the 100,000 asked" in page.result.text() and "more target text" in page.result.text(), (
        page.result.text()
    )


def test_trap5_the_align_table_says_where_a_token_came_from_in_words(qtbot, window, tmp_path):
    """“fallback 100%” in the From column of the Align & map table: core's name for “made without translations”,
    and a percentage for the one and only source. Names in words, shares rounded sensibly, the jargon in a tooltip."""
    from PySide6.QtCore import Qt

    from app.pages.align import MappingRows

    w = window
    w.new_project(tmp_path / "proj")
    w.go("align")
    page = w.pages["align"]
    rows = [
        {
            "id": 5,
            "token": "▁Dios",
            "origin": "alignment+dictionary",
            "sources": [["ĠGod", 1, 0.9]],
            "from": [{"bible": 0.6666, "words": 0.3334}],
        },
        {"id": 6, "token": "▁Jehová", "origin": "fvt", "sources": [["ĠJ", 2, 1.0]], "from": [{"fallback": 1.0}]},
        {
            "id": 7,
            "token": "▁la",
            "origin": "alignment",
            "sources": [["Ġthe", 3, 1.0]],
            "from": [{"bible": 0.996, "words": 0.004}],
        },
        {
            "id": 8,
            "token": "▁tierra",
            "origin": "override",
            "sources": [["Ġearth", 4, 1.0]],
            "from": [{"override": 1.0}],
        },
    ]
    page.show_mapping({"alignment": 1, "fvt": 1}, MappingRows(rows))
    table = page.view.model()
    shown_from = [table.index(r, 3).data() for r in range(4)]
    assert shown_from == [
        "bible 67%, words 33%",
        "no translation resource",
        "bible >99%, words <1%",
        "your correction",
    ], shown_from
    assert "fallback" in table.index(1, 3).data(Qt.ItemDataRole.ToolTipRole).lower()


def test_trap5_the_finetune_page_keeps_the_cluster_and_the_numbers_under_advanced(qtbot, window, tmp_path):
    """The Fine-tune page always showed a torchrun “Rendezvous HOST:PORT” panel, the learning rate and batch and
    sequence sizes. The main path is the preset, what trains, the steps and the estimate; the rest is folded under
    Advanced."""
    w = window
    w.new_project(tmp_path / "proj")
    w.go("finetune")
    page = w.pages["finetune"]
    QApplication.processEvents()
    advanced_fields = (page.rdzv, page.nproc, page.nnodes, page.lr, page.batch, page.block, page.threads)
    assert not any(f.isVisibleTo(page) for f in advanced_fields)
    assert all(f.isVisibleTo(page) for f in (page.preset, page.stage, page.steps, page.estimate))
    size = w.size()
    button(page, "Advanced").click()
    QApplication.processEvents()
    assert all(f.isVisibleTo(page) for f in advanced_fields)
    assert w.size() == size  # opened, it fits: the window does not grow off the screen
    button(page, "Advanced").click()
    assert not page.rdzv.isVisibleTo(page)


def test_trap9_the_time_left_comes_from_this_runs_own_rate_after_a_warm_up():
    """“About 21:04 left” at 2% of an alignment that took 2:17: the rate was taken from the stage's first report, in
    another phase's units (tokenizing, 20 s), over the EM steps. Each phase is timed on its own, after a short
    warm-up (a first slow step is not the pace to come). The window's `Eta`, fed the alignment's reports."""
    from core.jobs import Eta

    eta = Eta()
    texts = {step: eta.update(p, t) for step, p, t in alignment_reports()}
    assert "0:" in texts[2] or "left" not in texts[2], texts[2]  # nothing, or under a minute: never 21 minutes
    for step in (10, 50, 90):
        assert_left(texts[step], 1.1 * (100 - step))


def test_trap5_the_command_line_bars_take_the_same_estimate(capsys):
    """The command line's bars timed a phase that restarts the count (EM after tokenizing) with the whole stage's
    time, as tqdm does; they now show the window's estimate."""
    from core.cli.options import ProgressBars

    clock = [0.0]
    bars = ProgressBars(clock=lambda: clock[0])
    for step, p, t in alignment_reports():
        clock[0] = t
        bars(p)
        if step == 50:
            bars.close()
            shown = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
            assert "50/100" in shown and "EM iteration" in shown, shown
            assert_left(shown, 1.1 * 50)
            return


def alignment_reports():
    """(EM step or -1, report, time) as an alignment of 1,000 pairs sends them: tokenizing the two sides (20 s), a
    step without a fraction, then 100 EM steps — a slow first one (5 s), then 1.1 s a step."""
    from core.jobs import Progress

    now = 100.0
    for i in range(0, 1001, 50):
        yield -1, Progress("Aligning", i, 1000, "tokenizing"), now + i / 50
    now += 20
    yield -1, Progress("Aligning", 0, None, "preparing batches"), now
    for step in range(101):
        yield (
            step,
            Progress("Aligning", step, 100, "EM iteration 1 of 5"),
            now + (0 if step == 0 else 5 + 1.1 * (step - 1)),
        )


def assert_left(text: str, truth: float) -> None:
    """`text` says about `truth` seconds are left (within 15%)."""
    left = text.rsplit("about ", 1)[1].split(" left")[0]
    minutes, seconds = map(int, left.split(":"))
    assert abs(60 * minutes + seconds - truth) <= 0.15 * truth + 1, (truth, text)


def test_trap9_a_step_without_a_fraction_shows_that_it_is_alive(qtbot, window):
    """“Inspect” on the Source page: a bar that never moved and a line that never changed for 38 s. A job that
    reports nothing (or no fraction) shows the busy bar and the time it has been running, counting."""
    import threading

    w = window
    release = threading.Event()
    w.run_job(lambda progress, cancel: release.wait(30), lambda _result: None, name="Inspecting model")
    assert w.progress_bar.maximum() == 0  # the busy indicator
    qtbot.waitUntil(lambda: "0:01 elapsed" in w.eta_label.text(), timeout=5000)
    assert w.eta_label.text().startswith("Inspecting model")
    release.set()
    wait_job(qtbot, w)


def test_trap9_the_preset_and_the_estimate_beside_it_say_the_same_time(qtbot, window, tmp_path):
    """The Fine-tune page's preset said “about 5 min” while the estimate beside it said “about 6 min”: the preset's
    time was written in its label. Both come from the one estimate, with this project's measured speed."""
    from core.layout import StageRecord

    w = window
    w.new_project(tmp_path / "proj")
    w.project.state.stages["finetune"] = StageRecord(361.2, "finetuned", {"tokens_per_s": 170.0})
    w.go("finetune")
    page = w.pages["finetune"]
    page.preset.setCurrentIndex(page.preset.findData("quick"))
    estimate = page.estimate.text().split(" on this computer")[0]
    assert estimate.startswith("about ") and estimate in page.preset.currentText(), (
        estimate,
        page.preset.currentText(),
    )


def parallel_project(qtbot, w, tmp_path) -> None:
    """A new project with 300 demo verse pairs as its parallel corpus (Spanish), recorded as Next records them."""
    from core.resources import PARALLEL

    w.new_project(tmp_path / "proj")
    w.go("data")
    page = w.pages["data"]
    page.code.setText("es")
    page.rows["target"].set_path(write_lines(tmp_path / "es.txt", demo_lines("bible.train.es.gz", 300)))
    page.add_resource(
        PARALLEL, (write_lines(tmp_path / "en.txt", demo_lines("bible.train.en.gz", 300)), tmp_path / "es.txt")
    )
    w.next_button.click()
    wait_job(qtbot, w)
    assert w.project.inputs().parallel


def load_model(qtbot, w, monkeypatch, tmp_path):
    """“Load model” on the Chat page, llama.cpp stood in for (core.runtime's load, card and translation): these traps
    are the page's, not the model's. Returns the page."""
    from core import runtime
    from core.models import DEFAULT_MODEL

    monkeypatch.setattr(runtime, "load", lambda path, settings: object())
    monkeypatch.setattr(
        runtime,
        "model_card",
        lambda llm: runtime.ModelCard(
            name="spanish-q8_0.gguf",
            languages=("es",),
            prompt="base",
            vocab_size=1000,
            context=2048,
            source_model=DEFAULT_MODEL,
        ),
    )
    monkeypatch.setattr(
        runtime, "translate", lambda llm, text, source, target, on_text, **kw: on_text(f"({source}→{target}) {text}")
    )
    w.go("chat")
    chat = w.pages["chat"]
    chat.file.set_path(tmp_path / "spanish-q8_0.gguf")
    button(chat, "Load model").click()
    wait_job(qtbot, w)
    return chat


def translate(qtbot, w, chat, text: str) -> None:
    """Type `text` and press Translate; wait for the translation and for the memory's answer beside it."""
    chat.text_in.setPlainText(text)
    with qtbot.waitSignal(chat.memory_match.looked_up, timeout=TIMEOUT):
        button(chat, "Translate").click()
    wait_job(qtbot, w)


def test_trap8_the_translate_hints_show_their_whole_text_at_the_default_size(qtbot, window, tmp_path, monkeypatch):
    """The hint under Translate was cut off: the Translate column stacked its sentences (the hint, the memory's match,
    a file's result) in two fifths of the page, and at 1280×800 they ran out of height and were clipped. Every
    sentence of the column shows its whole text, and the window keeps its size."""
    from PySide6.QtWidgets import QLabel

    w = window
    parallel_project(qtbot, w, tmp_path)
    w.go("chat")
    button(w.pages["chat"].hydra_box, "Tune").click()  # too early: its error says why, under the page
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT)
    chat = load_model(qtbot, w, monkeypatch, tmp_path)
    translate(qtbot, w, chat, demo_lines("bible.train.en.gz", 300)[204])  # a long verse: its own pair
    chat.file_translation.say(
        "Cancelled: the translation so far is kept aside; translating the same file into the "
        "same place again resumes where it stopped."
    )
    QApplication.processEvents()
    assert w.size().width() == 1280 and w.size().height() == 800
    box = chat.direction.parentWidget()
    labels = [label for label in box.findChildren(QLabel) if label.isVisible() and label.wordWrap()]
    assert chat.direction_note in labels and chat.memory_match in labels and chat.file_translation in labels
    for label in labels:
        assert label.height() >= label.heightForWidth(label.width()), (label.text(), label.size())
        assert box.rect().contains(label.geometry()), (label.text(), label.geometry(), box.rect())


def test_trap8_the_direction_stays_as_picked_through_clicks_and_refreshes(qtbot, window, tmp_path, monkeypatch):
    """The Direction box changed its choice by itself: every refresh rebuilt it and kept the direction shown only if
    the new list had it — so one click on Hydra (whose list is empty until the project has a language code) and back
    showed English → Spanish again. It changes when the user picks an entry, and nothing else."""
    from PySide6.QtCore import Qt

    w = window
    w.new_project(tmp_path / "proj")  # a model trained elsewhere: no language code recorded
    chat = load_model(qtbot, w, monkeypatch, tmp_path)
    assert chat.offered() == [("en", "es"), ("es", "en")] and chat.chosen_direction() == ("en", "es")
    chat.direction.setFocus()
    qtbot.keyClick(chat.direction, Qt.Key.Key_Down)  # the user picks Spanish → English
    assert chat.chosen_direction() == ("es", "en")
    qtbot.mouseClick(chat.direction, Qt.MouseButton.LeftButton)  # a click opens the list: it picks nothing
    chat.direction.hidePopup()
    assert chat.chosen_direction() == ("es", "en")
    chat.use("hydra")
    assert chat.offered() == [] and "language code" in chat.direction_note.text()
    chat.use("model")
    assert chat.chosen_direction() == ("es", "en")
    chat.text_in.setPlainText("Y dijo Dios: Sea la luz.")
    button(chat, "Translate").click()
    wait_job(qtbot, w)
    assert chat.text_out.toPlainText() == "(es→en) Y dijo Dios: Sea la luz." and chat.chosen_direction() == ("es", "en")
    button(chat, "Load model").click()  # the model again
    wait_job(qtbot, w)
    w.go("project")
    w.go("chat")
    assert chat.chosen_direction() == ("es", "en")


def test_trap8_english_to_translate_from_spanish_is_said_on_the_page(qtbot, window, tmp_path, monkeypatch):
    """English text sent with Spanish → English was “translated” without a word. A sentence beside the Translate
    button says the text looks like it is in English already (each side's commonest words in the translation
    memory, core.translation.written_in); a Spanish text says nothing."""
    w = window
    parallel_project(qtbot, w, tmp_path)
    chat = load_model(qtbot, w, monkeypatch, tmp_path)
    chat.set_direction("es", "en")
    translate(qtbot, w, chat, "And God said, Let there be light: and there was light.")
    assert chat.language_warning.isVisible(), chat.language_warning.text()
    assert "looks like English already" in chat.language_warning.text() and not w.warnings  # no dialog
    translate(qtbot, w, chat, "Y dijo Dios: Sea la luz, y fue la luz.")
    assert chat.language_warning.isHidden()
    chat.set_direction("en", "es")
    translate(qtbot, w, chat, "And God said, Let there be light: and there was light.")
    assert chat.language_warning.isHidden()


def test_trap8_every_overview_cell_has_its_whole_text_as_tooltip(qtbot, window, tmp_path):
    """“The new vocabulary has 5,319 tokens, not the 100,000 asked …” on the Project page: cut with “…” at the
    column's edge, with no tooltip to read the rest. Every cell of the overview carries its whole text as tooltip."""
    from core.layout import StageRecord

    w = window
    w.new_project(tmp_path / "proj")
    warning = (
        "The new vocabulary has 5,319 tokens, not the 100,000 asked: the target text has too few distinct "
        "words and word parts for more. Add more target text for a bigger vocabulary."
    )
    w.project.state.stages["tokenizer"] = StageRecord(3.2, "tokenizer", {"vocab_size": 5319, "warning": warning})
    w.stage_done()
    w.go("project")
    overview = w.pages["project"].stages
    cells = [overview.item(r, c) for r in range(overview.rowCount()) for c in range(overview.columnCount())]
    assert cells and all(cell.toolTip() == cell.text() for cell in cells), [(c.text(), c.toolTip()) for c in cells]
    assert warning in overview.item(0, 2).toolTip()
