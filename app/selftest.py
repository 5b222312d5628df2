"""`tweety-studio --self-test`: a headless end-to-end check of an installed Tweety Studio (every bundle runs it).

It opens the wizard window offscreen, loads the default source model, adapts it to Spanish on 200 embedded demo verse
pairs (tokenizer, alignment, mapping, initialisation), exports the result as GGUF, has llama.cpp generate a few tokens
from it, and prints one line per step. Exit code 0 when every step passed, 1 (with the error) when one failed.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "resources" / "demo"  # also the layout inside a PyInstaller bundle
PAIRS = 200


def run(print_line: Callable[[str], None] = print) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="tweety-self-test-") as work:
        work = Path(work)
        steps = [
            ("open the wizard window", _window),
            ("open the user's guide", _guide),
            ("load the default model", _load),
            ("adapt on 200 demo verses", lambda: _adapt(work)),
            ("export GGUF", lambda: _export(work)),
            ("generate with llama.cpp", lambda: _generate(work)),
            ("measure the translation memory", _memory),
            ("put a translation adapter on the body", lambda: _adapter(work)),
        ]
        for name, step in steps:
            start = time.monotonic()
            try:
                detail = step()
            except Exception:  # noqa: BLE001 — a self-test reports whatever broke
                print_line(f"FAIL  {name}\n{traceback.format_exc()}")
                return 1
            print_line(f"ok    {name} ({time.monotonic() - start:.1f} s){': ' + detail if detail else ''}")
    print_line("self-test passed")
    return 0


def _window() -> str:
    from PySide6.QtWidgets import QApplication

    from app.window import MainWindow

    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.resize(1000, 700)
    image = window.grab()
    app.processEvents()
    if image.isNull() or image.width() < 100:
        raise RuntimeError("the window did not render")
    return f"{len(window.pages)} pages, Qt platform {app.platformName()}"


def _guide() -> str:
    from app.guide import DOCS, GuideDialog

    from PySide6.QtWidgets import QApplication

    dialog = GuideDialog()
    text = dialog.browser.toPlainText()
    # Deleted by Qt while the application lives: left to Python's collector at exit, the browser's document is
    # deleted after the application, which crashes the process (SIGSEGV after "self-test passed").
    dialog.deleteLater()
    QApplication.processEvents()
    if "wizard" not in text.lower() or not (DOCS / "README.md").is_file():
        raise RuntimeError(f"the user's guide is missing or empty in {DOCS}")
    return f"{len(list(DOCS.rglob('*.md')))} pages"


def _load() -> str:
    from core.models import DEFAULT_MODEL, load_model

    model, tokenizer = load_model(DEFAULT_MODEL)
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, vocabulary {len(tokenizer):,}"


def _demo_lines(name: str) -> list[str]:
    with gzip.open(DEMO / name, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(PAIRS)]


def _adapt(work: Path) -> str:
    from core.pipeline import AdaptSettings, adapt
    from core.tokenizer import TokenizerSettings

    for lang in ("en", "es"):
        (work / f"train.{lang}").write_text("\n".join(_demo_lines(f"bible.train.{lang}.gz")) + "\n", encoding="utf-8")
    result = adapt(
        AdaptSettings(
            target_text=str(work / "train.es"),
            parallel=(str(work / "train.en"), str(work / "train.es")),
            out=str(work / "adapted"),
            language="es",
            tokenizer=TokenizerSettings(vocab_size=400),
        )
    )
    links = result.project.state.stages["align"].summary.get("links", 0)
    return f"{links:,} alignment links, {result.coverage.get('alignment', 0)} tokens mapped"


def _export(work: Path) -> str:
    from core.export import ExportSettings, export_gguf

    from core.project import Project

    model = Project.open(work / "adapted").final_model_dir
    result = export_gguf(model, work / "adapted.gguf", ExportSettings(type="f16"))
    return f"{result.bytes / 1e6:.0f} MB"


def _memory() -> str:
    """The translators' own libraries (bm25s for the memory, sacrebleu for chrF) are in the bundle: the installer
    once left sacrebleu out, and the Evaluate page's Translation tab would have failed only in the installed app."""
    from core.memory import TranslationMemory
    from core.translators import chrf, memory_top

    english, spanish = _demo_lines("bible.train.en.gz"), _demo_lines("bible.train.es.gz")
    memory = TranslationMemory(english[:180], spanish[:180])
    score = chrf(memory_top(memory)(english[180:]), spanish[180:])
    if not 0 < score < 100:
        raise RuntimeError(f"chrF of the memory on 20 verses is {score}")
    return f"chrF {score:.1f} on 20 held-out verses"


def _adapter(work: Path) -> str:
    """peft (the LoRA adapter "Teach it to translate" trains, core.hydra.lora) is in the bundle and, new, changes
    nothing: the Hydra's logits with a fresh adapter on its body equal those without."""
    import torch

    from core.hydra import lora
    from core.project import Project

    hydra = Project.open(work / "adapted").hydra()
    segments = [hydra.segment("es", "Y dijo Dios")]
    bare = hydra.logits(segments, "es")
    params = lora.attach(hydra, lora.direction("en", "es"))
    fitted = hydra.logits(segments, "es")
    lora.detach(hydra)
    if not torch.equal(bare, fitted):
        raise RuntimeError("a new translation adapter changed the model's output")
    return f"{sum(p.numel() for p in params.values()):,} adapter parameters"


def _generate(work: Path) -> str:
    from core import runtime

    llm = runtime.load(work / "adapted.gguf", runtime.RuntimeSettings(n_ctx=256))
    text = runtime.complete(llm, "Y dijo Dios:", max_tokens=8)
    if not text:
        raise RuntimeError("llama.cpp generated nothing")
    return repr(text)
