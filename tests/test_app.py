"""The desktop wizard, driven like a user would, on tiny real data (offscreen Qt)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, demo_lines, write_lines
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

from core import hydra as H
from core import runtime

# Screenshots go to a temporary folder (a test never writes into the repository); `make screenshots` sets
# TWEETY_SCREENSHOTS=docs/screenshots to refresh the guide's.
SHOTS = Path(os.environ.get("TWEETY_SCREENSHOTS") or Path(tempfile.gettempdir()) / "tweety-screenshots")
TIMEOUT = 300_000  # a guard against hangs, not a speed target (the machine may be shared with other jobs)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    # Keep the test's "last project" out of the user's real settings.
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    from app.window import MainWindow

    w = MainWindow()
    w.resize(1280, 800)
    w.warnings = []
    monkeypatch.setattr(w, "show_warning", w.warnings.append)  # a dialog would block the test
    monkeypatch.setattr(w, "confirm", lambda question: True)
    qtbot.addWidget(w)
    w.show()
    return w


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    return {
        "en": write_lines(tmp_path / "en.txt", demo_lines("bible.train.en.gz", 300)),
        "es": write_lines(tmp_path / "es.txt", demo_lines("bible.train.es.gz", 300)),
        "held": write_lines(tmp_path / "held.txt", demo_lines("bible.heldout.es.gz", 30)),
    }


def wait_job(qtbot, w, timeout: int = TIMEOUT) -> None:
    qtbot.waitUntil(lambda: not w.busy, timeout=timeout)
    # The job's end reaches each connected slot as its own queued event (the window's, then the page's on_end):
    # deliver the rest before looking at the page.
    QApplication.processEvents()
    assert not w.warnings, w.warnings


def shot(w, n: int, key: str) -> None:
    w.go(key)
    QApplication.processEvents()  # the page's deferred layout (a label's new text) before the grab
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert w.grab().save(str(SHOTS / f"{n:02d}-{key}.png"))


def fill_data_page(w, files, target="es") -> None:
    from core.resources import PARALLEL

    page = w.pages["data"]
    page.name.setText("Spanish")
    page.code.setText("es")
    page.rows["target"].set_path(files[target])
    page.rows["heldout"].set_path(files["held"])
    page.clear_resources()
    page.add_resource(PARALLEL, (files["en"], files["es"]))


def reply_of(transcript: str) -> str:
    """The model's last reply in the chat transcript (after the last "Model: ")."""
    return transcript.rsplit("Model: ", 1)[1].strip()


def next_step(w, key: str) -> None:
    """Press Next: the wizard moves to the page `key`."""
    w.next_button.click()
    assert w.stack.currentWidget() is w.pages[key], w.stack.currentWidget().key


def step_mark(w, key: str) -> str:
    return w.steps.item(list(w.pages).index(key)).text().split()[0]


def test_end_to_end(qtbot, window, files, tmp_path):
    """Next walks a new project from its folder to a chat reply (on 300 demo verse pairs, to keep it quick)."""
    w = window
    page = w.pages["project"]
    page.parent_folder.set_path(tmp_path)
    page.name.setText("proj")
    assert not w.next_button.isEnabled() and step_mark(w, "data") == "○"
    shot(w, 1, "project")
    page.create()  # a name, not a folder to pick: the folder is created
    assert (tmp_path / "proj" / "project.json").is_file() and w.project.folder == tmp_path / "proj"
    assert w.steps.currentRow() == list(w.pages).index("source")
    assert step_mark(w, "project") == "✓" and step_mark(w, "source") == "▶" and step_mark(w, "tokenizer") == "○"
    w.pages["source"].inspect()
    wait_job(qtbot, w)
    assert "llama" in w.pages["source"].info.text()
    shot(w, 2, "source")

    next_step(w, "data")
    data = w.pages["data"]
    data.use_demo()  # "Try with the demo data" fills the page and records it; the test then swaps in 300 of its verses
    wait_job(qtbot, w)
    assert data.code.text() == "es" and "bible.train.es" in data.rows["target"].path
    qtbot.waitUntil(lambda: "rows" in data.preview_text["target"].toPlainText(), timeout=TIMEOUT)
    shot(w, 3, "data")
    fill_data_page(w, files)
    qtbot.waitUntil(lambda: "300 rows" in data.preview_text["target"].toPlainText())  # read in the pool
    data.use()
    wait_job(qtbot, w)
    assert "300 parallel pairs" in data.counts.text() and step_mark(w, "tokenizer") == "•"

    next_step(w, "tokenizer")
    assert step_mark(w, "data") == "✓"
    tok = w.pages["tokenizer"]
    tok.vocab.setValue(800)
    tok.train()
    wait_job(qtbot, w)
    assert tok.samples.toPlainText().count(" | ") > 3
    shot(w, 4, "tokenizer")

    next_step(w, "align")
    align = w.pages["align"]
    align.go()
    wait_job(qtbot, w)
    assert align.proxy.rowCount() > 500
    align.filter.setText("▁Dios")
    assert align.proxy.rowCount() >= 1
    assert "Dios" in align.proxy.index(0, 1).data()
    # The linguist's correction: ▁Dios from "God" only; written to overrides.tsv, mapping and model rebuilt.
    from core.resources import OverrideLine

    align.apply_overrides([OverrideLine("[▁Dios]", "God")])
    wait_job(qtbot, w)
    assert "[▁Dios]\tGod" in (w.project.folder / "overrides.tsv").read_text(encoding="utf-8")
    row = next(r for r in align.model.rows if r[1] == "▁Dios")
    assert row[2:] == ("your correction", "your correction", "▁God (1.00)")  # spaces as ▁ on both sides
    headers = [align.coverage.horizontalHeaderItem(c).text() for c in range(align.coverage.columnCount())]
    assert "from the parallel corpus" in headers and "guessed from spelling" in headers, headers
    import re

    weights = [float(x) for r in align.model.rows for x in re.findall(r"\((\d+\.\d+)\)", r[4])]
    assert weights and min(weights) >= 0.01  # links under 0.01 are not listed
    assert w.project.state.stages["map"].summary["override"] == 1 and "init" in w.project.state.stages
    written = (w.project.folder / "overrides.tsv").read_text(encoding="utf-8")
    align.apply_overrides([OverrideLine("[▁Dios]", "[ĠNoSuchPiece]")])  # refused before anything is written
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT)
    assert len(w.warnings) == 1 and "not a token of the source vocabulary" in w.warnings.pop()
    assert (w.project.folder / "overrides.tsv").read_text(encoding="utf-8") == written
    align.view.selectRow(next(i for i in range(align.proxy.rowCount()) if align.proxy.index(i, 1).data() == "▁Dios"))
    shot(w, 5, "align")
    align.filter.setText("")

    # Fine-tune: start, pause (no step while paused, GUI alive), stop, resume to the end; the curve is drawn live.
    next_step(w, "finetune")
    ft = w.pages["finetune"]
    assert ft.preset.currentData() == "quick" and ft.estimate.text().startswith("about ")
    ft.steps.setValue(30)
    assert ft.preset.currentData() == "custom"
    ft.batch.setValue(2)
    ft.block.setValue(32)
    ft.start()
    started = time.monotonic()
    qtbot.waitUntil(lambda: len(ft.points["loss"]) >= 1, timeout=TIMEOUT)
    first_step = time.monotonic() - started
    print(f"fine-tuning: first step {first_step:.1f} s after Start")
    qtbot.waitUntil(lambda: bool(ft.points["bpb"]), timeout=TIMEOUT)  # measured after the first step
    assert ft.points["bpb"][0][0] == 0  # held-out before training: the curve's first point
    x_range = ft.bpb_plot.viewRange()[0]
    assert x_range[0] <= 0 and 30 <= x_range[1] < 40  # steps 0…30, not −400…400
    qtbot.waitUntil(lambda: len(ft.points["loss"]) >= 2, timeout=TIMEOUT)
    ft.toggle_pause()
    token = w.job.token
    qtbot.waitUntil(token.waiting.is_set, timeout=TIMEOUT)  # the step under way finished; the worker now waits
    QApplication.processEvents()  # that step's point, queued before the worker began to wait
    paused_at = len(ft.points["loss"])
    assert token.waiting.is_set() and w.busy and 2 <= paused_at < 30  # no step can start while it waits
    w.cancel_job()
    wait_job(qtbot, w)
    qtbot.waitUntil(lambda: "Stopped at" in ft.status.text())
    assert f"Stopped at step {paused_at} of 30" in ft.status.text() and ft.resume_button.isEnabled()
    assert "finetune" not in w.project.state.stages
    ft.resume()
    wait_job(qtbot, w)
    # The page writes "Done" from its own end-of-job slot, which a busy machine can deliver after the window's.
    qtbot.waitUntil(lambda: "Done: 30 steps" in ft.status.text(), timeout=TIMEOUT)
    assert [x for x, _ in ft.points["loss"]] == list(range(1, 31))
    (_, before), (_, after) = ft.points["bpb"][0], ft.points["bpb"][-1]
    assert after < before and "Done: 30 steps" in ft.status.text()
    final = w.project.state.stages["finetune"].summary["final_bpb"]  # the calibrated model's (written after the curve)
    assert final < before and f"→ {final:.3f} (the chart's last point {after:.3f}, then calibrated" in ft.status.text()
    assert ft.estimate.text().startswith("about ") and "measured in this project" in ft.estimate.text()
    shot(w, 6, "finetune")

    next_step(w, "evaluate")
    ev = w.pages["evaluate"]
    ev.max_bytes = 3000
    ev.samples = 2
    messages: list[str] = []
    ev.go()
    w.job.signals.progress.connect(lambda p: messages.append(w.eta_label.text()))
    wait_job(qtbot, w)
    bpb = [float(ev.results.item(0, c).text()) for c in (1, 2, 3)]
    assert ev.results.horizontalHeaderItem(3).text() == "fine-tuned model" and bpb[2] < bpb[1]
    assert "than the source model" in ev.verdict.text() and "first 3,000 bytes" in ev.sample.text()
    assert any("model 3 of 3: fine-tuned model" in m for m in messages), messages
    assert ev.continuations.rowCount() == 2 and ev.continuations.item(0, 2).text().startswith("…")
    shot(w, 7, "evaluate")

    next_step(w, "export")
    ex = w.pages["export"]
    assert ex.type.currentData() == "q8_0" and "recommended" in ex.type.currentText()
    ex.go()
    wait_job(qtbot, w)
    gguf = tmp_path / "proj" / "export" / "proj-q8_0.gguf"
    assert gguf.is_file() and "MB" in ex.result.text()
    shot(w, 8, "export")

    next_step(w, "chat")
    chat = w.pages["chat"]
    assert chat.file.path == str(gguf) and chat.expectations.isVisible()  # the built-in 135M model: say so
    assert chat.threads.value() == max(1, runtime.physical_cores() - 1)
    chat.reply_tokens.setValue(24)
    chat.load()
    wait_job(qtbot, w)
    assert chat.llm.n_threads == chat.threads.value()
    chat.input.setText("Hola")
    chat.send()
    wait_job(qtbot, w)
    assert "Chatting: done" in w.log_view.toPlainText()
    reply = reply_of(chat.transcript.toPlainText())  # the model's own words, not the prompt echoed
    assert reply and reply != "Hola" and len(chat.llm.tokenize(reply.encode(), add_bos=False)) >= 2, reply
    # The reply ended by itself, within its limit, and the page said how fast it came.
    assert "tokens/s · ended:" in chat.speed.text() and len(chat.llm.tokenize(reply.encode(), add_bos=False)) <= 30
    assert int(chat.speed.text().split()[0]) <= 24
    english = "In the beginning God created the heaven and the earth."
    chat.text_in.setPlainText(english)
    # A project with a corpus translates with its best translator first (no model needed), and says which it was.
    assert chat.using() == "project" and chat.offered() == [("en", "es"), ("es", "en")]
    chat.set_direction("en", "es")
    chat.translate()
    wait_job(qtbot, w)
    assert "Translated by: " in chat.direction_note.text(), chat.direction_note.text()
    assert "Dios" in chat.text_out.toPlainText(), chat.text_out.toPlainText()
    chat.use("model")  # the loaded file, asked to translate
    assert chat.offered() == [("en", "es"), ("es", "en")]
    chat.set_direction("en", "es")
    chat.translate()
    wait_job(qtbot, w)
    assert "Translating: done" in w.log_view.toPlainText()
    out = chat.text_out.toPlainText().strip()
    assert out and "\n" not in out and out != english, out  # one line of its own
    # The Hydra: the source body reads the English, the fine-tuned Spanish tables write (no GGUF involved).
    chat.use("hydra")
    assert chat.offered() == [("en", "es"), ("es", "en")]
    chat.set_direction("en", "es")
    chat.translate()
    wait_job(qtbot, w)
    assert "Translating with the Hydra: done" in w.log_view.toPlainText()
    hydra = chat._hydra[1]
    assert set(hydra.languages) == {"en", "es"} and len(hydra.examples("en", "es")) == 3
    limit = chat.reply_tokens.value()
    expected = H.translate(hydra, chat.text_in.toPlainText(), "en", "es", max_new_tokens=limit)
    assert chat.text_out.toPlainText().strip() == expected and expected
    # The other way round: Spanish read with the Spanish tables, English written with the source model's own.
    spanish = "Y dijo Dios: Sea la luz, y fue la luz."
    written_in = []
    generate = hydra.generate
    hydra.generate = lambda segments, language, *a, **kw: (
        written_in.append(language) or generate(segments, language, *a, **kw)
    )
    chat.text_in.setPlainText(spanish)
    chat.set_direction("es", "en")
    chat.translate()
    wait_job(qtbot, w)
    del hydra.generate
    assert chat._hydra[1] is hydra and written_in == ["en"]  # the same Hydra, writing English tokens only
    english_out = chat.text_out.toPlainText().strip()
    assert english_out == H.translate(hydra, spanish, "es", "en", max_new_tokens=limit) and english_out
    assert hydra.examples("es", "en") == [(t, s) for s, t in hydra.examples("en", "es")]  # examples reversed
    chat.set_direction("en", "es")
    chat.text_in.setPlainText(english)

    # Tuning the Hydra (2 steps on 8 of the parallel pairs) keeps it in the project; translations then use it.
    tuning = chat.hydra_box
    assert tuning.language.text() in ("", "es")  # empty: the project's language
    tuning.steps.setValue(2)
    tuning.batch.setValue(2)
    tuning.lines.setValue(8)
    with qtbot.waitSignal(tuning.tuned, timeout=TIMEOUT) as tuned:
        tuning.tune()
    wait_job(qtbot, w)
    losses = tuned.args[0]
    assert len(losses) == 2 and all(x > 0 for x in losses) and "Tuned: 2 steps" in tuning.status.text()
    assert w.project.state.stages["hydra"].summary["pairs"] == 8 and (w.project.hydra_dir / "hydra.json").is_file()
    chat.translate()
    wait_job(qtbot, w)
    assert chat._hydra[1] is not hydra and chat.text_out.toPlainText().strip()  # the tuned Hydra, not the cached one
    shot(w, 9, "chat")

    # Reopening resumes after the last finished stage (everything done: the Chat page), and the Fine-tune page shows
    # the saved run's settings, not its defaults.
    ft.steps.setValue(300)
    ft.batch.setValue(8)
    w.open_project(tmp_path / "proj")
    assert w.stack.currentWidget() is chat
    from core.finetune import FinetuneSettings

    assert ft.settings() == FinetuneSettings.from_dict(w.project.finetune_checkpoint().settings)
    assert (ft.steps.value(), ft.batch.value(), ft.block.value()) == (30, 2, 32)
    assert QSettings("Tweety Studio", "Tweety Studio").value("last_project") == str(tmp_path / "proj")


def test_cancel_keeps_gui_responsive(qtbot, window, tmp_path):
    w = window
    # Enough verse pairs that the IBM models train for a while (core tokenizes in batches of 256 lines, and the torch
    # aligner's tensor operations release the GIL, so larger corpora keep the GUI as responsive).
    n = 5000
    en = write_lines(tmp_path / "en.txt", demo_lines("bible.train.en.gz", n))
    es = write_lines(tmp_path / "es.txt", demo_lines("bible.train.es.gz", n))
    w.new_project(tmp_path / "proj")
    fill_data_page(w, {"en": en, "es": es, "held": es})
    w.pages["data"].use()
    wait_job(qtbot, w)
    w.pages["tokenizer"].vocab.setValue(2000)
    w.pages["tokenizer"].train()
    wait_job(qtbot, w)

    gaps, last = [], [time.monotonic()]

    def tick() -> None:
        now = time.monotonic()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(10)
    w.pages["align"].go()
    messages: list[str] = []
    w.job.signals.progress.connect(lambda p: messages.append(p.message))
    qtbot.waitUntil(lambda: any(m.startswith("EM iteration") for m in messages), timeout=TIMEOUT)
    assert w.busy, "alignment finished before it could be cancelled; give it more text"
    w.cancel_button.click()
    wait_job(qtbot, w, timeout=30_000)
    timer.stop()
    assert "Aligning, mapping and initialising: cancelled" in w.log_view.toPlainText()
    assert "align" not in w.project.state.stages and "tokenizer" in w.project.state.stages
    assert not w.project.alignment_dir.exists()
    # The GUI kept running its timer throughout. Not a speed target (a busy 2-core machine shows 0.3–0.4 s gaps now
    # and then, which a user does not notice): a freeze — work on the GUI thread — stalls it for the whole job.
    assert len(gaps) > 20 and max(gaps) < 2.0, max(gaps)


def test_bad_files_are_explained_inline(qtbot, window, tmp_path):
    from PySide6.QtCore import Qt

    w = window
    qtbot.keyClick(w, Qt.Key.Key_PageDown, Qt.KeyboardModifier.ControlModifier)
    assert w.steps.currentRow() == 0  # without a project every other step is disabled
    w.new_project(tmp_path / "proj")
    qtbot.keyClick(w, Qt.Key.Key_PageDown, Qt.KeyboardModifier.ControlModifier)
    assert w.stack.currentWidget() is w.pages["data"]  # from Source model, one step on, by keyboard
    qtbot.keyClick(w, Qt.Key.Key_PageUp, Qt.KeyboardModifier.ControlModifier)
    assert w.stack.currentWidget() is w.pages["source"]
    page = w.pages["data"]
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    page.rows["target"].set_path(binary)
    qtbot.waitUntil(lambda: not page.errors["target"].isHidden())  # files are read in the pool, not the GUI thread
    assert "weights.bin" in page.errors["target"].text()

    short = write_lines(tmp_path / "short.es.txt", demo_lines("bible.train.es.gz", 10))
    en = write_lines(tmp_path / "en.txt", demo_lines("bible.train.en.gz", 12))
    page.rows["first"].set_path(en)
    page.rows["second"].set_path(short)
    error = page.errors["resource"]
    qtbot.waitUntil(lambda: not error.isHidden())
    assert "short.es.txt" in error.text() and "lines" in error.text()
    page._add_chosen()
    assert [r.files for r in page.resources()] == [(str(en), str(short))]

    # Recording the inputs runs the same checks; the message shows on the page, not in a dialog.
    page.code.setText("es")
    page.use()
    wait_job(qtbot, w)
    assert "weights.bin" in page.error.text()
    assert "data" not in w.project.state.stages


def test_self_test_runs_the_whole_product_headless():
    """`tweety-studio --self-test` (what every installer bundle is checked with) passes from a source checkout."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "app.main", "--self-test"],
        capture_output=True,
        text=True,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("\nok    ") + r.stdout.startswith("ok    ") == 8 and "self-test passed" in r.stdout
    assert "ok    open the user's guide" in r.stdout  # Help works in the bundle: the guide is there and renders
    assert "ok    measure the translation memory" in r.stdout  # bm25s and sacrebleu are in the bundle


def test_finetune_page_prepares_a_cluster_job(qtbot, window, files, tmp_path):
    import json

    w = window
    w.new_project(tmp_path / "proj")
    fill_data_page(w, files)
    w.pages["data"].use()
    wait_job(qtbot, w)
    ft = w.pages["finetune"]
    ft.batch.setValue(8)
    ft.nproc.setValue(4)
    assert not ft.rdzv.isEnabled()
    ft.nnodes.setValue(2)
    ft.rdzv.setText("node1:29500")
    ft.prepare_cluster_job()
    assert not w.warnings, w.warnings
    job = tmp_path / "proj" / "cluster-job"
    config = json.loads((job / "job.json").read_text())
    assert config["out"] == str(tmp_path / "proj" / "finetuned") and config["model"] == str(tmp_path / "proj" / "model")
    assert config["settings"]["batch_size"] == 8
    assert config["launch"] == {"nproc": 4, "nnodes": 2, "rdzv": "node1:29500"}
    assert "--nnodes 2" in (job / "launch.sh").read_text() and "#SBATCH --nodes=2" in (job / "slurm.sbatch").read_text()
    assert f"Job written to {job}" in ft.job_info.text() and "-m torch.distributed.run" in w.log_view.toPlainText()
    assert not (tmp_path / "proj" / "finetuned").exists()  # nothing ran
    ft.nproc.setValue(3)  # 8 sequences cannot be split between 6 processes: refused with the reason
    ft.prepare_cluster_job()
    assert len(w.warnings) == 1 and "multiple of the number of training processes (6)" in w.warnings[0]


def start_blocking_job(w):
    """A job that runs until the returned event is set: to the window, a long stage under way."""
    import threading

    release = threading.Event()
    w.run_job(lambda progress, cancel: release.wait(60), lambda _result: None, name="A long stage")
    assert w.busy
    return release


def test_nothing_is_discarded_while_a_job_runs(qtbot, window, tmp_path, monkeypatch):
    """Starting a new fine-tuning run deletes the previous one, changing the source model clears every stage: both
    are refused while a job runs (it may be reading those files), before anything is deleted."""
    w = window
    w.new_project(tmp_path / "proj")
    discarded = []
    monkeypatch.setattr(w.project, "discard_finetune", lambda: discarded.append(True))
    release = start_blocking_job(w)
    w.pages["finetune"].start()
    assert not discarded and len(w.warnings) == 1 and "still running" in w.warnings.pop()

    source = w.pages["source"]
    source.group.button(2).setChecked(True)
    source.file.set_path(tmp_path / "other.gguf")
    source.use()
    assert w.project.state.source_model == "default" and len(w.warnings) == 1 and "still running" in w.warnings.pop()
    release.set()
    wait_job(qtbot, w)
    source.use()  # once the job has ended, the change goes through
    assert w.project.state.source_model == str(tmp_path / "other.gguf")


def test_corrections_are_checked_off_the_gui_thread(qtbot, window, tmp_path, monkeypatch):
    """Checking override lines needs the source tokenizer (a reopened project loads it first): never on the GUI
    thread, which would freeze the window."""
    import threading

    from core.errors import TweetyError
    from core.project import Project
    from core.resources import OverrideLine

    w = window
    w.new_project(tmp_path / "proj")
    threads = []

    def add_overrides(self, lines):
        threads.append(threading.current_thread())
        raise TweetyError("no such token (test)")

    monkeypatch.setattr(Project, "add_overrides", add_overrides)
    w.pages["align"].apply_overrides([OverrideLine("[▁Dios]", "God")])
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT)
    assert threads and threads[0] is not threading.main_thread()
    assert w.warnings == ["no such token (test)"]


def test_hydra_cache_follows_the_model(qtbot, window, tmp_path, monkeypatch):
    """The Chat page keeps the built Hydra between translations, but a re-initialised or re-tuned model (same folder,
    new weights) gets a new one."""
    import os

    from core import hydra

    w = window
    w.new_project(tmp_path / "proj")
    builds = []
    monkeypatch.setattr(w.project, "hydra", lambda src, tgt: builds.append((src, tgt)) or object())
    monkeypatch.setattr(hydra, "translate", lambda model, text, src, tgt, **kw: "traducción")
    weights = w.project.model_dir / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"first")
    chat = w.pages["chat"]
    set_language(w, "es")
    chat.use("hydra")
    chat.text_in.setPlainText("In the beginning")

    def translate() -> None:
        chat.translate()
        wait_job(qtbot, w)
        assert "Translating with the Hydra: done" in w.log_view.toPlainText()

    translate()
    translate()
    assert builds == [("en", "es")]  # built once, then reused
    weights.write_bytes(b"other")  # the model initialised again: same folder, same size, new weights
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    translate()
    assert len(builds) == 2
    set_language(w, "ca")  # another target language: another Hydra
    translate()
    assert builds[-1] == ("en", "ca") and len(builds) == 3
    chat.set_direction("ca", "en")  # the other way round: the same Hydra
    translate()
    assert len(builds) == 3


def set_language(w, code: str) -> None:
    """The project's language code, as the data page records it (without checking files)."""
    from core.layout import Inputs

    w.project.state.inputs = Inputs(target_text="t.txt", resources=(), language_code=code)
    chat = w.pages["chat"]
    chat.update_directions()


def test_a_cancelled_translation_says_cancelled(qtbot, window, tmp_path, monkeypatch):
    """Generation returns the text so far when cancelled; the status line must still say cancelled, not done."""
    import time as clock

    from core import runtime

    def translate(llm, text, src, tgt, *, on_text, cancel, **kw):
        on_text("En el")
        deadline = clock.monotonic() + 60
        while not cancel.cancelled and clock.monotonic() < deadline:
            clock.sleep(0.01)
        return "En el"

    monkeypatch.setattr(runtime, "translate", translate)
    w = window
    w.new_project(tmp_path / "proj")
    chat = w.pages["chat"]
    chat.llm = chat.chat = object()  # as if a model were loaded
    chat.card_info = runtime.ModelCard(name="m", languages=("es",), prompt="base", vocab_size=100, context=512)
    chat.update_directions()
    chat.text_in.setPlainText("In the beginning")
    chat.translate()
    qtbot.waitUntil(lambda: "En el" in chat.text_out.toPlainText())
    with qtbot.waitSignal(w.job.signals.cancelled):
        w.cancel_job()
    wait_job(qtbot, w)
    assert w.eta_label.text() == "Translating: cancelled"
    assert "Translating: done" not in w.log_view.toPlainText()


def test_resources_list_and_reopening(qtbot, window, files, tmp_path):
    """Several resources with weights; a dictionary alone is enough; a reopened project shows them again. Extending
    the vocabulary needs a parallel corpus: the page says so."""
    from core.resources import DICTIONARY, PARALLEL

    w = window
    w.new_project(tmp_path / "proj")
    dictionary = tmp_path / "en-es.tsv"
    dictionary.write_text("God\tDios\nearth\ttierra\nheaven\tcielo\nlight\tluz\n", encoding="utf-8")
    page = w.pages["data"]
    page.code.setText("es")
    page.rows["target"].set_path(files["es"])
    page.kind.setCurrentIndex(page.kind.findData(DICTIONARY))
    assert not page.rows["second"].isEnabled()
    page.rows["first"].set_path(dictionary)
    qtbot.waitUntil(lambda: "4 entries" in page.preview_text["resource"].toPlainText())
    page.weight.setValue(2.5)
    page._add_chosen()
    assert page.resource_table.rowCount() == 1 and page.resource_table.cellWidget(0, 2).value() == 2.5
    page.use()
    wait_job(qtbot, w)
    assert "4 dictionary entries" in page.counts.text() and "data" in w.project.state.stages

    tok = w.pages["tokenizer"]
    tok.radios["extend"].setChecked(True)
    assert tok.new_tokens.isEnabled() and not tok.vocab.isEnabled()
    tok.train()
    qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT)
    assert "parallel corpus" in tok.error.text() and not w.warnings and "tokenizer" not in w.project.state.stages

    page.add_resource(PARALLEL, (files["en"], files["es"]), weight=1.0)
    page.resource_table.cellWidget(1, 2).setValue(0.5)  # the weight typed in the table is the one recorded
    page.use()
    wait_job(qtbot, w)
    assert "300 parallel pairs" in page.counts.text()

    w.open_project(tmp_path / "proj")
    page.clear_resources()
    page.project_changed()  # what opening does: the list comes back from project.json
    assert [(r.kind, r.weight) for r in page.resources()] == [(DICTIONARY, 2.5), (PARALLEL, 0.5)]
    assert page.resources()[1].files == (str(files["en"]), str(files["es"])) and page.code.text() == "es"
    page.resource_table.selectRow(0)
    page.remove_selected()
    assert [r.kind for r in page.resources()] == [PARALLEL]


def test_model_trained_elsewhere(qtbot, window, tmp_path):
    """A cluster job's output folder becomes the project's fine-tuned model when it is this project's model."""
    import json

    w = window
    w.new_project(tmp_path / "proj")
    config = {"model_type": "llama", "vocab_size": 800, "hidden_size": 576, "num_hidden_layers": 30}
    w.project.model_dir.mkdir()
    (w.project.model_dir / "config.json").write_text(json.dumps(config))
    elsewhere = tmp_path / "cluster-out"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text(json.dumps({**config, "vocab_size": 900}))
    ft = w.pages["finetune"]
    ft.use_trained_elsewhere(str(elsewhere))
    assert len(w.warnings) == 1 and "vocab_size" in w.warnings.pop() and "finetune" not in w.project.state.stages
    (elsewhere / "config.json").write_text(json.dumps(config))
    ft.use_trained_elsewhere(str(elsewhere))
    assert not w.warnings and w.project.final_model_dir == elsewhere.resolve()
    assert "trained elsewhere" in ft.status.text() and str(elsewhere.resolve()) in w.log_view.toPlainText()


def test_demo_data_fills_the_data_page(qtbot, window, tmp_path):
    from core.resources import PARALLEL

    w = window
    w.new_project(tmp_path / "proj")
    page = w.pages["data"]
    page.use_demo()
    wait_job(qtbot, w)  # recorded too: the next page finds its input files
    assert "data" in w.project.state.stages and w.project.inputs().language_code == "es"
    assert page.code.text() == "es" and [r.kind for r in page.resources()] == [PARALLEL]
    assert all(Path(f).is_file() for f in (page.rows["target"].path, *page.resources()[0].files))
    qtbot.waitUntil(lambda: "rows" in page.preview_text["heldout"].toPlainText(), timeout=TIMEOUT)
    assert page.preview_text["heldout"].toPlainText().startswith("661 rows\n")  # the demo's six held-out books


def test_rerunning_a_stage_asks_first(qtbot, window, tmp_path):
    """Re-running a finished stage discards the later ones (Project.stale_after): the wizard asks, and a No keeps
    everything as it was."""
    from core.layout import StageRecord

    w = window
    w.new_project(tmp_path / "proj")
    for stage in ("data", "tokenizer", "align", "map", "init"):
        w.project.state.stages[stage] = StageRecord(1.0, ".", {})
    questions = []
    w.confirm = lambda question: questions.append(question) or False
    w.pages["tokenizer"].train()
    w.pages["align"].go()
    assert not w.busy and w.job is None
    assert "the alignment, the mapping, the initialised model" in questions[0]
    assert "the mapping, the initialised model" in questions[1] and "alignment" not in questions[1]
    assert list(w.project.state.stages) == ["data", "tokenizer", "align", "map", "init"]
    w.pages["evaluate"].go()  # nothing later to lose: no question
    assert len(questions) == 2


def test_reopened_finetune_page_shows_the_saved_settings(qtbot, window, tmp_path):
    from dataclasses import asdict

    from core.finetune import FinetuneSettings

    w = window
    w.new_project(tmp_path / "proj")
    saved = FinetuneSettings(steps=42, batch_size=3, block_size=64, lr=2e-3, eval_max_bytes=4000)
    w.project.state.settings["finetune"] = asdict(saved)
    w.project.save()
    w.open_project(tmp_path / "proj")
    ft = w.pages["finetune"]
    assert ft.settings() == saved and ft.preset.currentData() == "custom"
    ft.preset.setCurrentIndex(ft.preset.findData("gpu"))
    from core.finetune import PRESETS

    assert ft.settings() == PRESETS["gpu"] and "hours" in ft.estimate.text() or "min" in ft.estimate.text()


def test_menu_help_about_quit(qtbot, window):
    w = window
    assert w.quit_action.shortcut().toString() == "Ctrl+Q"
    w.open_help()  # the guide opens inside the app (no desktop launcher in a bundle), at the wizard's page
    browser = w.guide.browser
    assert w.guide.isVisible() and browser.source().toLocalFile().endswith("docs/wizard.md")
    assert "Language & data" in browser.toPlainText() or "Language" in browser.toPlainText()
    w.guide.show_page("README.md")
    assert "command line" in browser.toPlainText().lower()
    w.guide.close()
    about = w.about_text()
    assert "MIT" in about and "PyTorch" in about and "public domain" in about
    menus = [a.text() for a in w.menuBar().actions()]
    assert menus == ["&File", "&Help"]


def test_gui_messages_never_name_cli_commands():
    """A GUI user has no terminal: no text of the wizard tells them to run `tweety …`, and a core error's fix that
    names a command is said as the wizard's step (app.window.plain_message)."""
    import ast
    import re

    from app.window import plain_message

    command = re.compile(r"`tweety |tweety (export|adapt|eval|chat|translate|align|map)\b|make demo")
    for path in (ROOT / "app").rglob("*.py"):
        if path.name in ("main.py", "selftest.py"):  # the command line's own entry points
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = set()
        for node in ast.walk(tree):
            if (
                isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            ):
                skip.add(id(node.body[0].value))  # docstrings are for developers
            if isinstance(node, ast.FunctionDef) and node.name == "plain_message":
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                assert not command.search(node.value), (path.name, node.lineno, node.value)
    assert (
        plain_message("no mapping here (fix: run `tweety map` first)")
        == "no mapping here (fix: run the Align & map step first)"
    )
    assert "make demo" not in plain_message("not installed (fix: run `make demo` once)")


def test_corrections_typed_as_the_table_shows_them():
    """The mapping table shows pieces readably (▁ for a space on both sides); a correction typed that way is written
    with the tokenizer's own spelling (Ġ for a byte-level source tokenizer)."""
    from types import SimpleNamespace

    from app.pages.align import as_written
    from app.pages.widgets import readable
    from core.resources import OverrideLine

    class Tok:
        def __init__(self, *pieces, byte_level: bool = False):
            self.vocab = {p: i for i, p in enumerate(pieces)}
            # what core.tokenizer.is_byte_level reads of a fast tokenizer
            self.backend_tokenizer = SimpleNamespace(pre_tokenizer="ByteLevel" if byte_level else None, decoder=None)

        def get_vocab(self):
            return self.vocab

    class Project:
        source_tokenizer = staticmethod(lambda: Tok("ĠGod", "God", "Ċ", byte_level=True))
        target_tokenizer = staticmethod(lambda: Tok("▁Dios", "▁luz"))

    assert [readable(p) for p in ("ĠGod", "▁Dios", "Ċ", "ĠÃ©l")] == ["▁God", "▁Dios", "<0x0A>", "▁él"]
    lines = as_written(
        Project,
        [OverrideLine("[▁Dios]", "[▁God]"), OverrideLine("[▁luz]", "light"), OverrideLine("[▁Dios]", "[▁Nothing]")],
    )
    assert [(o.target, o.source) for o in lines] == [
        ("[▁Dios]", "[ĠGod]"),
        ("[▁luz]", "light"),
        ("[▁Dios]", "[▁Nothing]"),
    ]
