"""The translators a project can offer, one shape for all, and how well each translates held-out pairs (chrF).

Every translator takes lines and returns one line each (empty lines stay empty). Besides the models — a Hydra
(core.hydra: the source model reads the text, the target language's head writes the reply) and an exported GGUF run
by llama.cpp (core.runtime) — the baselines a user would otherwise use are translators too: copying the text, looking
each word up in a dictionary, and the translation memory's closest pair. A model translates with the memory: a line
the memory holds gets its translation as is, and any other line the memory's closest pairs as the examples of its
prompt (core.memory, core.translation.few_shot_prompt). A project translates with whichever measured best on its
held-out pairs (core.project), so a user is never handed a translator worse than looking things up.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.jobs import CancelToken, ProgressFn, Reporter
from core.lexicon import Lexicon, recase
from core.memory import EXAMPLES, NEAR, TranslationMemory, terms
from core.resources import DictionaryEntry

Lines = Callable[[list[str]], list[str]]
HINTS = 6  # most dictionary hints a line's prompt gets (`with_hints`)
# A model's translator: lines and, for each, its example pairs.
WithExamples = Callable[[list[str], list[list[tuple[str, str]]]], list[str]]

COPY, DICTIONARY, MEMORY, MEMORY_DICTIONARY = "copy", "dictionary", "memory", "memory + dictionary"
LEXICON, MEMORY_LEXICON = "corpus words", "memory + corpus words"
# What a user would have without a language model. The translators built on the corpus's own word alignment
# (core.lexicon) are the studio's, not baselines: they come from the same alignment that adapts the model.
BASELINES = (COPY, DICTIONARY, MEMORY, MEMORY_DICTIONARY)
_WORD = re.compile(r"\w+(?:'\w+)?")


def copy(lines: list[str]) -> list[str]:
    """The baseline of doing nothing: names, numbers and shared words already score."""
    return list(lines)


def word_by_word(entries: Sequence[DictionaryEntry], target_text: Sequence[str] = ()) -> Lines:
    """Each word replaced by its dictionary translation — of several, the one most frequent in `target_text` (the
    first listed when none occurs) — and words the dictionary lacks (names) kept as they are."""
    frequency = Counter(w for line in target_text for w in _WORD.findall(line.casefold()))
    options: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        source, target = e.source.strip().casefold(), e.target.strip()
        if source and target and " " not in source:
            options[source].append(target)
    best = {
        w: max(ts, key=lambda t: (frequency[t.casefold()] if " " not in t else 0, -ts.index(t)))
        for w, ts in options.items()
    }

    def translate(lines: list[str]) -> list[str]:
        return [
            _WORD.sub(lambda m: recase(best.get(m.group(0).casefold(), m.group(0)), m.group(0)), line) for line in lines
        ]

    return translate


def memory_top(memory: TranslationMemory) -> Lines:
    """The translation of the memory's most similar pair, as is (the empty line when no pair shares a word)."""

    def translate(lines: list[str]) -> list[str]:
        matches = [memory.search(line, 1) if line.strip() else [] for line in lines]
        return [found[0].target if found else "" for found in matches]

    return translate


def memory_then(memory: TranslationMemory, lines_fn: Lines, near: float = NEAR) -> Lines:
    """Near-repeats from the memory, every other line from `lines_fn` (e.g. the dictionary): what a CAT tool does
    without a model."""
    return with_memory(memory, lambda lines, _examples: lines_fn(lines), k=0, near=near, fallback=copy)


def with_memory(
    memory: TranslationMemory,
    model: WithExamples,
    *,
    k: int = EXAMPLES,
    near: float | None = NEAR,
    fallback: Lines | None = None,
) -> Lines:
    """`model` behind the memory: exact matches — and near-repeats, at least `near` similar (None: exact only) —
    from the memory, every other line translated with its `k` closest pairs as examples. A line the model leaves
    empty gets `fallback`'s answer, so every line gets one."""

    def translate(lines: list[str]) -> list[str]:
        out = [""] * len(lines)
        todo = []
        for i, line in enumerate(lines):
            if line.strip():
                hit = memory.exact(line) if near is None else memory.near(line, near)
                if hit is not None:
                    out[i] = hit
                else:
                    todo.append(i)
        if todo:
            replies = model([lines[i] for i in todo], [memory.examples(lines[i], k) for i in todo])
            for i, reply in zip(todo, replies):
                out[i] = reply.strip()
        empty = [i for i in todo if not out[i]]
        if empty and fallback is not None:
            for i, reply in zip(empty, fallback([lines[i] for i in empty])):
                out[i] = reply
        return out

    return translate


def with_hints(model: WithExamples, lexicon: Lexicon, common: frozenset[str], most: int = HINTS) -> WithExamples:
    """`model` with dictionary hints in its prompts — the dictionary-in-prompt idea (DiPMT, chain-of-dictionary) in
    the few-shot form every translator's prompt has: up to `most` words of a line that none of its examples' source
    sides has and that are not among the corpus's commonest (`common`), each with its corpus-words translation, as
    one-word example pairs before the retrieved ones (held-out English → German strings: SmolLM2 46.9 → 47.5, Gemma
    3 270M 52.0 → 53.3; docs/results/translation.md)."""

    def hinted(line: str, examples: list[tuple[str, str]]) -> list[tuple[str, str]]:
        covered = {w for s, _ in examples for w in terms(s)}
        hints: dict[str, str] = {}
        for word in terms(line):
            if len(hints) < most and word not in covered and word not in common and word in lexicon.best:
                hints[word] = lexicon.best[word][0]
        return list(hints.items()) + examples

    def translate(lines: list[str], examples: list[list[tuple[str, str]]]) -> list[str]:
        return model(lines, [hinted(line, ex) for line, ex in zip(lines, examples)])

    return translate


def hydra_model(
    hydra, source: str, target: str, *, batch_size: int = 8, cancel: CancelToken | None = None
) -> WithExamples:
    """A Hydra (core.hydra) translating with each line's own examples, `batch_size` lines at a time."""
    from core.hydra import translate_batch

    def translate(lines: list[str], examples: list[list[tuple[str, str]]]) -> list[str]:
        return translate_batch(
            hydra, lines, source, target, examples_each=examples, batch_size=batch_size, cancel=cancel
        )

    return translate


def gguf_model(llm, source: str, target: str, *, cancel: CancelToken | None = None) -> WithExamples:
    """An exported GGUF run by llama.cpp (core.runtime), translating with each line's own examples."""
    from core import runtime

    def translate(lines: list[str], examples: list[list[tuple[str, str]]]) -> list[str]:
        return [
            runtime.translate(llm, line, source, target, examples=ex, cancel=cancel) if line.strip() else ""
            for line, ex in zip(lines, examples)
        ]

    return translate


@dataclass(frozen=True)
class Score:
    chrf: float  # sacrebleu's corpus chrF (character 6-grams, β = 2), 0–100
    seconds_per_line: float
    samples: list[str] = field(default_factory=list)  # the first few outputs, to show beside the references


def chrf(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2)


def measure(
    systems: dict[str, Lines],
    sources: list[str],
    references: list[str],
    *,
    samples: int = 3,
    batch: int = 8,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Score]:
    """chrF of each system on held-out pairs, and its seconds per line, `batch` lines at a time (so the progress
    moves and cancel stops within a batch)."""
    scores = {}
    for name, translate in systems.items():
        # A stage of its own per system: the baselines take no time and a model minutes, so a time left estimated
        # over all systems' lines together said "0:00 left" while the model had just begun.
        report = Reporter(progress, cancel, f"Measuring translation: {name}")
        start, out = time.monotonic(), []
        for i in range(0, len(sources), batch):
            report(i, len(sources), f"line {i + 1:,} of {len(sources):,}")
            out += translate(sources[i : i + batch])
        report(len(sources), len(sources), "done")
        seconds = time.monotonic() - start
        scores[name] = Score(chrf(out, references), round(seconds / max(1, len(sources)), 3), out[:samples])
    return scores


def best(scores: dict[str, Score]) -> str:
    """The system with the highest chrF (a model before a baseline of equal score)."""
    return max(scores, key=lambda name: (scores[name].chrf, name not in BASELINES))


def verdict(scores: dict[str, Score]) -> str:
    """One plain sentence on the measurement: which translator is best and by how much against the baselines."""
    winner = best(scores)
    others = [
        f"{name} {s.chrf:.1f}" for name, s in sorted(scores.items(), key=lambda kv: -kv[1].chrf) if name != winner
    ]
    models = [name for name in scores if name not in BASELINES]
    line = f"Best on the held-out pairs: {winner} (chrF {scores[winner].chrf:.1f}; " + ", ".join(others) + ")."
    if models and winner in BASELINES:
        line += (
            f" The model{'s' if len(models) > 1 else ''} translate{'' if len(models) > 1 else 's'} worse than "
            f"{winner}, so translations use {winner}."
        )
    return line
