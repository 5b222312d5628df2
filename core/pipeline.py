"""The whole adaptation in one call: tokenizer → align → map → init, written into one output folder.

Layout of the output folder (an ordinary Hugging Face model folder, so `tweety eval --model OUT` works):
    config.json, model.safetensors, tokenizer files   the adapted model
    project.json                                      inputs, settings, per-stage times and statistics
    work/tokenizer/  work/alignment/  work/mapping/   each stage's own output, reusable by the step-wise commands
                                                      (several parallel corpora: work/alignment/<name>/ each)
The folder appears only when every stage has finished (cancel or failure leave nothing behind).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core import align, init, mapping, models, resources, tokenizer
from core.errors import TweetyError
from core.jobs import CancelToken, Laps, ProgressFn, atomic_dir
from core.project import ProjectState, StageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptSettings:
    source_model: str = models.DEFAULT_MODEL
    target_text: str = ""
    parallel: tuple[str, str] | None = None  # (source side, target side); one TSV/TMX file: (file, "")
    dictionary: str | None = None
    resources: tuple[resources.Resource, ...] = ()  # more resources, or all of them, with their weights
    overrides: str | None = None  # the linguist's mapping overrides file (core.mapping.OVERRIDES_HELP)
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
    alignment: align.AlignmentStats | None  # of the first parallel corpus; project.json has every one's


def read_parallel_setting(parallel: tuple[str, str] | None) -> resources.ParallelCorpus | None:
    if parallel is None:
        return None
    source, target = parallel
    return resources.read_parallel(source, target or None)


def all_resources(settings: AdaptSettings) -> list[resources.Resource]:
    """`parallel` and `dictionary` (weight 1) followed by `resources`, each with a distinct label."""
    given = []
    if settings.parallel:
        given.append(resources.Resource(resources.PARALLEL, tuple(f for f in settings.parallel if f)))
    if settings.dictionary:
        given.append(resources.Resource(resources.DICTIONARY, (settings.dictionary,)))
    given += settings.resources
    for r in given:
        r.check()
    return resources.distinct_labels(given)


def adapt(settings: AdaptSettings, *, progress: ProgressFn | None = None,
          cancel: CancelToken | None = None) -> AdaptResult:
    """Run every stage. The source model's weights are never loaded as a model: initialisation streams them."""
    if not settings.out:
        raise TweetyError("no output folder given", fix="pass --out DIR")
    given = all_resources(settings)
    if not given and settings.init.method == "transtok":
        raise TweetyError("trans-tokenization needs a translation resource",
                          fix="give a parallel corpus (--parallel) and/or a dictionary (--dictionary)")
    lap = Laps()
    seconds = lap.seconds

    # Read (and so validate) every input before any long work starts.
    target_lines = resources.read_lines(settings.target_text)
    read = [(r, r.read()) for r in given]
    corpora = [(r, data) for r, data in read if r.kind == resources.PARALLEL]
    overrides = resources.read_overrides(settings.overrides) if settings.overrides else []
    lap("read inputs")
    source_folder = models.resolve(settings.source_model)
    source_tok = models.load_tokenizer(source_folder)
    lap("source tokenizer")
    state = ProjectState(source_model=str(settings.source_model), target_text=settings.target_text,
                         parallel=list(settings.parallel) if settings.parallel else None,
                         dictionary=settings.dictionary, language=settings.language,
                         inputs_sha256=resources.sha256_by_name(
                             [settings.target_text, *(f for r in given for f in r.files)]),
                         settings={**{k: asdict(getattr(settings, k)) for k in ("tokenizer", "align", "mapping", "init")},
                                   "resources": [asdict(r) for r in given]})
    with atomic_dir(settings.out) as out:
        work = out / "work"
        tokenizer.train_tokenizer(target_lines, source_tok, work / "tokenizer", settings.tokenizer,
                                  progress=progress, cancel=cancel)
        target_tok = tokenizer.load_tokenizer(work / "tokenizer")
        lap("tokenizer")
        state.stages["tokenizer"] = StageRecord(seconds["tokenizer"], "work/tokenizer", {"vocab_size": len(target_tok)})
        evidence, all_stats = [], {}
        for r, corpus in corpora:
            folder = work / "alignment" / (r.label if len(corpora) > 1 else "")
            all_stats[r.label] = align.align_corpus(corpus, source_tok, target_tok, folder, settings.align,
                                                    progress=progress, cancel=cancel)
            evidence.append(mapping.Evidence(r.label, mapping.ALIGNMENT_KIND, align.load_counts(folder), r.weight))
        if corpora:
            lap("align")
            summary = asdict(next(iter(all_stats.values()))) if len(corpora) == 1 else {
                name: asdict(stats) for name, stats in all_stats.items()}
            state.stages["align"] = StageRecord(seconds["align"], "work/alignment", summary)
        evidence += [mapping.dictionary_evidence(entries, source_tok, target_tok, name=r.label, weight=r.weight)
                     for r, entries in read if r.kind == resources.DICTIONARY]
        m = mapping.build_mapping(source_tok, target_tok, evidence=evidence, overrides=overrides,
                                  settings=settings.mapping, progress=progress, cancel=cancel)
        m.save(work / "mapping", target_tok, source_tok)
        lap("map")
        state.stages["map"] = StageRecord(seconds["map"], "work/mapping", {**m.coverage(), "resources": m.shares()})
        m = init.mapping_for_method(settings.init.method, m, source_tok, target_tok)
        init.write_initialised(source_folder, m, target_tok, out, settings.init, progress=progress, cancel=cancel)
        lap("init")
        state.stages["init"] = StageRecord(seconds["init"], ".", {"method": settings.init.method})
        state.save(out)
    return AdaptResult(Path(settings.out), seconds, m.coverage(), next(iter(all_stats.values()), None))
