"""The desktop wizard, driven like a user would, on tiny real data (offscreen Qt)."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time
from pathlib import Path

import pytest
from conftest import ROOT, demo_lines, write_lines
from PySide6.QtCore import QSettings, QTimer

from core import hydra as H

SHOTS = ROOT / "docs" / "screenshots"
TIMEOUT = 120_000


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
    return {"en": write_lines(tmp_path / "en.txt", demo_lines("bible.train.en.gz", 300)),
            "es": write_lines(tmp_path / "es.txt", demo_lines("bible.train.es.gz", 300)),
            "held": write_lines(tmp_path / "held.txt", demo_lines("bible.heldout.es.gz", 30))}


def wait_job(qtbot, w, timeout: int = TIMEOUT) -> None:
    qtbot.waitUntil(lambda: not w.busy, timeout=timeout)
    assert not w.warnings, w.warnings


def shot(w, n: int, key: str) -> None:
    from PySide6.QtWidgets import QApplication

    w.go(key)
    QApplication.processEvents()  # the page's deferred layout (a label's new text) before the grab
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert w.grab().save(str(SHOTS / f"{n:02d}-{key}.png"))


def fill_data_page(w, files, target="es") -> None:
    page = w.pages["data"]
    page.name.setText("Spanish")
    page.code.setText("es")
    for key, name in (("target", target), ("parallel_source", "en"), ("parallel_target", "es"), ("heldout", "held")):
        page.rows[key].set_path(files[name])


def test_end_to_end(qtbot, window, files, tmp_path):
    w = window
    shot(w, 1, "project")
    w.new_project(tmp_path / "proj")
    assert w.steps.currentRow() == list(w.pages).index("source")
    w.pages["source"].inspect()
    wait_job(qtbot, w)
    assert "llama" in w.pages["source"].info.text()
    shot(w, 2, "source")

    fill_data_page(w, files)
    data = w.pages["data"]
    qtbot.waitUntil(lambda: "300 rows" in data.preview_text["target"].toPlainText())  # read in the pool
    data.use()
    wait_job(qtbot, w)
    assert "300 parallel pairs" in data.counts.text()
    shot(w, 3, "data")

    tok = w.pages["tokenizer"]
    tok.vocab.setValue(800)
    tok.train()
    wait_job(qtbot, w)
    assert tok.samples.toPlainText().count(" | ") > 3
    shot(w, 4, "tokenizer")

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
    assert row[2:] == ("override", "override 100%", "ĠGod (1.00)")
    assert w.project.state.stages["map"].summary["override"] == 1 and "init" in w.project.state.stages
    written = (w.project.folder / "overrides.tsv").read_text(encoding="utf-8")
    align.apply_overrides([OverrideLine("[▁Dios]", "[ĠNoSuchPiece]")])  # refused before anything is written
    assert len(w.warnings) == 1 and "not a token of the source vocabulary" in w.warnings.pop() and not w.busy
    assert (w.project.folder / "overrides.tsv").read_text(encoding="utf-8") == written
    align.view.selectRow(next(i for i in range(align.proxy.rowCount()) if align.proxy.index(i, 1).data() == "▁Dios"))
    shot(w, 5, "align")
    align.filter.setText("")

    # Fine-tune: start, pause (no step while paused, GUI alive), stop, resume to the end; the curve is drawn live.
    ft = w.pages["finetune"]
    ft.steps.setValue(30)
    ft.batch.setValue(2)
    ft.block.setValue(32)
    ft.start()
    qtbot.waitUntil(lambda: len(ft.points["loss"]) >= 2, timeout=TIMEOUT)
    ft.toggle_pause()
    qtbot.wait(1500)  # the step under way finishes, then the run waits
    paused_at = len(ft.points["loss"])
    qtbot.wait(800)
    assert len(ft.points["loss"]) == paused_at < 30 and w.busy
    w.cancel_job()
    wait_job(qtbot, w)
    assert f"Stopped at step {paused_at} of 30" in ft.status.text() and ft.resume_button.isEnabled()
    assert "finetune" not in w.project.state.stages
    ft.resume()
    wait_job(qtbot, w)
    assert [x for x, _ in ft.points["loss"]] == list(range(1, 31))
    (_, before), (_, after) = ft.points["bpb"][0], ft.points["bpb"][-1]
    assert after < before and "Done: 30 steps" in ft.status.text()
    shot(w, 6, "finetune")

    ev = w.pages["evaluate"]
    ev.max_bytes = 3000
    ev.go()
    wait_job(qtbot, w)
    bpb = [float(ev.results.item(0, c).text()) for c in (1, 2, 3)]
    assert ev.results.horizontalHeaderItem(3).text() == "fine-tuned model" and bpb[2] < bpb[1]
    shot(w, 7, "evaluate")

    ex = w.pages["export"]
    assert ex.type.currentText() == "q8_0"
    ex.go()
    wait_job(qtbot, w)
    gguf = tmp_path / "proj" / "export" / "proj-q8_0.gguf"
    assert gguf.is_file() and "MB" in ex.result.text()
    shot(w, 8, "export")

    chat = w.pages["chat"]
    assert chat.file.path == str(gguf)
    chat.max_tokens = 24
    chat.load()
    wait_job(qtbot, w)
    before = chat.transcript.toPlainText()
    chat.input.setText("Hola")
    chat.send()
    wait_job(qtbot, w)
    assert "Chatting: done" in w.log_view.toPlainText()
    assert len(chat.transcript.toPlainText()) > len(before) + len("You: Hola")
    chat.text_in.setPlainText("In the beginning God created the heaven and the earth.")
    chat.translate()
    wait_job(qtbot, w)
    # The Hydra: the source body reads the English, the fine-tuned Spanish tables write (no GGUF involved).
    chat.use_hydra.setChecked(True)
    chat.tgt.setText("es")  # (this project never named its language)
    chat.translate()
    wait_job(qtbot, w)
    assert "Translating with the Hydra: done" in w.log_view.toPlainText()
    hydra = chat._hydra[1]
    assert set(hydra.languages) == {"en", "es"} and len(hydra.examples("en", "es")) == 3
    expected = H.translate(hydra, chat.text_in.toPlainText(), "en", "es", max_new_tokens=chat.max_tokens)
    assert chat.text_out.toPlainText().strip() == expected and expected
    shot(w, 9, "chat")

    # Reopening resumes after the last finished stage (everything done: the Chat page).
    w.open_project(tmp_path / "proj")
    assert w.stack.currentWidget() is chat
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
    assert len(gaps) > 20 and max(gaps) < 0.2, max(gaps)


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
    page.rows["parallel_source"].set_path(en)
    page.rows["parallel_target"].set_path(short)
    error = page.errors["parallel_target"]
    qtbot.waitUntil(lambda: not error.isHidden())
    assert "short.es.txt" in error.text() and "lines" in error.text()

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

    r = subprocess.run([sys.executable, "-m", "app.main", "--self-test"], capture_output=True, text=True,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("\nok    ") + r.stdout.startswith("ok    ") == 5 and "self-test passed" in r.stdout


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
    assert config["settings"]["batch_size"] == 8 and config["launch"] == {"nproc": 4, "nnodes": 2, "rdzv": "node1:29500"}
    assert "--nnodes 2" in (job / "launch.sh").read_text() and "#SBATCH --nodes=2" in (job / "slurm.sbatch").read_text()
    assert f"Job written to {job}" in ft.job_info.text() and "-m torch.distributed.run" in w.log_view.toPlainText()
    assert not (tmp_path / "proj" / "finetuned").exists()  # nothing ran
    ft.nproc.setValue(3)  # 8 sequences cannot be split between 6 processes: refused with the reason
    ft.prepare_cluster_job()
    assert len(w.warnings) == 1 and "multiple of the number of training processes (6)" in w.warnings[0]
