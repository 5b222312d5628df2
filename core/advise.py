"""Is adapting worth it? The chosen source model measured on a sample of the user's target text before anything is
adapted — how surprised it is by the text (bits per character) and how many tokens it spends on it (tokens per
character) — and the advice that follows: keep the model as it is, extend its vocabulary, or replace it.

Per character, not per byte: a Cyrillic or Greek letter is two bytes of UTF-8 and a Latin one mostly one, so per-byte
figures halve for those scripts whatever the model knows. The thresholds sit between the two cases whose outcome
was measured (docs/results/advise.md): SmolLM2-135M on Spanish (2.3 bits, 0.40 tokens a character: a replaced
vocabulary reads Spanish 9% better than the model itself after a short fine-tune) and Gemma 3 270M on Spanish
(1.6 bits, 0.28 tokens: no adaptation of it has read Spanish as well as the model itself).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from core.jobs import CancelToken, ProgressFn
from core.mapping import COMPACT_SPELLING
from core.resources import head_bytes

KEEP, EXTEND, REPLACE = "keep", "extend", "replace"
SAMPLE_BYTES = 12_000  # a sample big enough to be stable (±2% on the demo) and measured in well under 60 s on 2 cores
# Reads the language well: few bits a character. Compact: few tokens a character (a vocabulary made for the language
# spends about 0.25).
READS_WELL = 1.9  # bits per character
READS_POORLY = 3.0
COMPACT = COMPACT_SPELLING  # tokens per character; the same line decides whether a source keeps its own spellings


@dataclass(frozen=True)
class Advice:
    choice: str  # KEEP | EXTEND | REPLACE
    bits_per_char: float
    tokens_per_char: float
    bits_per_byte: float
    chars: int
    seconds: float
    reason: str  # one plain sentence


def decide(bits_per_char: float, tokens_per_char: float) -> tuple[str, str]:
    """The advice and its reason from the two measurements."""
    if bits_per_char <= READS_WELL and tokens_per_char <= COMPACT:
        return KEEP, (
            "the model already reads this language well and compactly: adapting it would most likely only "
            "cost quality; use it as it is"
        )
    if bits_per_char <= READS_WELL:
        return EXTEND, (
            "the model reads this language well but cuts it into many small tokens: extend its "
            "vocabulary, keeping what it knows, to make it shorter and faster"
        )
    if bits_per_char >= READS_POORLY:
        return REPLACE, ("the model hardly reads this language: replace its vocabulary with one made for the language")
    return REPLACE, (
        "the model reads this language only poorly: a vocabulary made for the language, started from "
        "its own knowledge, should read it better after a short fine-tune"
    )


def advise(
    model,
    tokenizer,
    text: str,
    *,
    max_bytes: int = SAMPLE_BYTES,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Advice:
    """Measure `model` on the first `max_bytes` of `text` and advise (see the module's docstring)."""
    from core.evaluate import bits_per_byte

    start = time.monotonic()
    sample = head_bytes(text, max_bytes)
    result = bits_per_byte(model, tokenizer, sample, progress=progress, cancel=cancel, stage="Measuring the model")
    chars = len(sample)
    bits_per_char = result.nll_nats / math.log(2) / chars
    tokens_per_char = result.tokens / chars
    choice, reason = decide(bits_per_char, tokens_per_char)
    return Advice(
        choice,
        round(bits_per_char, 3),
        round(tokens_per_char, 3),
        round(result.bits_per_byte, 3),
        chars,
        round(time.monotonic() - start, 1),
        reason,
    )
