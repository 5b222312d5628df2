"""Shared fixtures: the real SmolLM2-135M source model (loaded once) and small real slices of the demo corpus."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

# Every session makes a QApplication (garbage_collected_on_the_gui_thread below), so every test file needs Qt without
# a screen, even one run alone.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"


def demo_lines(name: str, n: int) -> list[str]:
    with gzip.open(DEMO / name, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


@pytest.fixture(scope="session", autouse=True)
def garbage_collected_on_the_gui_thread(qapp):
    """As the application does (app.workers.collect_garbage_on_gui_thread): a pool thread never collects a cycle
    holding Qt objects. The timer collects while a test waits on Qt; after each test, the test's thread does."""
    import gc

    from app.workers import collect_garbage_on_gui_thread

    collector = collect_garbage_on_gui_thread()
    gc.collect()
    gc.freeze()  # see frozen_after_each_module
    yield collector
    collector.timer.stop()
    gc.enable()


@pytest.fixture(scope="module", autouse=True)
def frozen_after_each_module():
    """What outlives a module (imported libraries, session fixtures) is moved out of the collector's sight: with torch,
    transformers and Qt loaded a full collection took ~0.3 s, a minute and a half of `make test-fast`; now it scans
    only what the module's tests made. Module fixtures end before this one (it is set up first), so their cycles are
    collected before the freeze."""
    import gc

    yield
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def collect_after_each_test():
    import gc

    yield
    gc.collect()


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """`mktemp` for a module's fixtures, emptied when the module's tests are done: a full run writes ~18 GB of adapted
    models and GGUFs, which must not pile up on CI's disk (failing tests' function folders are kept, see pyproject)."""
    made: list[Path] = []

    def mktemp(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """The wizard's main window (offscreen), its settings in `tmp_path`, never asking: warnings are collected in
    `window.warnings` and every question is answered Yes (a dialog would block the test)."""
    from PySide6.QtCore import QSettings

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    from app.window import MainWindow

    w = MainWindow()
    w.warnings = []
    monkeypatch.setattr(w, "show_warning", w.warnings.append)
    monkeypatch.setattr(w, "confirm", lambda question: True)
    qtbot.addWidget(w)
    return w


@pytest.fixture(scope="session")
def source():
    """(model, tokenizer) of the embedded default: real weights, converted from GGUF once into the cache."""
    from core.models import load_model

    return load_model("default")


@pytest.fixture(scope="session")
def source_tokenizer(source):
    return source[1]


@pytest.fixture(scope="session")
def pairs() -> tuple[list[str], list[str]]:
    """400 English–Spanish verse pairs (Genesis) from the demo corpus."""
    return demo_lines("bible.train.en.gz", 400), demo_lines("bible.train.es.gz", 400)


@pytest.fixture(scope="session")
def target_tokenizer(tmp_path_factory, source_tokenizer, pairs):
    from core.tokenizer import TokenizerSettings, load_tokenizer, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(pairs[1], source_tokenizer, out, TokenizerSettings(vocab_size=800))
    return load_tokenizer(out)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def verse_project(folder: Path, n: int = 2000) -> Path:
    """A real adapted project with a parallel corpus, for translation: `n` demo verse pairs, a five-word dictionary,
    a 1,000-token Spanish vocabulary, language "es". Returns the project folder (`folder`/project)."""
    from core.pipeline import AdaptSettings, adapt
    from core.tokenizer import TokenizerSettings

    en = write_lines(folder / "en.txt", demo_lines("bible.train.en.gz", n))
    es = write_lines(folder / "es.txt", demo_lines("bible.train.es.gz", n))
    words = write_lines(folder / "dict.tsv", ["God\tDios", "earth\ttierra", "said\tdijo", "and\ty", "the\tel"])
    adapt(
        AdaptSettings(
            target_text=str(es),
            parallel=(str(en), str(es)),
            dictionary=str(words),
            language="es",
            out=str(folder / "project"),
            tokenizer=TokenizerSettings(vocab_size=1000),
        )
    )
    return folder / "project"


# `make test-fast` leaves these out (`-m "not slow"`): each took over ~5 s on 2 cores (pytest --durations, module
# fixtures counted with their first test). Whole modules where most tests adapt, train or export real models.
SLOW_MODULES = {
    "test_app",
    "test_app_translation",
    "test_cyrillic",
    "test_distributed",
    "test_extend",
    "test_full_disk",
    "test_gpu_script",
    "test_kill",
    "test_wizard_pipeline",
}
SLOW_TESTS = {
    "test_app_pages": {"test_finetune_page_never_imports_torch_on_the_gui_thread"},
    "test_child_jobs": {"test_cancelled_tokenizer_training_stops_its_process_and_writes_nothing"},
    "test_cli": {
        "test_eval_json_and_trans_tokenization_beats_mean",
        "test_a_baseline_initialisation_skips_the_alignment",
        "test_loose_map_refuses_a_dictionary_that_gives_no_tokens",
        "test_an_adapt_folder_is_a_project_whose_stages_rerun_from_the_cli",
        "test_stepwise_commands_reproduce_adapt",
        "test_export_translate_and_chat_commands",
        "test_overrides_edit_then_reinitialise_from_the_cached_alignment",
    },
    "test_export": {"test_f32_round_trip_through_transformers"},
    "test_finetune": {"test_cli_finetune_writes_model_and_curve"},
    "test_gemma": {"test_sentencepiece_pieces_map_exactly_through_bytes"},
    "test_hydra": {
        "test_gguf_with_merged_vocabulary_greedy_parity",
        "test_cli_translate_with_a_hydra",
        "test_batched_generation_equals_one_at_a_time",
        "test_untied_tuning_gives_a_language_its_own_head_saved_and_loaded",
        "test_greedy_generation_equals_stepwise_argmax_and_stops",
    },
    "test_pipeline": {"test_hydra_tuning_changes_the_tables_and_can_be_cancelled"},
    "test_project": {"test_stages_are_recorded_resumable_and_invalidated"},
    "test_translating": {
        "test_translate_with_a_project_resumes_after_a_kill",
        "test_teaching_the_project_to_translate_lowers_heldout_loss_and_keeps_the_body_and_tables",
        "test_project_measures_its_translators_and_translates_a_file_with_the_best",
        "test_project_translates_a_po_catalogue",
        "test_teaching_to_translate_continues_after_a_cancel_to_the_same_tables",
        "test_teaching_to_translate_from_the_cli_continues_after_a_kill",
    },
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS.get(module, ()):
            item.add_marker(pytest.mark.slow)
