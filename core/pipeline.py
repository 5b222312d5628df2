"""The whole adaptation in one call: tokenizer → align → map → init, written into one output folder.

Layout of the output folder (an ordinary Hugging Face model folder, so `tweety eval --model OUT` works):
    config.json, model.safetensors, tokenizer files   the adapted model
    project.json                                      inputs, settings, per-stage times and statistics
    work/tokenizer/  work/alignment/  work/mapping/   each stage's own output, reusable by the step-wise commands
The folder appears only when every stage has finished (cancel or failure leave nothing behind).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import align, init, mapping, models, resources, tokenizer
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, atomic_dir
from core.project import ProjectState, StageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptSettings:
    source_model: str = models.DEFAULT_MODEL
    target_text: str = ""
    parallel: tuple[str, str] | None = None  # (source side, target side); one TSV/TMX file: (file, "")
    dictionary: str | None = None
    out: str = ""
    language: str | None = None  # target language code, e.g. "es" (recorded; written into the GGUF)
    tokenizer: tokenizer.TokenizerSettings = field(default_factory=tokenizer.TokenizerSettings)
    align: align.AlignSettings = field(default_factory=align.AlignSettings)
    mapping: mapping.MappingSettings = field(default_factory=mapping.MappingSettings)
    init: init.InitSettings = field(default_factory=init.InitSettings)


@dataclass(frozen=True)
class AdaptResult:
    out: Path
    seconds: dict[str, float]
    coverage: dict[str, int]
    alignment: align.AlignmentStats | None


def read_parallel_setting(parallel: tuple[str, str] | None) -> resources.ParallelCorpus | None:
    if parallel is None:
        return None
    source, target = parallel
    return resources.read_parallel(source, target or None)


def adapt(settings: AdaptSettings, *, progress: ProgressFn | None = None,
          cancel: CancelToken | None = None, model_and_tokenizer=None) -> AdaptResult:
    """Run every stage. `model_and_tokenizer` lets a caller that already holds the source model skip reloading it."""
    if not settings.out:
        raise TweetyError("no output folder given", fix="pass --out DIR")
    if settings.parallel is None and settings.dictionary is None and settings.init.method == "transtok":
        raise TweetyError("trans-tokenization needs a translation resource",
                          fix="give a parallel corpus (--parallel) and/or a dictionary (--dictionary)")
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.monotonic()
        seconds[stage] = round(now - clock, 2)
        clock = now

    # Read (and so validate) every input before any long work starts.
    target_lines = resources.read_lines(settings.target_text)
    corpus = read_parallel_setting(settings.parallel)
    dictionary = resources.read_dictionary(settings.dictionary) if settings.dictionary else None
    lap("read inputs")
    model, source_tok = model_and_tokenizer or models.load_model(settings.source_model)
    lap("load model")
    state = ProjectState(source_model=str(settings.source_model), target_text=settings.target_text,
                         parallel=list(settings.parallel) if settings.parallel else None,
                         dictionary=settings.dictionary, language=settings.language,
                         inputs_sha256=resources.sha256_by_name(
                             [settings.target_text, settings.dictionary, *(settings.parallel or ())]),
                         settings={k: asdict(getattr(settings, k)) for k in ("tokenizer", "align", "mapping", "init")})
    with atomic_dir(settings.out) as out:
        work = out / "work"
        tokenizer.train_tokenizer(target_lines, source_tok, work / "tokenizer", settings.tokenizer,
                                  progress=progress, cancel=cancel)
        target_tok = tokenizer.load_tokenizer(work / "tokenizer")
        lap("tokenizer")
        state.stages["tokenizer"] = StageRecord(seconds["tokenizer"], "work/tokenizer", {"vocab_size": len(target_tok)})
        stats = None
        counts = None
        if corpus is not None:
            stats = align.align_corpus(corpus, source_tok, target_tok, work / "alignment", settings.align,
                                       progress=progress, cancel=cancel)
            counts = align.load_counts(work / "alignment")
            lap("align")
            state.stages["align"] = StageRecord(seconds["align"], "work/alignment", asdict(stats))
        m = mapping.build_mapping(source_tok, target_tok, alignment_counts=counts, dictionary=dictionary,
                                  settings=settings.mapping, progress=progress, cancel=cancel)
        m.save(work / "mapping", target_tok, source_tok)
        lap("map")
        state.stages["map"] = StageRecord(seconds["map"], "work/mapping", m.coverage())
        m = init.mapping_for_method(settings.init.method, m, source_tok, target_tok)
        adapted = init.initialise(model, m, settings.init, progress=progress, cancel=cancel)
        init.write_adapted(adapted, target_tok, out)
        lap("init")
        state.stages["init"] = StageRecord(seconds["init"], ".", {"method": settings.init.method})
        state.save(out)
    return AdaptResult(Path(settings.out), seconds, m.coverage(), stats)
