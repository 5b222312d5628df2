"""Translating with a Hydra: the few-shot prompt (example pairs, each side read with its own language's table), the
choice of example pairs, and greedy translation of a text, a batch of texts or a whole file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.hydra.lora import use as use_adapter
from core.hydra.model import GenerationSettings, Hydra, Segment, TextFn
from core.jobs import CancelToken, ProgressFn
from core.resources import read_lines
from core.translation import language_name, translate_lines_to_file, translation_prompt

_PLACEHOLDER = "\u0000TEXT\u0000"
EXAMPLES = 3  # example pairs in a translation prompt (chosen by `choose_examples`)
NO_REPEAT = 4  # a translation never repeats a 4-gram of itself: 135M models loop ("de los hijos de los hijos …")


@dataclass(frozen=True)
class TranslationPrompt:
    segments: list[Segment] = field(default_factory=list)
    stop_strings: tuple[str, ...] = ()


def choose_examples(source_lines: list[str], target_lines: list[str], k: int = EXAMPLES) -> list[tuple[str, str]]:
    """`k` short pairs spread over a parallel corpus (the same ones every time), for a translation prompt."""
    fit = [i for i, (s, t) in enumerate(zip(source_lines, target_lines)) if 20 <= len(s) <= 100 and 20 <= len(t) <= 120]
    picks = [fit[j * len(fit) // k] for j in range(k)] if fit else []
    return [(source_lines[i], target_lines[i]) for i in picks]


def corpus_examples(source_path: str | Path, target_path: str | Path | None = None) -> list[tuple[str, str]]:
    """`choose_examples` from a parallel corpus file pair (or one TSV/TMX file: core.resources.read_parallel)."""
    from core.resources import read_parallel

    corpus = read_parallel(source_path, target_path)
    return choose_examples(corpus.source, corpus.target)


def translation_segments(
    hydra: Hydra, text: str, source: str, target: str, examples: list[tuple[str, str]] | None = None
) -> TranslationPrompt:
    """The translation prompt, tokenized in the source language; only texts in another language are read with their
    own language's table. With example pairs (`examples`, or by default the Hydra's own for this direction) it is a
    few-shot `English: … / Spanish: …` prompt: the examples' target side, read with the target language's table,
    shows the body what to write, and a small model follows it better than an instruction (chrF 12.9 → 15.3 on 500
    demo verses at 135M). Without examples: the source model's chat template (or a plain `English: … / Spanish:`
    prompt)."""
    hydra.language(source), hydra.language(target)
    base_code = hydra.source_language
    base = hydra.languages[base_code].tokenizer
    src, tgt = language_name(source), language_name(target)
    examples = hydra.examples(source, target) if examples is None else examples
    template = base.chat_template if isinstance(getattr(base, "chat_template", None), str) else None
    parts: list[tuple[str, str]] = []
    if examples:
        for s, t in examples:
            parts += [
                (base_code, f"{src}: "),
                (source, s),
                (base_code, f"\n{tgt}:"),
                (target, f" {t}"),
                (base_code, "\n\n"),
            ]
        parts += [(base_code, f"{src}: "), (source, text), (base_code, f"\n{tgt}:")]
    else:
        if template:
            messages = translation_prompt("chat", source, target, _PLACEHOLDER)
            rendered = base.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            rendered = translation_prompt("base", source, target, _PLACEHOLDER)
        before, after = rendered.split(_PLACEHOLDER)
        parts = [(base_code, before), (source, text), (base_code, after)]
    merged: list[tuple[str, str]] = []
    for code, piece in parts:  # one segment per run of one language: tokenized as the model saw such text
        if merged and merged[-1][0] == code:
            merged[-1] = (code, merged[-1][1] + piece)
        else:
            merged.append((code, piece))
    segments = [hydra.segment(code, piece) for code, piece in merged]
    if not template and base.bos_token_id is not None:
        segments[0] = Segment(base_code, (base.bos_token_id, *segments[0].ids))
    # One line in, one line out: a model adapted by trans-tokenization rarely learnt to end its turn in the new
    # language (it goes on with "more verses"), so the reply ends at its first line break.
    return TranslationPrompt(segments, ("\n",))


def reply_limit(hydra: Hydra, text: str, source: str, max_new_tokens: int) -> int:
    """Reply length: at most twice the text's own tokens (+16), so a reply that never ends stops early."""
    return min(max_new_tokens, 2 * len(hydra.segment(source, text).ids) + 16)


def translate(
    hydra: Hydra,
    text: str,
    source: str,
    target: str,
    *,
    max_new_tokens: int = 256,
    examples: list[tuple[str, str]] | None = None,
    on_text: TextFn | None = None,
    cancel: CancelToken | None = None,
) -> str:
    """Greedy zero-shot translation of one text: the prompt read in the source language, the reply written with
    `target`'s head and embeddings."""
    use_adapter(hydra, source, target)
    prompt = translation_segments(hydra, text, source, target, examples)
    settings = GenerationSettings(
        max_new_tokens=reply_limit(hydra, text, source, max_new_tokens),
        stop_strings=prompt.stop_strings,
        no_repeat_ngram=NO_REPEAT,
    )
    return hydra.generate(prompt.segments, target, settings, on_text=on_text, cancel=cancel).text.strip()


def translate_batch(
    hydra: Hydra,
    texts: list[str],
    source: str,
    target: str,
    *,
    max_new_tokens: int = 256,
    examples: list[tuple[str, str]] | None = None,
    batch_size: int = 8,
    examples_each: Sequence[list[tuple[str, str]]] | None = None,
    cancel: CancelToken | None = None,
) -> list[str]:
    """`translate` for many texts, `batch_size` at a time (texts of similar length together); empty texts stay
    empty. `examples_each`: each text's own example pairs (a translation memory's matches), instead of `examples`
    for all. Greedy replies equal `translate`'s up to float rounding in the padded batch."""
    out = [""] * len(texts)
    use_adapter(hydra, source, target)  # the direction's translation adapter, when it was taught to translate
    todo = sorted((i for i, t in enumerate(texts) if t.strip()), key=lambda i: len(texts[i]))
    settings = GenerationSettings(stop_strings=("\n",), no_repeat_ngram=NO_REPEAT)
    for start in range(0, len(todo), batch_size):
        group = todo[start : start + batch_size]
        prompts = [
            translation_segments(
                hydra, texts[i], source, target, examples_each[i] if examples_each is not None else examples
            ).segments
            for i in group
        ]
        limits = [reply_limit(hydra, texts[i], source, max_new_tokens) for i in group]
        replies = hydra.generate_batch(prompts, target, settings, limits=limits, cancel=cancel)
        for i, reply in zip(group, replies):
            out[i] = reply.text.strip()
    return out


def translate_file(
    hydra: Hydra,
    in_path: str | Path,
    out_path: str | Path,
    source: str,
    target: str,
    *,
    max_new_tokens: int = 256,
    batch_size: int = 8,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> int:
    """Translate a text file line by line into `out_path`, `batch_size` lines at a time (atomic and resumable: see
    core.translation.translate_lines_to_file)."""
    identity = hashlib.sha256(
        json.dumps(
            # The head's sum tells a tuned language (core.hydra.finetune_language) from the same one before tuning.
            {
                "hydra": sorted(
                    (c, lang.origin, lang.vocab_size, lang.examples, round(float(lang.head.detach().float().sum()), 3))
                    for c, lang in hydra.languages.items()
                ),
                "model": getattr(hydra.model.config, "_name_or_path", ""),
            }
        ).encode()
    ).hexdigest()
    return translate_lines_to_file(
        read_lines(in_path),
        lambda lines: translate_batch(
            hydra, lines, source, target, max_new_tokens=max_new_tokens, batch_size=batch_size, cancel=cancel
        ),
        out_path,
        key=f"hydra {identity} {source}->{target} {max_new_tokens}",
        batch_size=batch_size,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
    )
