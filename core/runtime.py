"""Running an exported GGUF locally with llama-cpp-python: chat, greedy completion and translation (text or file).

llama-cpp-python is imported lazily, so the rest of Tweety Studio works without it; a missing install is a clear
`TweetyError`. Generation streams text through an `on_text` callback and stops at the next token once the cancel token
is set, keeping what was generated so far.

Defaults that make a small adapted model behave (issue 22): a reply ends at the end of its turn (the template's
end-of-turn token, or a line that starts the next speaker's turn), at `max_tokens`, or once it starts repeating
itself (a repeat penalty, and a guard that stops a reply whose word 4-grams recur); a translation is one line, at most
about twice the source's tokens. llama.cpp runs on physical cores minus one: its threads spin while they wait, and
with as many threads as cores anything else running stalls them all (30 tokens: 17 s with 2 threads, 0.5 s with 1 on
a busy 2-core machine; benchmarks/generation.py).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn
from core import models
from core.models import ModelCard
from core.resources import read_lines

# Shared with Hydra models (core.hydra), which translate without llama.cpp; re-exported here for older callers.
from core.translation import (  # noqa: F401
    LANGUAGES,
    few_shot_prompt,
    language_name,
    translate_lines_to_file,
    translation_prompt,
)

TextFn = Callable[[str], None]

# Where a chat reply has ended even when the model never writes its end-of-turn token: the template's own markers, and
# a line that opens the next turn.
CHAT_STOPS = [
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "</s>",
    "\nYou:",
    "\nUser:",
    "\nuser\n",
]
REPEAT_NGRAM = 4  # a reply whose word 4-gram comes back a third time has started looping: it stops there


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads counted once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        try:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add(
                ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
            )
        except OSError:
            cores.add(("cpu", str(cpu)))
    if not cores:
        try:
            import psutil

            return max(1, psutil.cpu_count(logical=False) or 1)
        except ImportError:
            return max(1, (os.cpu_count() or 2) // 2)
    return len(cores)


def default_threads() -> int:
    """llama.cpp threads by default: physical cores minus one, at least 1 — one core stays free for the GUI and
    whatever else runs, which keeps llama.cpp's spinning threads from stalling (see the module's docstring)."""
    return max(1, physical_cores() - 1)


@dataclass(frozen=True)
class RuntimeSettings:
    n_ctx: int = 2048
    threads: int | None = None  # None: default_threads() (physical cores minus one)
    exact: bool = False  # F32 KV cache and every position's logits kept (parity checks), slower and bigger
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 256  # longest chat reply
    repeat_penalty: float = 1.15  # > 1: tokens already in the context are less likely (1: off)
    seed: int = 0


@dataclass
class GenerationStats:
    """How a generation went, filled in while it streams: tokens so far, seconds since the first token, and why it
    ended ("stop": end of turn or a stop string, "length": the token limit, "repeat": it began to loop,
    "cancelled")."""

    tokens: int = 0
    seconds: float = 0.0
    finish: str = ""
    _first: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / self.seconds if self.tokens > 1 and self.seconds > 0 else 0.0

    def count(self) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        self.tokens += 1
        self.seconds = now - self._first


def load(path: str | Path, settings: RuntimeSettings = RuntimeSettings()):
    """A `llama_cpp.Llama` for the GGUF at `path`."""
    try:
        import llama_cpp
    except ImportError:
        raise TweetyError(
            "the local runtime (llama-cpp-python) is not installed",
            fix="install llama-cpp-python (README › Installing the runtime)",
        ) from None
    path = Path(path)
    if not path.is_file():
        raise TweetyError("GGUF file not found", path=path, fix="export the model to a GGUF file first")
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise TweetyError("not a GGUF file", path=path, fix="choose a .gguf file written by Tweety Studio's export")
    kw = {"type_k": 0, "type_v": 0, "logits_all": True} if settings.exact else {}
    try:
        threads = settings.threads or default_threads()
        return llama_cpp.Llama(
            str(path),
            n_ctx=settings.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            seed=settings.seed,
            verbose=False,
            **kw,
        )
    except (ValueError, RuntimeError) as e:
        raise TweetyError(f"llama.cpp cannot load this file ({e})", path=path, fix="export the model again") from None


# One card per loaded model: reading general.languages parses the GGUF header, token list included (~1 s for a
# 128k vocabulary), and translate() needs the card for every line of a file. Weak keys: the card goes with the model.
_cards: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_card(llm) -> ModelCard:
    """What the chat window shows about `llm` (its name, languages, translation prompt, vocabulary, context and
    source model), read once per loaded model."""
    try:
        return _cards[llm]
    except (KeyError, TypeError):  # TypeError: an object without weak references (a stand-in model) is not cached
        pass
    md = llm.metadata  # llama.cpp leaves arrays out of it; general.languages is read from the file itself
    name = md.get("general.name", "model")
    template = md.get("tokenizer.chat_template")
    prompt = "tower" if "tower" in name.lower() else "chat" if template else "base"
    card = ModelCard(
        name=name,
        languages=_languages(llm.model_path),
        prompt=prompt,
        vocab_size=llm.n_vocab(),
        context=llm.n_ctx(),
        source_model=md.get("tweety.source_model"),
    )
    try:
        _cards[llm] = card
    except TypeError:
        pass
    return card


def _languages(path: str) -> tuple[str, ...]:
    return tuple(models.gguf_header(path, lists=frozenset({"general.languages"})).get("general.languages") or ())


def repeats(text: str, n: int = REPEAT_NGRAM, times: int = 3) -> bool:
    """True when the last word n-gram of `text` occurs `times` times in it: the reply is going round in circles."""
    words = text.split()
    if len(words) < n * times:
        return False
    last = words[-n:]
    return sum(words[i : i + n] == last for i in range(len(words) - n + 1)) >= times


def _stream(
    chunks: Iterable[dict],
    key: Callable[[dict], str | None],
    on_text: TextFn | None,
    cancel: CancelToken | None,
    stats: GenerationStats | None = None,
    guard: bool = True,
    one_line: bool = False,
) -> str:
    """Collect streamed text, forwarding each piece; on cancel, or once the text repeats itself (`guard`), stop
    reading (closing the generator stops llama.cpp). `one_line`: the text ends at its first line break after some
    text (a chat model's translation: a stop string "\n" would end a reply that opens with a line break). `stats`
    follows along."""
    stats = stats if stats is not None else GenerationStats()
    out = []
    for chunk in chunks:
        if cancel is not None and cancel.cancelled:
            stats.finish = "cancelled"
            chunks.close()
            break
        choice = chunk["choices"][0]
        text = key(chunk) or ""
        if text:  # a chat stream opens with a role-only chunk and ends with an empty one: not tokens
            stats.count()
        so_far = "".join(out)
        combined = so_far + text
        lead = len(combined) - len(combined.lstrip())  # the reply's leading whitespace, line breaks included
        end = combined.find("\n", lead) if one_line and lead < len(combined) else -1
        if end >= 0:
            text = combined[len(so_far) : end]
            if text:
                out.append(text)
                if on_text is not None:
                    on_text(text)
            stats.finish = "stop"
            if hasattr(chunks, "close"):
                chunks.close()
            break
        if text:
            out.append(text)
            if on_text is not None:
                on_text(text)
        if choice.get("finish_reason"):
            stats.finish = choice["finish_reason"]
        if guard and text and repeats("".join(out)):
            stats.finish = "repeat"
            if hasattr(chunks, "close"):
                chunks.close()
            break
    if not stats.finish:
        stats.finish = "stop"
    return "".join(out)


def complete(
    llm,
    prompt: str | list[int],
    *,
    max_tokens: int = 32,
    temperature: float = 0.0,
    stop: list[str] | None = None,
    repeat_penalty: float = 1.0,
    on_text: TextFn | None = None,
    cancel: CancelToken | None = None,
    stats: GenerationStats | None = None,
) -> str:
    """Continue `prompt` (text, or token ids exactly as given); temperature 0 is greedy. Plain completion keeps the
    model's own distribution (repeat penalty off, no loop guard) unless asked."""
    chunks = llm.create_completion(
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=1 if temperature == 0 else 40,
        stop=stop or [],
        stream=True,
        repeat_penalty=repeat_penalty,
    )
    return _stream(chunks, lambda c: c["choices"][0]["text"], on_text, cancel, stats, guard=repeat_penalty != 1.0)


@dataclass
class Chat:
    """A conversation with the model; the GGUF's chat template is applied by llama-cpp-python."""

    llm: object
    settings: RuntimeSettings = RuntimeSettings()
    system: str | None = None
    history: list[dict] = field(default_factory=list)

    def send(
        self,
        text: str,
        *,
        on_text: TextFn | None = None,
        cancel: CancelToken | None = None,
        stats: GenerationStats | None = None,
    ) -> str:
        """The model's reply to `text`, streamed through `on_text`; it ends at the end of the model's turn, at
        `settings.max_tokens`, or when it starts repeating itself (`stats.finish` says which)."""
        system = self.system or default_system(self.llm)
        messages = (
            ([{"role": "system", "content": system}] if system is not None else [])
            + self.history
            + [{"role": "user", "content": text}]
        )
        chunks = self.llm.create_chat_completion(
            messages,
            stream=True,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            max_tokens=self.settings.max_tokens,
            repeat_penalty=self.settings.repeat_penalty,
            stop=CHAT_STOPS,
            seed=self.settings.seed,
            logit_bias=never_in_a_reply(self.llm),
        )
        reply = _stream(chunks, lambda c: c["choices"][0]["delta"].get("content"), on_text, cancel, stats)
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        return reply

    def reset(self) -> None:
        self.history.clear()


def default_system(llm) -> str | None:
    """The system prompt of a conversation the user gave none: the template's own default (None), except for a
    fine-tuned model whose vocabulary was replaced — an empty one. Such a model reads the template's English default
    ("You are a helpful AI assistant named SmolLM, …") through pieces of its new language, and copied it into 17 of
    60 Chat-page replies (docs/results/chat.md); with an empty system turn, none of 60 (59 of 60 still ended by
    themselves, none empty). A model only adapted, not fine-tuned, keeps the default: with an empty system turn 19 of
    its 60 replies were empty (2 with the default)."""
    # tweety.vocabulary ("replace" | "extend") and tweety.finetune: absent from other GGUFs (and tweety.vocabulary
    # from ours exported before it was written)
    md = llm.metadata
    return "" if md.get("tweety.vocabulary") == "replace" and md.get("tweety.finetune") else None


# Tokens that open a turn: a reply holding one has ended without its end-of-turn token and goes on with the next
# turn's role name ("user\n…", 4 of 60 replies of the demo's fine-tuned model; "<|im_start|>" is a stop string, but
# llama.cpp matches stop strings on text, where a control token is empty).
TURN_STARTS = ("<|im_start|>", "<start_of_turn>", "<|start_header_id|>")


def never_in_a_reply(llm) -> dict[int, float]:
    """A logit bias that keeps `TURN_STARTS` out of a reply: the model ends its turn instead (none of 60 replies then
    held another turn, and all 60 still ended by themselves)."""
    ids = set()
    for text in TURN_STARTS:
        try:
            found = llm.tokenize(text.encode(), add_bos=False, special=True)
        except (AttributeError, TypeError):  # a stand-in model without special tokens
            continue
        if len(found) == 1:
            ids.add(int(found[0]))
    return {i: -100.0 for i in sorted(ids)}


def translation_limit(llm, text: str, max_tokens: int) -> int:
    """A translation's length limit: at most about twice the text's own tokens (+16), so one that never ends stops
    early (the Hydra's rule, core.hydra.prompt.reply_limit)."""
    try:
        n = len(llm.tokenize(text.encode("utf-8"), add_bos=False))
    except (AttributeError, TypeError):  # a stand-in model without a tokenizer
        n = len(text.encode("utf-8")) // 2
    return min(max_tokens, 2 * n + 16)


def translation_directions(card: ModelCard, source_language: str = "en") -> list[tuple[str, str]]:
    """The (from, to) pairs a plain model's translation prompt supports: between its source model's language and
    each language the file names (both ways)."""
    others = [code for code in card.languages if code != source_language]
    return [pair for code in others for pair in ((source_language, code), (code, source_language))]


def translate(
    llm,
    text: str,
    source: str,
    target: str,
    *,
    max_tokens: int = 256,
    on_text: TextFn | None = None,
    cancel: CancelToken | None = None,
    repeat_penalty: float = RuntimeSettings.repeat_penalty,
    examples: list[tuple[str, str]] | None = None,
    stats: GenerationStats | None = None,
) -> str:
    """Greedy translation of one text (one line or paragraph): one line, at most `translation_limit` tokens, with
    the repeat penalty and loop guard on. With `examples` (a translation memory's closest pairs) the prompt is those
    pairs, then the text (core.translation.few_shot_prompt), whatever the model's family."""
    prompt = (
        few_shot_prompt(source, target, examples, text)
        if examples
        else translation_prompt(model_card(llm).prompt, source, target, text)
    )
    limit = translation_limit(llm, text, max_tokens)
    if isinstance(prompt, str):
        return complete(
            llm,
            prompt,
            max_tokens=limit,
            stop=["\n"],
            repeat_penalty=repeat_penalty,
            on_text=on_text,
            cancel=cancel,
            stats=stats,
        ).strip()
    chunks = llm.create_chat_completion(
        prompt,
        stream=True,
        temperature=0.0,
        top_k=1,
        max_tokens=limit,
        stop=CHAT_STOPS,
        repeat_penalty=repeat_penalty,
        logit_bias=never_in_a_reply(llm),
    )
    return _stream(
        chunks, lambda c: c["choices"][0]["delta"].get("content"), on_text, cancel, stats, one_line=True
    ).strip()


def translate_file(
    llm,
    in_path: str | Path,
    out_path: str | Path,
    source: str,
    target: str,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> int:
    """Translate a text file line by line (empty lines kept) into `out_path`, written atomically; an interrupted run
    resumes where it stopped (see core.translation.translate_lines_to_file). Returns lines done."""

    def translate_lines(lines: list[str]) -> list[str]:
        return [translate(llm, line, source, target, cancel=cancel) if line.strip() else "" for line in lines]

    return translate_lines_to_file(
        read_lines(in_path),
        translate_lines,
        out_path,
        key=f"gguf {Path(llm.model_path).resolve()} {source}->{target}",
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
    )
