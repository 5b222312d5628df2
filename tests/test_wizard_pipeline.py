"""The wizard runs the same pipeline as the command line (offscreen, real SmolLM2 weights, real verse pairs): a
`tweety adapt` folder opens in the wizard at fine-tuning; weighted corpora and a dictionary chosen on the pages give
the CLI's mapping; the Tokenizer page's Extend choice gives an extended model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from conftest import write_lines
from core.mapping import Mapping
from core.resources import DICTIONARY, PARALLEL

TIMEOUT = 600_000


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


@pytest.fixture(scope="module")
def files(module_tmp, pairs):
    d = module_tmp("wizard-inputs")
    en, es = pairs
    for name, lines in (("a.en", en[:200]), ("a.es", es[:200]), ("b.en", en[200:]), ("b.es", es[200:]), ("all.es", es)):
        write_lines(d / name, lines)
    (d / "dict.tsv").write_text("God\tDios\nearth\ttierra\nwaters\taguas\nlight\tluz\n")
    return d


def run_stage(qtbot, w, start, stage: str) -> None:
    start()
    qtbot.waitUntil(lambda: stage in w.project.state.stages and not w.busy, timeout=TIMEOUT)
    assert not w.warnings, w.warnings


def fill_data_page(w, files, resources) -> None:
    page = w.pages["data"]
    page.name.setText("Spanish")
    page.code.setText("es")
    page.rows["target"].set_path(files / "all.es")
    for kind, names, weight in resources:
        page.add_resource(kind, tuple(str(files / n) for n in names), weight=weight)


def test_a_tweety_adapt_folder_opens_in_the_wizard_at_finetuning(window, files, tmp_path):
    out = tmp_path / "adapted"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "adapt",
            "--target-text",
            str(files / "all.es"),
            "--parallel",
            str(files / "a.en"),
            str(files / "a.es"),
            "--dictionary",
            str(files / "dict.tsv"),
            "--vocab-size",
            "600",
            "--language",
            "es",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    window.open_project(out)
    assert window.stack.currentWidget() is window.pages["finetune"]
    assert window.pages["data"].resource_table.rowCount() == 2 and window.pages["data"].code.text() == "es"


def test_weighted_corpora_and_a_dictionary_in_the_wizard_give_the_cli_mapping(qtbot, window, files, tmp_path):
    w = window
    w.new_project(tmp_path / "wizard")
    fill_data_page(
        w,
        files,
        [(PARALLEL, ("a.en", "a.es"), 2.0), (PARALLEL, ("b.en", "b.es"), 1.0), (DICTIONARY, ("dict.tsv",), 0.5)],
    )
    run_stage(qtbot, w, w.pages["data"].use, "data")
    w.pages["tokenizer"].vocab.setValue(600)
    run_stage(qtbot, w, w.pages["tokenizer"].train, "tokenizer")
    run_stage(qtbot, w, w.pages["align"].go, "init")

    cli = tmp_path / "cli"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "adapt",
            "--target-text",
            str(files / "all.es"),
            "--parallel",
            str(files / "a.en"),
            str(files / "a.es"),
            "--parallel-weight",
            "2",
            "--parallel",
            str(files / "b.en"),
            str(files / "b.es"),
            "--parallel-weight",
            "1",
            "--dictionary",
            str(files / "dict.tsv"),
            "--dictionary-weight",
            "0.5",
            "--vocab-size",
            "600",
            "--out",
            str(cli),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    ours, theirs = Mapping.load(w.project.mapping_dir), Mapping.load(cli / "work" / "mapping")
    assert set(ours.parts) == set(theirs.parts) >= {"a.en", "b.en", "dict.tsv"}
    assert (ours.origin == theirs.origin).all()
    np.testing.assert_allclose((ours.matrix - theirs.matrix).toarray(), 0, atol=1e-6)


def test_the_wizard_extends_the_vocabulary(qtbot, window, files, tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    w = window
    w.new_project(tmp_path / "extended")
    fill_data_page(w, files, [(PARALLEL, ("a.en", "a.es"), 1.0)])
    run_stage(qtbot, w, w.pages["data"].use, "data")
    page = w.pages["tokenizer"]
    page.radios["extend"].setChecked(True)
    page.new_tokens.setValue(200)
    run_stage(qtbot, w, page.train, "tokenizer")
    run_stage(qtbot, w, w.pages["align"].go, "init")
    assert w.project.state.vocabulary == "extend"
    tokenizer = AutoTokenizer.from_pretrained(w.project.model_dir)
    assert len(tokenizer) == 49152 + 200 == AutoConfig.from_pretrained(w.project.model_dir).vocab_size
    assert w.project.state.stages["map"].summary["kept"] == 49152
