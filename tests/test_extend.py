"""Vocabulary extension: the real SmolLM2-135M extended with a few hundred Spanish tokens from 400 demo verse pairs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DEMO, demo_lines, write_lines

from core import extend
from core.errors import TweetyError
from core.mapping import Mapping, Origin
from core.resources import read_lines
from core.tokenizer import piece_bytes

NEW_TOKENS = 300
SOURCE_VOCAB = 49152


@pytest.fixture(scope="module")
def extended(tmp_path_factory, source, pairs):
    """(model folder, project) of a project extending the vocabulary (the wizard's Extend choice, `tweety extend`)
    on 400 Genesis verse pairs, 300 new tokens."""
    from core.layout import EXTEND
    from core.project import Inputs, Project
    from core.resources import PARALLEL, Resource

    tmp = tmp_path_factory.mktemp("extend")
    en, es = write_lines(tmp / "train.en", pairs[0]), write_lines(tmp / "train.es", pairs[1])
    project = Project.create(tmp / "extended")
    project._source = source  # the session's loaded SmolLM2; initialisation changes a copy of it
    project.set_inputs(Inputs(str(es), (Resource(PARALLEL, (str(en), str(es))),), "es"), EXTEND)
    project.run("init", extension=extend.ExtensionSettings(new_tokens=NEW_TOKENS))
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
        "  ¿Cómo estás?\tBien,  gracias…\n", "naïve café 2024 ½ — 😀", "ñandú ÑANDÚ"]
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
    extend.extend_tokenizer(pairs[1], [], source_tokenizer, tmp_path / "tok",
                            extend.ExtensionSettings(new_tokens=NEW_TOKENS))
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
        shift = {lang: (hf[0].base_model(torch.tensor([_ids(tok, [line])[0]])).last_hidden_state[0, 1:]
                        @ offset[0]).mean().item() for lang, line in (("en", pairs[0][-1]), ("es", pairs[1][-1]))}
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
        expected = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):].tolist()
    llm = runtime.load(path, runtime.RuntimeSettings(n_ctx=128, exact=True, threads=2))
    got = []
    for token in llm.generate(ids, top_k=1, temp=0.0):
        if len(got) == len(expected):
            break
        got.append(token)
    assert got == expected
    assert any(t >= SOURCE_VOCAB for t in ids)  # the prompt really uses new tokens


def test_non_bpe_and_sentencepiece_sources_are_refused(target_tokenizer):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    unigram = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0)))
    with pytest.raises(TweetyError, match="Unigram model.*needs a BPE tokenizer.*replacing the vocabulary"):
        extend.check_extensible(unigram)
    # Our own SentencePiece-style BPE (`▁`, byte fallback), as Llama 2 and Mistral have.
    with pytest.raises(TweetyError, match="SentencePiece-style BPE.*byte-level BPE"):
        extend.extend_tokenizer(["una casa"] * 20, ["a house"], target_tokenizer, "unused")


def test_extension_needs_a_parallel_corpus(tmp_path):
    from core.pipeline import AdaptSettings, adapt

    es = write_lines(tmp_path / "es.txt", ["una casa"] * 20)
    (tmp_path / "d.tsv").write_text("house\tcasa\n")
    with pytest.raises(TweetyError, match="parallel corpus"):
        adapt(AdaptSettings(target_text=str(es), dictionary=str(tmp_path / "d.tsv"), out=str(tmp_path / "out"),
                            vocabulary="extend"))
    assert not (tmp_path / "out").exists()
