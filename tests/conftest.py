"""Shared fixtures: the real SmolLM2-135M source model (loaded once) and small real slices of the demo corpus."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"


def demo_lines(name: str, n: int) -> list[str]:
    with gzip.open(DEMO / name, "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


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
    adapt(AdaptSettings(target_text=str(es), parallel=(str(en), str(es)), dictionary=str(words), language="es",
                        out=str(folder / "project"), tokenizer=TokenizerSettings(vocab_size=1000)))
    return folder / "project"
