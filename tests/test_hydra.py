"""Hydra models on the real SmolLM2-135M: one body, English and Spanish tables swapped around it."""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import write_lines

from core import hydra as H
from core.errors import TweetyError
from core.jobs import Cancelled, CancelToken

TEXT = "In the beginning God created the heaven and the earth."


@pytest.fixture(scope="module")
def adapted_es(tmp_path_factory, source, target_tokenizer):
    """SmolLM2 adapted to the 800-piece Spanish tokenizer (dictionary mapping), saved like `tweety init` does."""
    from core.init import initialise, save_adapted
    from core.mapping import build_mapping
    from core.resources import DictionaryEntry

    model, tok = source
    entries = [DictionaryEntry(en, es) for en, es in (("God", "Dios"), ("earth", "tierra"), ("waters", "aguas"),
                                                      ("light", "luz"), ("beginning", "principio"))]
    m = build_mapping(tok, target_tokenizer, dictionary=entries)
    out = tmp_path_factory.mktemp("hydra") / "es"
    save_adapted(initialise(copy.deepcopy(model), m), target_tokenizer, out)
    return out


@pytest.fixture(scope="module")
def hydra(source, adapted_es):
    return H.build_hydra(source, {"es": adapted_es})


@pytest.fixture(scope="module")
def saved(hydra, tmp_path_factory):
    return H.save_hydra(hydra, tmp_path_factory.mktemp("saved") / "hydra")


def _prompt(hydra) -> list[H.Segment]:
    return H.translation_segments(hydra, TEXT, "en", "es").segments


def test_source_on_both_sides_reproduces_the_source_model(source, hydra):
    model, tok = source
    ids = tok(TEXT)["input_ids"]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0]
        reference = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
    got = hydra.logits([H.Segment("en", tuple(ids))], "en")
    assert got.shape == (len(ids), 49152)
    assert torch.equal(got, expected)  # bit for bit
    out = hydra.generate([H.Segment("en", tuple(ids))], "en", H.GenerationSettings(max_new_tokens=8), stop_ids=set())
    assert out.ids == reference


def test_each_language_reads_its_table_and_writes_with_its_head_only(hydra, target_tokenizer):
    es = hydra.languages["es"]
    assert es.vocab_size == len(target_tokenizer) == 800 and es.tied
    segments = _prompt(hydra) + [hydra.segment("es", "En el principio")]
    # Every input row comes from its own segment's table.
    rows = hydra.embed(segments)[0]
    ids = [(s.language, i) for s in segments for i in s.ids]
    assert rows.shape[0] == len(ids)
    for k in (0, len(ids) - 1, len(ids) - 3):
        lang, i = ids[k]
        assert torch.equal(rows[k], hydra.languages[lang].embeddings[i])
    with torch.no_grad():
        hidden = hydra.hidden(hydra.embed(segments))[0]
    logits = hydra.logits(segments, "es")
    assert logits.shape == (len(ids), 800)
    assert torch.equal(logits, F.linear(hidden, es.embeddings))
    # Change Spanish head row 7 only (the input reads English rows and Spanish rows ≠ 7): only column 7 moves.
    (row7,) = {7} - {i for s in segments if s.language == "es" for i in s.ids}
    head = es.head.clone()
    head[row7] += 0.5
    try:
        hydra.languages["es"] = dataclasses.replace(es, head=head)
        swapped = hydra.logits(segments, "es")
        # Swapping out the English head changes nothing in Spanish logits either.
        en = hydra.languages["en"]
        hydra.languages["en"] = dataclasses.replace(en, head=torch.zeros_like(en.head))
        assert torch.equal(hydra.logits(segments, "es"), swapped)
    finally:
        hydra.languages["es"], hydra.languages["en"] = es, en
    changed = (swapped != logits).any(dim=0).nonzero().flatten().tolist()
    assert changed == [row7]
    assert torch.allclose(swapped[:, row7] - logits[:, row7], 0.5 * hidden.sum(-1), atol=1e-4)


def test_mismatched_body_is_refused_naming_the_tensor(hydra, adapted_es, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "perturbed"
    shutil.copytree(adapted_es, bad)
    tensors = load_file(bad / "model.safetensors")
    tensors["model.layers.3.mlp.up_proj.weight"][0, 0] += 1e-3
    tensors["model.layers.20.self_attn.q_proj.weight"][0, 0] += 1e-3
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TweetyError, match=r"first at 'model\.layers\.3\.mlp\.up_proj\.weight'") as e:
        hydra.add_language("xx", bad)
    assert e.value.path == bad
    assert "xx" not in hydra.languages
    config = json.loads((bad / "config.json").read_text())
    config["num_hidden_layers"] = 29
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(TweetyError, match="num_hidden_layers is 29, not 30"):
        hydra.add_language("xx", bad)
    with pytest.raises(TweetyError, match="already has a language 'es'"):
        hydra.add_language("es", adapted_es)


def test_save_load_round_trip_and_languages_added_and_removed_later(hydra, saved, adapted_es):
    config = json.loads((saved / H.HYDRA_FILE).read_text())
    assert config["source"] == "en" and list(config["languages"]) == ["en", "es"]
    assert config["languages"]["es"] == {"tokenizer": "tokenizers/es", "weights": "languages/es.safetensors",
                                         "vocab_size": 800, "tied": True, "origin": str(adapted_es.resolve())}
    segments = _prompt(hydra) + [hydra.segment("es", "En el principio")]
    loaded = H.load_hydra(saved)
    assert tuple(loaded.languages["es"].tokenizer("la tierra")["input_ids"]) == hydra.segment("es", "la tierra").ids
    for lang in ("en", "es"):
        assert torch.equal(loaded.logits(segments, lang), hydra.logits(segments, lang))
    H.remove_language(saved, "es")
    assert not (saved / "languages" / "es.safetensors").exists()
    with pytest.raises(TweetyError, match="no language 'es'"):
        H.load_hydra(saved, languages=["es"])
    with pytest.raises(TweetyError, match="source language"):
        H.remove_language(saved, "en")
    H.add_language(saved, "es", adapted_es)
    assert torch.equal(H.load_hydra(saved).logits(segments, "es"), hydra.logits(segments, "es"))


def test_greedy_generation_equals_stepwise_argmax_and_stops(hydra):
    prompt = _prompt(hydra)
    # Reference: the whole sequence recomputed at each step (no KV cache), argmax of the Spanish head.
    reference: list[int] = []
    for _ in range(10):
        logits = hydra.logits(prompt + [H.Segment("es", tuple(reference))], "es")
        reference.append(int(logits[-1].argmax()))
    pieces: list[str] = []
    out = hydra.generate(prompt, "es", H.GenerationSettings(max_new_tokens=10), stop_ids=set(),
                         on_text=pieces.append)
    assert out.ids == reference and out.finish == "length"
    assert "".join(pieces) == out.text == hydra.languages["es"].tokenizer.decode(reference)
    # A stop token ends generation before it (and is not part of the output).
    k = next(i for i in range(2, 10) if reference[i] not in reference[:i])
    stopped = hydra.generate(prompt, "es", H.GenerationSettings(max_new_tokens=10), stop_ids={reference[k]})
    assert stopped.ids == reference[:k] and stopped.finish == "stop"
    # top_p that keeps only the best token is greedy, whatever the temperature; a real temperature samples.
    nucleus = hydra.generate(prompt, "es", H.GenerationSettings(max_new_tokens=10, temperature=1.5, top_p=1e-6),
                             stop_ids=set())
    assert nucleus.ids == reference
    hot = [hydra.generate(prompt, "es", H.GenerationSettings(max_new_tokens=10, temperature=1.5, seed=s),
                          stop_ids=set()).ids for s in (1, 1, 2)]
    assert hot[0] == hot[1] and hot[0] != hot[2]
    assert max(max(h) for h in hot) < 800


def test_cancel_stops_and_keeps_what_was_streamed(hydra):
    cancel = CancelToken()
    pieces: list[str] = []

    def stop_after_two(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 2:
            cancel.cancel()

    out = hydra.generate(_prompt(hydra), "es", H.GenerationSettings(max_new_tokens=30), stop_ids=set(),
                         on_text=stop_after_two, cancel=cancel)
    assert out.finish == "cancelled" and len(pieces) == 2 and out.text == "".join(pieces)
    assert 2 <= len(out.ids) < 30


def test_translation_prompt_is_the_chat_template(hydra, source):
    _, tok = source
    prompt = H.translation_segments(hydra, TEXT, "en", "es")
    rendered = tok.apply_chat_template([{"role": "user", "content": "Translate this English text into Spanish. "
                                         f"Reply with the translation only.\n\n{TEXT}"}],
                                       tokenize=False, add_generation_prompt=True)
    assert prompt.segments == [H.Segment("en", tuple(tok(rendered, add_special_tokens=False)["input_ids"]))]
    assert prompt.stop_strings == ("\n",)
    # Text in another language is read with its own table, between the English instruction and reply header.
    back = H.translation_segments(hydra, "la tierra", "es", "en")
    assert [s.language for s in back.segments] == ["en", "es", "en"]
    assert back.segments[1] == hydra.segment("es", "la tierra")
    assert tok.decode(back.segments[0].ids).endswith("Reply with the translation only.\n\n")
    assert tok.decode(back.segments[2].ids) == "<|im_end|>\n<|im_start|>assistant\n"


def test_translate_file_resumes_after_cancel(hydra, tmp_path):
    src = write_lines(tmp_path / "in.txt", ["In the beginning.", "", "And God said."])
    fresh = tmp_path / "fresh.txt"
    assert H.translate_file(hydra, src, fresh, "en", "es", max_new_tokens=6) == 3
    expected = fresh.read_text(encoding="utf-8")
    assert expected.count("\n") == 3 and expected.split("\n")[1] == "" and expected.split("\n")[0]

    out, cancel, seen = tmp_path / "out.txt", CancelToken(), []

    def stop_at_third_line(p) -> None:
        seen.append(p.message)
        if p.message.startswith("line 3"):
            cancel.cancel()

    with pytest.raises(Cancelled):
        H.translate_file(hydra, src, out, "en", "es", max_new_tokens=6, progress=stop_at_third_line, cancel=cancel)
    assert not out.exists()
    partial = tmp_path / ".out.txt.partial"
    assert len(partial.read_text(encoding="utf-8").splitlines()) == 1 + 2  # header + two lines done
    seen.clear()
    assert H.translate_file(hydra, src, out, "en", "es", max_new_tokens=6, progress=lambda p: seen.append(p.message))
    assert seen[0] == "resuming after line 2" and "line 1 of 3" not in seen
    assert out.read_text(encoding="utf-8") == expected and not partial.exists()


def test_cli_translate_with_a_hydra(saved, tmp_path):
    import subprocess
    import sys

    from core.cli import build_parser

    for args in ([], ["--gguf", "m.gguf", "--hydra", str(saved)]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["translate", *args, "--from", "en", "--to", "es", "x"])
    src = write_lines(tmp_path / "verses.en", ["And God said.", "And it was so."])
    r = subprocess.run([sys.executable, "-m", "core.cli", "translate", "--hydra", str(saved), "--from", "en", "--to",
                        "es", "--max-tokens", "6", "--input", str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Translated 2 lines" in r.stdout
    assert (tmp_path / "verses.en.es.txt").read_text(encoding="utf-8").count("\n") == 2
    bad = subprocess.run([sys.executable, "-m", "core.cli", "translate", "--hydra", str(saved), "--from", "en",
                          "--to", "fr", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no language 'fr'" in bad.stderr


def test_cli_builds_and_edits_a_hydra(adapted_es, tmp_path):
    from core.cli import main

    out = tmp_path / "hydra"

    def languages() -> set[str]:
        return set(json.loads((out / "hydra.json").read_text())["languages"])

    assert main(["hydra", "build", "--language", f"es={adapted_es}", "--out", str(out)]) == 0
    assert languages() == {"en", "es"}
    assert main(["hydra", "remove", "--hydra", str(out), "--language", "es"]) == 0
    assert languages() == {"en"} and not (out / "languages" / "es.safetensors").exists()
    assert main(["hydra", "add", "--hydra", str(out), "--language", f"es={adapted_es}"]) == 0
    assert languages() == {"en", "es"}
    assert main(["hydra", "add", "--hydra", str(out), "--language", "es"]) == 2  # not CODE=FOLDER
    assert main(["hydra", "remove", "--hydra", str(out), "--language", "en"]) == 2  # the source language stays


def test_gguf_with_merged_vocabulary_greedy_parity(hydra, saved, tmp_path):
    pytest.importorskip("llama_cpp")
    from conftest import demo_lines

    from core import runtime

    result = H.export_hydra_gguf(saved, tmp_path / "hydra.gguf")
    llm = runtime.load(result.path, runtime.RuntimeSettings(n_ctx=256, exact=True, threads=1))
    assert H.gguf_layout(llm) == {"en": {"offset": 0, "size": 49152}, "es": {"offset": 49152, "size": 800}}
    assert llm.n_vocab() == 49152 + 800
    for text in demo_lines("bible.heldout.en.gz", 3):
        segments = H.translation_segments(hydra, text, "en", "es").segments
        expected = hydra.generate(segments, "es", H.GenerationSettings(max_new_tokens=12), stop_ids=set()).ids
        assert H.generate_gguf(llm, segments, "es", max_new_tokens=12) == expected
    # English segments read the English rows of the merged table: en → en reproduces the source model.
    ids = H.Segment("en", tuple(hydra.segment("en", TEXT).ids))
    expected = hydra.generate([ids], "en", H.GenerationSettings(max_new_tokens=8), stop_ids=set()).ids
    assert H.generate_gguf(llm, [ids], "en", max_new_tokens=8) == expected
