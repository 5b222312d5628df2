"""Translating with a project: its translation memory, its held-out pairs, the translators it can offer, which one
measured best, and translating text, a text file or a gettext catalogue with that one.

The project's parallel corpora are split once (core.memory.split_pairs, the same pairs every time): the held-out
pairs are never retrieved from and only measured on; the rest is the memory. `evaluate` measures copy, the
dictionary, the memory and each model (with the memory behind it) on the held-out pairs and records the scores in
project.json; `translator` then hands out the best of them (measuring first when nothing is recorded for that
direction).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import cache
from dataclasses import asdict, dataclass
from pathlib import Path

from core import translators as T
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn
from core.layout import REPLACE, StageRecord
from core.lexicon import Lexicon
from core.lexicon import learn as learn_lexicon
from core.memory import Split, TranslationMemory, split_pairs
from core.project import TRANSLATION, Project
from core.translation import common_words

HYDRA_SYSTEM, GGUF_SYSTEM = "hydra", "exported model"
QUICK_PAIRS = 100  # held-out pairs measured when `translator` finds no measurement
# What teaching the Hydra to translate trains, chosen by chrF gained a minute of tuning (benchmarks/
# translation_tuning_choice.py, docs/results/translation.md): a LoRA adapter on the body for the direction took
# held-out English → German strings from 32.3 to 40.4 in 150 steps of 4 pairs (5.4 min on 2 cores); the tables, what
# the Hydra's other tunings train, from 32.3 down to 28.7.
TUNING_TRAINS = "lora"


@dataclass(frozen=True)
class Evaluation:
    source: str
    target: str
    pairs: int
    scores: dict[str, T.Score]
    best: str
    verdict: str
    sources: list[str]  # the first held-out lines and their references, for samples side by side
    references: list[str]


def split(project: Project) -> Split:
    """The project's parallel corpora (all of them, in order) cut into memory and held-out pairs."""
    corpora = project.inputs().parallel
    if not corpora:
        raise TweetyError(
            "the project has no parallel corpus, so it has no translation memory and nothing to measure translation on",
            fix="add a parallel corpus to the project's data",
        )
    sources, targets = [], []
    for r in corpora:
        corpus = r.read()
        sources += corpus.source
        targets += corpus.target
    return split_pairs(sources, targets)


def _direction(project: Project, source: str, target: str) -> bool:
    """True for source language → project language (the corpus's own direction), False for the reverse."""
    code = project.state.language
    if target == code or (not code and source != target):
        return True
    if source == code:
        return False
    raise TweetyError(
        f"this project translates between its source language and {code or 'its language'}, not {source} → {target}",
        fix=f"choose {source} → {code} or {code} → {source}",
    )


def memory(project: Project, source: str, target: str, pairs: Split | None = None) -> TranslationMemory:
    pairs = pairs or split(project)
    forward = _direction(project, source, target)
    return TranslationMemory(
        *((pairs.train_source, pairs.train_target) if forward else (pairs.train_target, pairs.train_source))
    )


def language_words(memory: TranslationMemory, source: str, target: str) -> dict[str, frozenset[str]]:
    """Each side's commonest words, by language: what core.translation.written_in tells a text's language from."""
    return {source: common_words(memory.sources), target: common_words(memory.targets)}


def lexicon(
    project: Project,
    source: str,
    target: str,
    pairs: Split | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Lexicon:
    """The word lexicon of the memory's pairs in this direction (core.lexicon), learnt once and kept in
    work/lexicon/ under a name that changes with the pairs (a changed corpus gets a new one)."""
    pairs = pairs or split(project)
    src, tgt = (
        (pairs.train_source, pairs.train_target)
        if _direction(project, source, target)
        else (pairs.train_target, pairs.train_source)
    )
    digest = hashlib.sha256("\n".join(src + ["\t"] + tgt).encode()).hexdigest()[:16]
    path = project.folder / "work" / "lexicon" / f"{source}-{target}-{digest}.tsv"
    if path.is_file():
        return Lexicon.load(path)
    found = learn_lexicon(src, tgt, progress=progress, cancel=cancel)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{source}-{target}-*.tsv"):  # learnt from pairs the project no longer has
        old.unlink(missing_ok=True)
    found.save(path)
    return found


def systems(
    project: Project,
    source: str,
    target: str,
    pairs: Split | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Callable[[], T.Lines]]:
    """Each translator the project offers for `source` → `target`, made only when called (a model loads then)."""
    pairs = pairs or split(project)
    forward = _direction(project, source, target)
    dictionaries = project.inputs().dictionaries if forward else []

    # Each piece is made once, when a translator first needs it: listing the translators costs no index, no
    # dictionary read and no lexicon, and the translators that share a piece share one.
    @cache
    def mem() -> TranslationMemory:
        return memory(project, source, target, pairs)

    @cache
    def dictionary() -> T.Lines:
        return T.word_by_word([e for r in dictionaries for e in r.read()], pairs.train_target)

    @cache
    def lex() -> Lexicon:
        return lexicon(project, source, target, pairs, progress=progress, cancel=cancel)

    def words() -> T.Lines:
        return lex().translate

    def hinted(model: T.WithExamples) -> T.WithExamples:
        # each prompt also gets the corpus words of the line's words its examples do not cover
        return T.with_hints(model, lex(), common_words(mem().sources))

    def fallback() -> T.Lines:
        return dictionary() if dictionaries else T.memory_top(mem())

    out: dict[str, Callable[[], T.Lines]] = {T.COPY: lambda: T.copy, T.MEMORY: lambda: T.memory_top(mem())}
    if dictionaries:
        out[T.DICTIONARY] = dictionary
        out[T.MEMORY_DICTIONARY] = lambda: T.memory_then(mem(), dictionary())
    out[T.LEXICON] = words
    out[T.MEMORY_LEXICON] = lambda: T.memory_then(mem(), words())
    if project.state.vocabulary == REPLACE and "init" in project.state.stages:

        def hydra() -> T.Lines:
            model = project.hydra(
                source_language=source if forward else target, target_language=target if forward else source
            )
            return T.with_memory(
                mem(), hinted(T.hydra_model(model, source, target, cancel=cancel)), fallback=fallback()
            )

        out[HYDRA_SYSTEM] = hydra
    exported = project.state.stages.get("export")
    if exported is not None and Path(exported.summary.get("file", "")).is_file():

        def gguf() -> T.Lines:
            from core import runtime

            llm = runtime.load(exported.summary["file"])
            return T.with_memory(mem(), hinted(T.gguf_model(llm, source, target, cancel=cancel)), fallback=fallback())

        out[GGUF_SYSTEM] = gguf
    return out


def evaluate(
    project: Project,
    source: str,
    target: str,
    *,
    limit: int = 200,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Evaluation:
    """chrF of every translator on the first `limit` held-out pairs (0: all), recorded in project.json and shown in
    the model folders' cards."""
    start = time.monotonic()
    pairs = split(project)
    forward = _direction(project, source, target)
    held_src, held_tgt = (
        (pairs.heldout_source, pairs.heldout_target) if forward else (pairs.heldout_target, pairs.heldout_source)
    )
    if limit:
        held_src, held_tgt = held_src[:limit], held_tgt[:limit]
    made = {
        name: make() for name, make in systems(project, source, target, pairs, progress=progress, cancel=cancel).items()
    }
    scores = T.measure(made, held_src, held_tgt, progress=progress, cancel=cancel)
    result = Evaluation(
        source, target, len(held_src), scores, T.best(scores), T.verdict(scores), held_src[:3], held_tgt[:3]
    )
    project.state.stages[TRANSLATION] = StageRecord(
        round(time.monotonic() - start, 2),
        ".",
        {
            "direction": f"{source}->{target}",
            "pairs": result.pairs,
            "best": result.best,
            "scores": {name: asdict(s) for name, s in scores.items()},
        },
    )
    project.save()
    project.write_model_cards()  # the cards in the model folders show the new chrF
    return result


def recorded_best(project: Project, source: str, target: str, offered: set[str] | None = None) -> str | None:
    """The best translator of the last measurement, when it measured this direction and exactly the translators
    offered now (`offered`, default: `systems`'s; an export or a Hydra made since is measured again)."""
    record = project.state.stages.get(TRANSLATION)
    if record is None or record.summary.get("direction") != f"{source}->{target}":
        return None
    now = offered if offered is not None else set(systems(project, source, target))
    if set(record.summary.get("scores", {})) != now:
        return None
    return record.summary.get("best")


def translator(
    project: Project, source: str, target: str, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None
) -> tuple[str, T.Lines]:
    """The project's best translator for this direction (its name and the translator), measuring on
    `QUICK_PAIRS` held-out pairs first when no measurement is recorded."""
    offered = systems(project, source, target, progress=progress, cancel=cancel)
    name = recorded_best(project, source, target, set(offered))
    if name is None:
        name = evaluate(project, source, target, limit=QUICK_PAIRS, progress=progress, cancel=cancel).best
    return name, offered[name]()


def ready_translator(
    project: Project, source: str, target: str, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None
) -> tuple[str, T.Lines]:
    """The project's best translator without measuring first (the Chat page's, a text at a time): the recorded best
    (`recorded_best`), else memory + corpus words — the best on every held-out set measured so far, ahead of every
    model a CPU runs (docs/results/translation.md), and made in seconds."""
    offered = systems(project, source, target, progress=progress, cancel=cancel)
    name = recorded_best(project, source, target, set(offered)) or T.MEMORY_LEXICON
    return name, offered[name]()


def translate_file(
    project: Project,
    in_path: str | Path,
    out_path: str | Path,
    source: str,
    target: str,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> tuple[str, int]:
    """A text file line by line, or a gettext catalogue (.po/.pot: its empty entries), with the project's best
    translator; atomic and resumable (core.translation, core.pofile). Returns the translator's name and the lines
    (or entries) translated."""
    from core import pofile
    from core.resources import read_lines
    from core.translation import translate_lines_to_file

    name, translate = translator(project, source, target, progress=progress, cancel=cancel)
    key = f"project {project.folder.resolve()} {name} {source}->{target}"
    if pofile.is_po(in_path):
        result = pofile.translate_po(
            in_path,
            out_path,
            translate,
            key=key,
            language=target,
            overwrite=overwrite,
            batch_size=8,
            progress=progress,
            cancel=cancel,
        )
        return name, result.translated
    return name, translate_lines_to_file(
        read_lines(in_path),
        translate,
        out_path,
        key=key,
        batch_size=8,
        overwrite=overwrite,
        progress=progress,
        cancel=cancel,
    )


@dataclass(frozen=True)
class TuningData:
    """What teaching a project's Hydra to translate trains on: the pairs, and each pair's prompt examples."""

    pairs: list[tuple[str, str]]
    examples_of: Callable[[str], list[tuple[str, str]]]
    memory: TranslationMemory


def tuning_data(
    project: Project,
    *,
    steps: int = 300,
    batch_size: int = 4,
    pairs_files: tuple[str, str] | None = None,
    source: str = "en",
) -> TuningData:
    """The pairs a tuning of `steps` × `batch_size` draws — memory pairs, or `pairs_files` without the held-out
    pairs — and their examples: each pair's closest *other* memory pairs, as a new line would get them."""
    import random

    from core.memory import EXAMPLES, normalised
    from core.resources import read_parallel

    target = project.state.language
    if not target:
        raise TweetyError("the project records no language code", fix="set the project's language first")
    pairs = split(project)
    held = {normalised(s) for s in pairs.heldout_source} | {normalised(t) for t in pairs.heldout_target}
    if pairs_files:
        corpus = read_parallel(*pairs_files)
        train = [
            (s, t)
            for s, t in zip(corpus.source, corpus.target)
            if normalised(s) not in held and normalised(t) not in held
        ]
    else:
        train = list(zip(pairs.train_source, pairs.train_target))
    train = random.Random(0).sample(train, min(len(train), steps * batch_size))
    mem = memory(project, source, target, pairs)

    def examples_of(text: str) -> list[tuple[str, str]]:
        # the pair's own line is in the memory: its closest *other* pairs are what a new line would get
        found = [m for m in mem.search(text, EXAMPLES + 1) if normalised(m.source) != normalised(text)]
        return [(m.source, m.target) for m in reversed(found[:EXAMPLES])]

    return TuningData(train, examples_of, mem)


def tune(
    project: Project,
    *,
    steps: int = 300,
    batch_size: int = 4,
    pairs_files: tuple[str, str] | None = None,
    source: str = "en",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[float]:
    """Teach the project's Hydra to translate: a LoRA adapter for source → the project's language on the body
    (`TUNING_TRAINS`; the body's own weights and every table stay as they are) trained on memory pairs — or on
    `pairs_files` — each behind exactly the prompt translation uses (its closest other memory pairs as examples),
    the loss on the reply. Held-out pairs are never trained on. Records
    the tuning in project.json; the translation measurement is then redone on demand. A cancelled or killed tuning
    keeps its steps: the same call again (same steps, pairs and project) continues where it stopped
    (Project.tune_hydra); anything else starts over, and says so."""
    from core.hydra import HydraTuning
    from core.memory import EXAMPLES

    if project.state.vocabulary != REPLACE:
        raise TweetyError(
            "teaching a model to translate needs a project that replaced the vocabulary (a Hydra); "
            "an extended model translates with its memory as it is",
            fix="use `tweety translate --model PROJECT` directly",
        )
    data = tuning_data(project, steps=steps, batch_size=batch_size, pairs_files=pairs_files, source=source)
    # The examples come from the memory: a changed memory is another tuning, even on the same pairs.
    settings = HydraTuning(steps=steps, batch_size=batch_size, trains=TUNING_TRAINS)
    losses = project.tune_hydra(
        project.state.language,
        settings,
        pairs=data.pairs,
        examples_of=data.examples_of,
        run_key={"the translation memory": data.memory.digest},
        progress=progress,
        cancel=cancel,
    )
    project.state.stages["hydra"].summary.update(
        {"for": "translation", "examples": f"memory, {EXAMPLES} closest", "trains": TUNING_TRAINS}
    )
    project.save()
    return losses
