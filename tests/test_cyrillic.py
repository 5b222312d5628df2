"""Beyond Latin script: a Russian tokenizer, the model adapted to it, an F32 GGUF, and llama.cpp reading and writing
Cyrillic exactly as transformers does; the wizard shows the pieces as Cyrillic letters, not as GPT-2's byte alphabet.

The data is tests/data: 80 English–Russian sentence pairs and 8 held-out Russian sentences, written for these tests
(everyday sentences and software messages, with ё, «», — and a capital Ё that the small vocabulary may only spell in
bytes)."""

from __future__ import annotations

import re
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch
from conftest import ROOT, write_lines

from core import runtime
from core.export import ExportSettings, export_gguf

DATA = ROOT / "tests" / "data"
CYRILLIC = re.compile("[а-яёА-ЯЁ]")
# What UTF-8 Cyrillic looks like read as GPT-2's byte alphabet or as Latin-1: lead bytes 0xD0/0xD1 show as Ð/Ñ,
# continuation bytes as Â…¿ or the alphabet's stand-ins Ā…Ń (U+0100–U+0143).
MOJIBAKE = re.compile("[\u0080-\u00ff\u0100-\u0143\ufffd]")
# llama.cpp on one thread: its threads spin while waiting for each other, so on a busy 2-core machine two are many
# times slower than one (docs/results/generation.md), and a 64-token check gains nothing from the second.
THREADS = 1


def pairs() -> list[tuple[str, str]]:
    lines = (DATA / "cyrillic.en-ru.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t")) for line in lines]


def heldout() -> list[str]:
    return (DATA / "cyrillic.heldout.ru").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def project(module_tmp) -> Path:
    """SmolLM2-135M adapted to Russian through the whole pipeline: a 500-token BPE vocabulary learnt on the Russian
    side, the English–Russian pairs as parallel corpus, the held-out sentences as held-out text."""
    from core.pipeline import AdaptSettings, adapt
    from core.tokenizer import TokenizerSettings

    tmp = module_tmp("cyrillic")
    ru = write_lines(tmp / "train.ru", [r for _, r in pairs()])
    held = write_lines(tmp / "heldout.ru", heldout())
    return adapt(
        AdaptSettings(
            target_text=str(ru),
            parallel=(str(DATA / "cyrillic.en-ru.tsv"), ""),
            heldout_text=str(held),
            language="ru",
            out=str(tmp / "project"),
            tokenizer=TokenizerSettings(vocab_size=500),
        )
    ).out


@pytest.fixture(scope="module")
def hf(project):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = project / "model"
    return (
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
        AutoTokenizer.from_pretrained(folder),
    )


@pytest.fixture(scope="module")
def gguf(project, module_tmp) -> Path:
    return export_gguf(project / "model", module_tmp("cyrillic-gguf") / "ru-f32.gguf", ExportSettings(type="f32")).path


def test_the_vocabulary_is_cyrillic(hf):
    """The tokenizer learnt Cyrillic words, and cuts held-out Russian into fewer tokens than the source model did
    (SmolLM2's English-centric vocabulary spends about one token per letter on Cyrillic)."""
    from core.models import load_model

    tok = hf[1]
    pieces = [p for p in tok.get_vocab() if len(CYRILLIC.findall(p)) >= 2]
    assert len(pieces) >= 100, pieces  # of about 230 learnt (500 less 256 bytes and the special tokens)
    text = " ".join(heldout())
    ours = len(tok(text, add_special_tokens=False)["input_ids"])
    theirs = len(load_model("default")[1](text, add_special_tokens=False)["input_ids"])
    assert ours < 0.85 * theirs, (ours, theirs)  # 249 against 327 when written
    for line in heldout():  # exact round trip, byte-fallback pieces (the lone Ё) included
        assert tok.decode(tok(line, add_special_tokens=False)["input_ids"]) == line


def test_llama_cpp_tokenizes_cyrillic_like_transformers(hf, gguf):
    tok = hf[1]
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    lines = [*heldout(), *(r for _, r in pairs())]
    mismatched = [
        line
        for line in lines
        if llm.tokenize(line.encode(), add_bos=False, special=False) != tok(line, add_special_tokens=False)["input_ids"]
    ]
    assert mismatched == []
    # At least one held-out line needs byte pieces (a letter the vocabulary lacks): llama.cpp must agree there too.
    byte_pieces = {
        i
        for line in heldout()
        for i in tok(line, add_special_tokens=False)["input_ids"]
        if tok.convert_ids_to_tokens(i).startswith("<0x")
    }
    assert byte_pieces
    prompt = "<|im_start|>user\nПривет, как дела?<|im_end|>\n"
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == tok(prompt)["input_ids"]
    # Detokenizing gives back the same bytes, so every held-out line decodes to itself.
    for line in heldout():
        assert llm.detokenize(llm.tokenize(line.encode(), add_bos=False, special=False)).decode("utf-8") == line


def held_ids(tok, n: int = 64) -> list[int]:
    """BOS and the first held-out tokens: what every prompt opens with, then Russian the model never saw."""
    ids = tok(" ".join(heldout()), add_special_tokens=False)["input_ids"][: n - 1]
    assert len(ids) == n - 1
    return [tok.bos_token_id, *ids]


def test_f32_logits_match_transformers_on_cyrillic(hf, gguf):
    """Within 1e-4 of transformers. Where float32 itself is not that precise — transformers in float32 is 1.3e-4 off
    its own float64 result after ` в` in this text — llama.cpp must be no further from float64 than transformers'
    float32 is (it is closer: 1.0e-4)."""
    import copy

    model, tok = hf
    ids = held_ids(tok)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy().astype(np.float64)
        exact = copy.deepcopy(model).double()(torch.tensor([ids])).logits[0].numpy()
    llm = runtime.load(gguf, runtime.RuntimeSettings(n_ctx=128, exact=True, threads=THREADS))
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)]).astype(np.float64)
    assert got.shape == expected.shape
    floor = np.abs(expected - exact).max(axis=1)  # float32's own error at each position
    assert (np.abs(got - exact).max(axis=1) <= np.maximum(1e-4, floor)).all()
    stable = floor < 5e-5
    assert stable.mean() >= 0.9 and np.abs(got - expected)[stable].max() <= 1e-4


def test_generation_writes_valid_cyrillic(hf, gguf):
    """Greedy generation in llama.cpp picks transformers' tokens, and its streamed text is whole UTF-8 characters —
    a Cyrillic letter spelled as two byte pieces is never cut in half or replaced by U+FFFD."""
    model, tok = hf
    prompt = held_ids(tok, 24)
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=None)[
            0, len(prompt) :
        ].tolist()
    llm = runtime.load(gguf, runtime.RuntimeSettings(n_ctx=128, exact=True, threads=THREADS))
    pieces: list[str] = []
    text = runtime.complete(llm, prompt, max_tokens=len(expected), temperature=0.0, on_text=pieces.append)
    assert "".join(pieces) == text
    assert text == tok.decode(expected)
    assert CYRILLIC.search(text) and not MOJIBAKE.search(text), text


@pytest.fixture
def mapping_rows(qtbot, project, tmp_path) -> list[tuple[str, str, str]]:
    """(token, how it was made, its sources) of the Russian project's Cyrillic rows, as the Align & map page shows."""
    from PySide6.QtCore import QSettings

    from app.window import MainWindow

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    w = MainWindow()
    qtbot.addWidget(w)
    page = w.pages["align"]
    with qtbot.waitSignal(page.mapping_shown, timeout=60_000):  # the page reads the mapping in the pool
        w.open_project(project)
    table = page.model
    rows = [tuple(table.data(table.index(r, c)) for c in (1, 2, 4)) for r in range(table.rowCount())]
    return [(token, made, sources) for token, made, sources in rows if CYRILLIC.search(token)]


def test_the_wizard_shows_cyrillic_pieces_readably(mapping_rows, project):
    """The Align & map page and the Tokenizer page's samples: the new tokens and the SmolLM2 pieces they start from
    read as Cyrillic letters (▁ for a space), never as Ð¿-style byte-alphabet mojibake."""
    from app.pages.tokenizer import segmentations
    from core.project import Project

    assert len(mapping_rows) >= 100
    for token, _, sources in mapping_rows:
        assert not MOJIBAKE.search(token), token
        # A Cyrillic letter's two bytes read as two Latin-1 letters or stand-ins (Ð¿, ÑĢ): never.
        assert not re.search("[ÐÑ][\u0080-\u00ff\u0100-\u0143]", sources), (token, sources)
    # A token with no translation evidence starts from the SmolLM2 pieces that spell it (FVT, cut from its byte-level
    # vocabulary): those show as Cyrillic; the others from English words aligned with them (▁и ← ▁and).
    spelled = [sources for _, made, sources in mapping_rows if made == "guessed from spelling"]
    assert len(spelled) >= 50 and sum(bool(CYRILLIC.search(s)) for s in spelled) >= 0.8 * len(spelled)
    opened = Project.open(project)
    for tok in (opened.target_tokenizer(), opened.source_tokenizer()):
        # The Tokenizer page's samples: the line, then its pieces. SmolLM2's own (byte-level, as an extended
        # vocabulary is) cut Cyrillic letters into lone bytes, which must show as <0x..>, never as Ñ or Ð.
        pieces = [sample.split("\n→ ", 1)[1] for sample in segmentations(opened, tok)]
        assert pieces and all(CYRILLIC.search(p) and not MOJIBAKE.search(p) for p in pieces), pieces


def test_a_lone_byte_is_shown_as_a_byte():
    """SmolLM2 spells `ё` as the pieces `Ñ` (byte 0xD1) and `ĳ` (0x91): from a byte-level tokenizer both are bytes;
    the same `Ñ` in a SentencePiece vocabulary (Spanish) is the letter."""
    from app.pages.widgets import readable

    assert [readable(p, byte_level=True) for p in ("Ñ", "ĳ", "ĠÐ¿", "ÑĢÐ")] == ["<0xD1>", "<0x91>", "▁п", "р<0xD0>"]
    # Guessed: byte-level when a stand-in beyond Latin-1 (Ġ, Ģ) or a whole Cyrillic letter is among the bytes.
    assert [readable(p) for p in ("ĠÐ¿", "ÑĢÐ", "Ð¾Ð", "Ñ", "ção")] == ["▁п", "р<0xD0>", "о<0xD0>", "Ñ", "ção"]
    assert readable("Ñ", byte_level=False) == "Ñ" and readable("ĠÐ¿", byte_level=False) == "ĠÐ¿"


def test_the_align_page_shows_lone_bytes_of_cyrillic_letters_as_bytes(mapping_rows):
    """The Align page knows its tokenizers: a lone lead byte of a Cyrillic letter among SmolLM2's pieces shows as
    <0xD1>, not as the Latin letter Ñ (app.pages.align.MappingRows)."""
    lone = [(token, sources) for token, _, sources in mapping_rows if MOJIBAKE.search(sources)]
    assert lone == []
