"""Generation that behaves (core.runtime): replies end, loops stop, a translation is one line of sensible length,
threads leave a core free, tokens/s is measured — on stand-in models (no GGUF needed) — and the words the wizard
uses to explain results (core.evaluate.verdict, fine-tuning estimates)."""

from __future__ import annotations

import pytest

from core import runtime
from core.jobs import CancelToken


def chunks(pieces, finish=None):
    for i, p in enumerate(pieces):
        yield {
            "choices": [{"text": p, "delta": {"content": p}, "finish_reason": finish if i == len(pieces) - 1 else None}]
        }


class Llama:
    """The parts of llama_cpp.Llama that chat and translation use; replies with `pieces` and records its kwargs."""

    metadata = {"general.name": "stand-in", "tokenizer.chat_template": "{{ x }}"}
    model_path = "stand-in.gguf"

    def __init__(self, pieces, finish="stop"):
        self.pieces, self.finish, self.calls = pieces, finish, []

    def n_vocab(self):
        return 100

    def n_ctx(self):
        return 512

    def tokenize(self, data: bytes, add_bos=False):
        return data.split()

    def create_chat_completion(self, messages, **kw):
        self.calls.append({**kw, "messages": messages})
        return chunks(self.pieces, self.finish)

    def create_completion(self, prompt, **kw):
        self.calls.append(kw)
        return chunks(self.pieces, self.finish)


def test_threads_leave_one_physical_core_free():
    assert runtime.default_threads() == max(1, runtime.physical_cores() - 1)
    assert runtime.RuntimeSettings().threads is None  # None: resolved to default_threads() when loading


def test_chat_asks_for_an_end_of_turn_a_limit_and_repetition_control():
    llm = Llama(["Hola", ",", " amigo", "."])
    stats = runtime.GenerationStats()
    chat = runtime.Chat(llm)
    assert chat.send("Hola", stats=stats) == "Hola, amigo."
    kw = llm.calls[0]
    assert kw["max_tokens"] == runtime.RuntimeSettings().max_tokens == 256
    assert kw["repeat_penalty"] > 1 and "<|im_end|>" in kw["stop"] and "\nUser:" in kw["stop"]
    assert stats.tokens == 4 and stats.finish == "stop" and stats.tokens_per_s >= 0
    assert [m["role"] for m in kw["messages"]] == ["user"]  # the template's own default system prompt


def test_a_replaced_vocabulary_chats_with_an_empty_system_turn():
    """The template's English default system prompt, read through a new language's pieces, was copied into replies:
    a fine-tuned model whose vocabulary was replaced gets an empty system turn; the user's own system prompt wins. A
    model only adapted keeps the default (an empty system turn left a third of its replies empty)."""
    adapted = Llama(["Hola"])
    adapted.metadata = {**Llama.metadata, "tweety.vocabulary": "replace"}
    runtime.Chat(adapted).send("Hola")
    assert [m["role"] for m in adapted.calls[-1]["messages"]] == ["user"]
    llm = Llama(["Hola"])
    llm.metadata = {**Llama.metadata, "tweety.vocabulary": "replace", "tweety.finetune": "embeddings, 300 steps"}
    runtime.Chat(llm).send("Hola")
    assert llm.calls[-1]["messages"][0] == {"role": "system", "content": ""}
    runtime.Chat(llm, system="Eres un poeta.").send("Hola")
    assert llm.calls[-1]["messages"][0] == {"role": "system", "content": "Eres un poeta."}
    extended = Llama(["Hola"])
    extended.metadata = {**Llama.metadata, "tweety.vocabulary": "extend"}
    runtime.Chat(extended).send("Hola")
    assert [m["role"] for m in extended.calls[-1]["messages"]] == ["user"]


def test_a_reply_going_round_in_circles_stops():
    loop = ["La", " sol,", " la", " mar,"] * 20
    llm = Llama(loop, finish="length")
    stats = runtime.GenerationStats()
    pieces: list[str] = []
    reply = runtime.Chat(llm).send("Canta", on_text=pieces.append, stats=stats)
    assert stats.finish == "repeat" and stats.tokens < 20 and reply == "".join(pieces)
    assert runtime.repeats("a b c d x a b c d y a b c d") and not runtime.repeats("one two three four five six")


def test_a_reply_at_its_limit_says_so_and_cancel_says_cancelled():
    stats = runtime.GenerationStats()
    runtime.Chat(Llama(["uno", " dos", " tres"], finish="length")).send("x", stats=stats)
    assert stats.finish == "length"
    cancel = CancelToken()
    stats = runtime.GenerationStats()
    runtime.Chat(Llama(["uno", " dos", " tres"])).send(
        "x", stats=stats, cancel=cancel, on_text=lambda _t: cancel.cancel()
    )
    assert stats.finish == "cancelled" and stats.tokens == 1


@pytest.mark.parametrize(
    "pieces, expected",
    [
        (["\n", "Hola", " mundo\nmás"], "Hola mundo"),  # a reply that opens with a line break is not empty
        (["Hola\n", "x"], "Hola"),
        (["ab", "c"], "abc"),
    ],
)
def test_a_translation_is_one_line(pieces, expected, monkeypatch):
    from core import models

    monkeypatch.setattr(models, "gguf_header", lambda path, **kw: {})  # the stand-in has no file: no languages
    streamed: list[str] = []
    llm = Llama(pieces)
    assert runtime.translate(llm, "Hello world", "en", "es", on_text=streamed.append) == expected
    assert "".join(streamed).strip() == expected
    kw = llm.calls[0]
    assert kw["max_tokens"] == runtime.translation_limit(llm, "Hello world", 256) == 2 * 2 + 16
    assert kw["repeat_penalty"] > 1


def test_plain_model_directions_pair_the_source_language_with_the_files_languages():
    card = runtime.ModelCard(name="m", languages=("es", "ca"), prompt="chat", vocab_size=100, context=512)
    assert runtime.translation_directions(card) == [("en", "es"), ("es", "en"), ("en", "ca"), ("ca", "en")]
    assert runtime.translation_directions(runtime.ModelCard(name="m", prompt="chat")) == []


def test_stats_measure_tokens_per_second():
    import time

    stats = runtime.GenerationStats()
    for _ in range(5):
        stats.count()
        time.sleep(0.01)
    assert stats.tokens == 5 and 20 < stats.tokens_per_s < 110  # 4 intervals of ~10 ms


def test_verdict_says_better_or_worse_by_how_much_with_how_many_fewer_tokens():
    from core.evaluate import verdict

    results = {
        "source model": {"bits_per_byte": 2.024, "tokens_per_byte": 0.378},
        "adapted model": {"bits_per_byte": 2.129, "tokens_per_byte": 0.241},
        "fine-tuned model": {"bits_per_byte": 1.843, "tokens_per_byte": 0.241},
    }
    text = verdict(results, "the first 16,000 bytes of the held-out text", "Spanish")
    assert text.startswith("Your fine-tuned model reads Spanish 9% better than the source model (1.843 against 2.024")
    assert "the first 16,000 bytes" in text and text.endswith("with 36% fewer tokens.")
    del results["fine-tuned model"]
    text = verdict(results)
    assert "adapted model (not fine-tuned yet) reads this text 5% worse" in text and "Fine-tuning" in text
    assert verdict({"source model": results["source model"]}) == ""


def test_overall_progress_runs_once_over_all_models():
    from core.evaluate import OverallProgress
    from core.jobs import Progress

    seen = []
    overall = OverallProgress(seen.append, ["source model", "adapted model"])
    for _model in range(2):
        for done in (0, 8, 16):
            overall(Progress("Evaluating", done, 16, "window"))
    fractions = [p.done / p.total for p in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1
    assert seen[3].message.startswith("model 2 of 2: adapted model")


def test_finetune_estimate_counts_tokens_and_held_out_measurements():
    from core.finetune import PRESETS, FinetuneSettings, estimate_seconds

    s = FinetuneSettings(steps=100, batch_size=4, block_size=128, eval_every=50)
    assert estimate_seconds(s, 512) == pytest.approx(100.0)  # 51,200 tokens at 512/s, no held-out text
    assert estimate_seconds(s, 512, heldout_tokens=1536) == pytest.approx(100 + 3 * 1.0)  # before, at 50, at 100
    quick = estimate_seconds(PRESETS["quick"], 200, heldout_tokens=2400, eval_tokens_per_s=330)
    assert 4 * 60 < quick < 6 * 60  # "Quick look — about 5 min on this computer"


def test_sample_continuation_prompts_come_from_long_lines():
    from core.evaluate import prompts_from

    text = "\n".join(["corta", *(f"línea {i} " + "palabra " * 12 for i in range(9))])
    prompts = prompts_from(text, 3, words=4)
    assert prompts == ["línea 0 palabra palabra", "línea 3 palabra palabra", "línea 6 palabra palabra"]
