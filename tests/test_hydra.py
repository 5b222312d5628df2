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
EXAMPLES = [
    ("And God saw the light, that it was good.", "Y vió Dios que la luz era buena."),
    ("And God called the light Day.", "Y llamó Dios á la luz Día."),
]


@pytest.fixture(scope="module")
def adapted_es(module_tmp, source, target_tokenizer):
    """SmolLM2 adapted to the 800-piece Spanish tokenizer (dictionary mapping), saved like `tweety init` does."""
    from core.init import initialise, save_adapted
    from core.mapping import build_mapping
    from core.resources import DictionaryEntry

    model, tok = source
    entries = [
        DictionaryEntry(en, es)
        for en, es in (
            ("God", "Dios"),
            ("earth", "tierra"),
            ("waters", "aguas"),
            ("light", "luz"),
            ("beginning", "principio"),
        )
    ]
    m = build_mapping(tok, target_tokenizer, dictionary=entries)
    out = module_tmp("hydra") / "es"
    save_adapted(initialise(copy.deepcopy(model), m), target_tokenizer, out)
    return out


@pytest.fixture(scope="module")
def hydra(source, adapted_es):
    return H.build_hydra(source, {"es": adapted_es})


@pytest.fixture(scope="module")
def saved(hydra, module_tmp):
    return H.save_hydra(hydra, module_tmp("saved") / "hydra")


def _prompt(hydra) -> list[H.Segment]:
    return H.translation_segments(hydra, TEXT, "en", "es").segments


def test_source_on_both_sides_reproduces_the_source_model(source, hydra):
    model, tok = source
    ids = tok(TEXT)["input_ids"]
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0]
        reference = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids) :].tolist()
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
        hydra.add(H.read_language(hydra, "xx", bad))
    assert e.value.path == bad
    assert "xx" not in hydra.languages
    config = json.loads((bad / "config.json").read_text())
    config["num_hidden_layers"] = 29
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(TweetyError, match="num_hidden_layers is 29, not 30"):
        hydra.add(H.read_language(hydra, "xx", bad))
    with pytest.raises(TweetyError, match="already has a language 'es'"):
        hydra.add(H.read_language(hydra, "es", adapted_es))


def test_save_load_round_trip_and_languages_added_and_removed_later(hydra, saved, adapted_es):
    config = json.loads((saved / H.HYDRA_FILE).read_text())
    assert config["source"] == "en" and list(config["languages"]) == ["en", "es"]
    assert config["languages"]["es"] == {
        "tokenizer": "tokenizers/es",
        "weights": "languages/es.safetensors",
        "vocab_size": 800,
        "tied": True,
        "origin": str(adapted_es.resolve()),
        "examples": [],
    }
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
    H.add_language(saved, "es", adapted_es, EXAMPLES)
    reloaded = H.load_hydra(saved)
    assert torch.equal(reloaded.logits(segments, "es"), hydra.logits(segments, "es"))
    assert reloaded.examples("en", "es") == EXAMPLES and reloaded.examples("es", "en") == [(t, s) for s, t in EXAMPLES]


def test_greedy_generation_equals_stepwise_argmax_and_stops(hydra):
    prompt = _prompt(hydra)
    # Reference: the whole sequence recomputed at each step (no KV cache), argmax of the Spanish head.
    reference: list[int] = []
    for _ in range(10):
        logits = hydra.logits(prompt + [H.Segment("es", tuple(reference))], "es")
        reference.append(int(logits[-1].argmax()))
    pieces: list[str] = []
    out = hydra.generate(prompt, "es", H.GenerationSettings(max_new_tokens=10), stop_ids=set(), on_text=pieces.append)
    assert out.ids == reference and out.finish == "length"
    assert "".join(pieces) == out.text == hydra.languages["es"].tokenizer.decode(reference)
    # A stop token ends generation before it (and is not part of the output).
    k = next(i for i in range(2, 10) if reference[i] not in reference[:i])
    stopped = hydra.generate(prompt, "es", H.GenerationSettings(max_new_tokens=10), stop_ids={reference[k]})
    assert stopped.ids == reference[:k] and stopped.finish == "stop"
    # top_p that keeps only the best token is greedy, whatever the temperature; a real temperature samples.
    nucleus = hydra.generate(
        prompt, "es", H.GenerationSettings(max_new_tokens=10, temperature=1.5, top_p=1e-6), stop_ids=set()
    )
    assert nucleus.ids == reference
    hot = [
        hydra.generate(
            prompt, "es", H.GenerationSettings(max_new_tokens=10, temperature=1.5, seed=s), stop_ids=set()
        ).ids
        for s in (1, 1, 2)
    ]
    assert hot[0] == hot[1] and hot[0] != hot[2]
    assert max(max(h) for h in hot) < 800


def test_cancel_stops_and_keeps_what_was_streamed(hydra):
    cancel = CancelToken()
    pieces: list[str] = []

    def stop_after_two(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 2:
            cancel.cancel()

    out = hydra.generate(
        _prompt(hydra),
        "es",
        H.GenerationSettings(max_new_tokens=30),
        stop_ids=set(),
        on_text=stop_after_two,
        cancel=cancel,
    )
    assert out.finish == "cancelled" and len(pieces) == 2 and out.text == "".join(pieces)
    assert 2 <= len(out.ids) < 30


def test_translation_prompt_is_the_chat_template(hydra, source):
    _, tok = source
    prompt = H.translation_segments(hydra, TEXT, "en", "es")
    rendered = tok.apply_chat_template(
        [
            {
                "role": "user",
                "content": f"Translate this English text into Spanish. Reply with the translation only.\n\n{TEXT}",
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
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

    with pytest.raises(Cancelled):  # one line at a time here (the fresh run above was one batch of 3): same lines
        H.translate_file(
            hydra, src, out, "en", "es", max_new_tokens=6, batch_size=1, progress=stop_at_third_line, cancel=cancel
        )
    assert not out.exists()
    partial = tmp_path / ".out.txt.partial"
    assert len(partial.read_text(encoding="utf-8").splitlines()) == 1 + 2  # header + two lines done
    seen.clear()
    assert H.translate_file(
        hydra, src, out, "en", "es", max_new_tokens=6, batch_size=1, progress=lambda p: seen.append(p.message)
    )
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
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.cli",
            "translate",
            "--hydra",
            str(saved),
            "--from",
            "en",
            "--to",
            "es",
            "--max-tokens",
            "6",
            "--input",
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Translated 2 lines" in r.stdout
    assert (tmp_path / "verses.en.es.txt").read_text(encoding="utf-8").count("\n") == 2
    bad = subprocess.run(
        [sys.executable, "-m", "core.cli", "translate", "--hydra", str(saved), "--from", "en", "--to", "fr", "x"],
        capture_output=True,
        text=True,
    )
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
    for text in demo_lines("bible.heldout.en.gz", 20):  # the acceptance: 20 held-out sentences
        segments = H.translation_segments(hydra, text, "en", "es").segments
        expected = hydra.generate(segments, "es", H.GenerationSettings(max_new_tokens=12), stop_ids=set()).ids
        assert H.generate_gguf(llm, segments, "es", max_new_tokens=12) == expected
    # English segments read the English rows of the merged table: en → en reproduces the source model.
    ids = H.Segment("en", tuple(hydra.segment("en", TEXT).ids))
    expected = hydra.generate([ids], "en", H.GenerationSettings(max_new_tokens=8), stop_ids=set()).ids
    assert H.generate_gguf(llm, [ids], "en", max_new_tokens=8) == expected


def test_few_shot_prompt_reads_each_text_with_its_own_table(hydra, source):
    _, tok = source
    prompt = H.translation_segments(hydra, TEXT, "en", "es", EXAMPLES)
    # English runs (labels and English texts, tokenized together) alternate with the Spanish example replies.
    assert [s.language for s in prompt.segments] == ["en", "es", "en", "es", "en"]
    assert prompt.segments[1] == hydra.segment("es", f" {EXAMPLES[0][1]}")
    assert tok.decode(prompt.segments[0].ids) == f"English: {EXAMPLES[0][0]}\nSpanish:"
    assert tok.decode(prompt.segments[-1].ids) == f"\n\nEnglish: {TEXT}\nSpanish:"
    back = H.translation_segments(hydra, "la tierra", "es", "en", [(t, s) for s, t in EXAMPLES])
    assert [s.language for s in back.segments] == ["en", "es", "en", "es", "en", "es", "en"]
    assert (
        H.choose_examples(
            ["short", "In the beginning was the Word."] * 3, ["corto", "En el principio era el Verbo."] * 3, k=2
        )
        == [("In the beginning was the Word.", "En el principio era el Verbo.")] * 2
    )


def test_batched_generation_equals_one_at_a_time(hydra):
    texts = ["And God said.", TEXT, "And the evening and the morning were the first day, and it was so."]
    prompts = [H.translation_segments(hydra, t, "en", "es", EXAMPLES).segments for t in texts]
    settings = H.GenerationSettings(max_new_tokens=12)
    alone = [hydra.generate(p, "es", settings, stop_ids=set()) for p in prompts]
    together = hydra.generate_batch(prompts, "es", settings, stop_ids=set(), limits=[12, 5, 12])
    assert together[0].ids == alone[0].ids and together[2].ids == alone[2].ids
    assert together[1].ids == alone[1].ids[:5] and together[1].finish == "length"
    # no_repeat_ngram: the greedy reply of a barely trained table loops; with the ban no bigram comes twice.
    looping = hydra.generate(prompts[1], "es", H.GenerationSettings(max_new_tokens=40), stop_ids=set()).ids
    banned = hydra.generate(
        prompts[1], "es", H.GenerationSettings(max_new_tokens=40, no_repeat_ngram=2), stop_ids=set()
    ).ids
    bigrams = lambda ids: list(zip(ids, ids[1:]))  # noqa: E731
    assert len(set(bigrams(looping))) < len(bigrams(looping))
    assert len(set(bigrams(banned))) == len(bigrams(banned)) == 39
    assert H.translate_batch(hydra, [texts[0], "", texts[1]], "en", "es", max_new_tokens=6, examples=EXAMPLES) == [
        H.translate(hydra, texts[0], "en", "es", max_new_tokens=6, examples=EXAMPLES),
        "",
        H.translate(hydra, texts[1], "en", "es", max_new_tokens=6, examples=EXAMPLES),
    ]


def test_finetune_language_trains_only_that_language_and_learns(source, adapted_es):
    hydra = H.build_hydra(source, {"es": adapted_es}, examples={"es": EXAMPLES})
    body = {k: v.clone() for k, v in hydra.model.state_dict().items()}
    english = hydra.languages["en"].embeddings.clone()
    before = hydra.languages["es"].embeddings.clone()
    pair = ("And there was light.", "Y fué la luz.")
    losses = H.finetune_language(
        hydra, "es", [pair], H.HydraTuning(steps=8, batch_size=1, lr=3e-3, warmup_steps=1, untie=False)
    )
    assert losses[-1] < 0.5 * losses[0]
    after = hydra.languages["es"]
    assert after.tied and after.head is after.embeddings and not after.embeddings.requires_grad
    assert not torch.equal(after.embeddings, before)  # (the tied head's softmax reaches every row)
    assert torch.equal(hydra.languages["en"].embeddings, english)
    assert all(torch.equal(v, body[k]) for k, v in hydra.model.state_dict().items())
    # A cancelled tuning leaves the tables as they were.
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        H.finetune_language(
            hydra, "es", [pair], H.HydraTuning(steps=5, batch_size=1), progress=lambda p: cancel.cancel(), cancel=cancel
        )
    assert hydra.languages["es"] is after
    with pytest.raises(TweetyError, match="source language"):
        H.finetune_language(hydra, "en", [pair])


def test_a_stopped_tuning_continues_from_its_checkpoint_to_the_same_tables(source, adapted_es, tmp_path):
    """Cancelled after 3 of 8 steps (the last periodic checkpoint was at 2, so the cancel keeps step 3) and run
    again with the same checkpoint folder: tables, optimizer moments and pair order come back, and the run ends
    where an uninterrupted one does. Other settings, or a checkpoint that cannot be read, start over and say why."""
    pairs = [("And there was light.", "Y fué la luz."), ("And God said,", "Y dijo Dios,"), ("the earth", "la tierra")]
    settings = H.HydraTuning(steps=8, batch_size=2, warmup_steps=1, checkpoint_every=2)

    def fresh() -> H.Hydra:
        return H.build_hydra(source, {"es": adapted_es}, examples={"es": EXAMPLES})

    whole = fresh()
    expected = H.finetune_language(whole, "es", pairs, settings)
    ckpt, stopped, cancel = tmp_path / "tuning", fresh(), CancelToken()
    before = stopped.languages["es"]
    with pytest.raises(Cancelled):
        H.finetune_language(
            stopped,
            "es",
            pairs,
            settings,
            checkpoint=ckpt,
            cancel=cancel,
            progress=lambda p: p.done >= 3 and cancel.cancel(),
        )
    assert stopped.languages["es"] is before  # the Hydra as it was; the steps are in the checkpoint
    kept = H.tuning_checkpoint(ckpt)
    assert (kept.step, kept.steps) == (3, 8) and kept.losses == pytest.approx(expected[:3], rel=1e-5)
    assert {f.name for f in ckpt.iterdir()} == {
        ".tweety",
        "state.json",
        "optimizer.json",
        "tables.safetensors",
        "optimizer.safetensors",
    }  # no pickle anywhere

    resumed, said = fresh(), []
    losses = H.finetune_language(resumed, "es", pairs, settings, checkpoint=ckpt, progress=said.append)
    assert said[0].message == "continuing from step 3 of 8, where it stopped"
    assert losses == pytest.approx(expected, rel=1e-4)
    for table in ("embeddings", "head"):
        torch.testing.assert_close(getattr(resumed.languages["es"], table), getattr(whole.languages["es"], table))

    said.clear()  # the checkpoint now holds step 6 of the resumed run
    other = H.finetune_language(
        fresh(), "es", pairs, dataclasses.replace(settings, lr=1e-3), checkpoint=ckpt, progress=said.append
    )
    assert (
        said[0].message
        == (
            "the tuning stopped at step 6 of 8 had other settings — the learning rate (0.003, now 0.001): starting over"
        )
        and len(other) == 8
    )
    (ckpt / "tables.safetensors").write_bytes(b"torn")
    said.clear()
    H.finetune_language(
        fresh(), "es", pairs, dataclasses.replace(settings, steps=1), checkpoint=ckpt, progress=said.append
    )
    assert "cannot be read" in said[0].message and said[0].message.endswith("starting over")


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"lr": 0.0}, "learning rate must be positive"),
        ({"lr": -1e-3}, "learning rate must be positive"),
    ],
)
def test_tuning_settings_are_checked_in_plain_words(bad, words):
    """`tweety hydra finetune --steps 0` ended in a ZeroDivisionError: the settings are refused before any work
    (no Hydra is needed to see it: the check comes first)."""
    with pytest.raises(TweetyError, match=words):
        H.HydraTuning(**bad).check()
    with pytest.raises(TweetyError, match=words):
        H.finetune_language(None, "es", [("a", "b")], H.HydraTuning(**bad))
    H.HydraTuning().check()


def test_runtime_reads_the_gguf_header_once_per_model_not_per_line(tmp_path, monkeypatch):
    """runtime.translate asked for the model card (whose languages come from parsing the GGUF header, token list
    included) on every line of a file translation; the card is read once per loaded model."""
    from core import models, runtime

    reads = []

    def header(path, stop_at=None, lists=frozenset()):
        reads.append(path)
        return {}

    class Llama:  # the parts of llama_cpp.Llama that translation uses; replies "<line> (es)"
        metadata = {"general.name": "base model"}
        model_path = str(tmp_path / "m.gguf")

        def n_vocab(self):
            return 100

        def n_ctx(self):
            return 512

        def create_completion(self, prompt, **kw):
            yield {"choices": [{"text": " " + prompt.split("\n")[0].removeprefix("English: ") + " (es)\n"}]}

    monkeypatch.setattr(models, "gguf_header", header)
    src = write_lines(tmp_path / "in.txt", ["one", "two", "", "three", "four"])
    llm = Llama()
    assert runtime.translate_file(llm, src, tmp_path / "out.txt", "en", "es") == 5
    assert (tmp_path / "out.txt").read_text().splitlines() == ["one (es)", "two (es)", "", "three (es)", "four (es)"]
    assert runtime.translate(llm, "five", "en", "es") == "five (es)"
    assert len(reads) == 1
    assert runtime.model_card(Llama()).prompt == "base" and len(reads) == 2  # another loaded model: read again


def test_tuning_batch_loss_is_the_mean_of_each_pairs_loss(hydra):
    pairs = [
        ("And there was light.", "Y fué la luz."),
        (TEXT, "En el principio crió Dios los cielos y la tierra."),
        ("God.", "Dios."),
    ]
    with torch.no_grad():
        batched = H.reply_loss(hydra, "es", pairs)
        alone = [H.reply_loss(hydra, "es", [p]) for p in pairs]
    assert len({round(float(x), 2) for x in alone}) == 3  # three different losses, so the mean is a real check
    assert float(batched) == pytest.approx(sum(float(x) for x in alone) / 3, rel=1e-5)


def test_untied_tuning_gives_a_language_its_own_head_saved_and_loaded(source, adapted_es, tmp_path):
    from safetensors.torch import load_file

    folder = H.save_hydra(H.build_hydra(source, {"es": adapted_es}, examples={"es": EXAMPLES}), tmp_path / "h")
    hydra = H.load_hydra(folder)
    before = hydra.languages["es"].embeddings.clone()
    pair = ("And there was light.", "Y fué la luz.")
    losses = H.finetune_language(hydra, "es", [pair], H.HydraTuning(steps=6, batch_size=1, lr=3e-3, warmup_steps=1))
    assert losses[-1] < losses[0]
    es = hydra.languages["es"]
    assert not es.tied and not torch.equal(es.head, es.embeddings)
    assert not torch.equal(es.head, before) and not torch.equal(es.embeddings, before)
    H.save_language(folder, hydra, "es")
    assert set(load_file(str(folder / "languages" / "es.safetensors"))) == {"embed_tokens", "lm_head"}
    again = H.load_hydra(folder).languages["es"]
    assert torch.equal(again.embeddings, es.embeddings) and torch.equal(again.head, es.head)
    # The merged-vocabulary GGUF stacks the untied heads too: llama.cpp's greedy tokens equal the Hydra's.
    pytest.importorskip("llama_cpp")
    from core import runtime

    gguf = H.export_hydra_gguf(folder, tmp_path / "h.gguf").path
    prompt = H.translation_segments(hydra, TEXT, "en", "es").segments
    expected = hydra.generate(prompt, "es", H.GenerationSettings(max_new_tokens=6), stop_ids=set()).ids
    llm = runtime.load(gguf, runtime.RuntimeSettings(n_ctx=512, exact=True, threads=1))
    assert H.generate_gguf(llm, prompt, "es", max_new_tokens=6) == expected


def test_cli_tunes_a_saved_hydra_by_back_translation(adapted_es, tmp_path):
    from safetensors.torch import load_file

    from core.cli import main

    out = tmp_path / "hydra"
    src = write_lines(tmp_path / "ex.en", [s for s, _ in EXAMPLES] * 3)
    tgt = write_lines(tmp_path / "ex.es", [t for _, t in EXAMPLES] * 3)
    assert (
        main(
            [
                "hydra",
                "build",
                "--language",
                f"es={adapted_es}",
                "--examples",
                "es",
                str(src),
                str(tgt),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    config = json.loads((out / H.HYDRA_FILE).read_text())
    assert [tuple(p) for p in config["languages"]["es"]["examples"]] == [EXAMPLES[0]] * 3  # lines 1, 3, 5 of 6
    before = load_file(out / "languages" / "es.safetensors")["embed_tokens"]
    assert (
        main(
            [
                "hydra",
                "finetune",
                "--hydra",
                str(out),
                "--language",
                "es",
                "--back-translate",
                str(tgt),
                "--lines",
                "2",
                "--steps",
                "2",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    tuned = json.loads((out / H.HYDRA_FILE).read_text())["languages"]["es"]["tuned"]
    assert tuned["pairs"] == 2 and tuned["from"] == "back-translation" and tuned["steps"] == 2 and tuned["untied"]
    stored = load_file(out / "languages" / "es.safetensors")
    assert not torch.equal(stored["embed_tokens"], before) and not torch.equal(stored["lm_head"], before)
