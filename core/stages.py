"""The adaptation's stages over one project folder (core.layout): each function reads its inputs and the earlier
stages' outputs, writes its own output atomically and returns its `StageRecord`. `core.project.Project` records them;
`tweety adapt`, `tweety extend`, the stage commands with `--project` and the wizard all run these same functions.

Replacing and extending the vocabulary are one sequence with three parts swapped, as a tokenizers pipeline swaps a
component: the tokenizer (new BPE vs BPE continued on the source tokenizer), the mapping (extension keeps every
source token's own row) and the initialisation (extension adds the source-language penalty to the new rows, so it
works on the loaded model instead of streaming).
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from core import align, calibrate, extend, init, mapping, models, resources, tokenizer
from core.dictionary import DictionarySettings
from core.errors import TweetyError, plain_os_error
from core.jobs import CancelToken, ProgressFn, Reporter, require_free_space
from core.layout import EXTEND, REPLACE, VOCABULARIES, Inputs, Layout, ProjectState, StageRecord


class _Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def record(self, output: str, summary: dict) -> StageRecord:
        return StageRecord(round(time.monotonic() - self.start, 2), output, summary)


def check_vocabulary(inputs: Inputs, vocabulary: str) -> None:
    """Replace or extend: extension needs a parallel corpus (checked without reading any file)."""
    if vocabulary not in VOCABULARIES:
        raise TweetyError(f"unknown vocabulary choice {vocabulary!r}", fix="choose replace or extend")
    if vocabulary == EXTEND and not inputs.parallel:
        raise TweetyError(
            "vocabulary extension needs a parallel corpus: its source side is the text whose "
            "tokenization must not change, and its alignment initialises the new tokens",
            fix="add a parallel corpus (source and target files)",
        )


def check_inputs(inputs: Inputs, vocabulary: str = REPLACE, require_resource: bool = True) -> dict[str, int]:
    """Read (and so validate) every input file before any long work starts; raises `TweetyError` naming the file
    and line. Returns what was found, for the user."""
    check_vocabulary(inputs, vocabulary)
    if not inputs.target_text:
        raise TweetyError("no target-language text given", fix="choose a file of target-language text")
    for r in inputs.resources:
        r.check()
    if not inputs.resources and require_resource:
        raise TweetyError(
            "trans-tokenization needs a translation resource", fix="add a parallel corpus and/or a bilingual dictionary"
        )
    counts = {"target lines": len(resources.read_lines(inputs.target_text))}
    for r in inputs.resources:
        key = "parallel pairs" if r.kind == resources.PARALLEL else "dictionary entries"
        counts[key] = counts.get(key, 0) + len(r.read())
    if inputs.heldout_text:
        counts["held-out lines"] = len(resources.read_lines(inputs.heldout_text))
    if inputs.overrides:
        counts["overrides"] = len(resources.read_overrides(inputs.overrides))
    return counts


def train_tokenizer(
    layout: Layout,
    inputs: Inputs,
    source_tok,
    vocabulary: str,
    settings: tokenizer.TokenizerSettings,
    extension: extend.ExtensionSettings,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> StageRecord:
    clock = _Clock()
    lines = resources.read_lines(inputs.target_text)
    if vocabulary == EXTEND:
        extend.check_extensible(source_tok)
        protected = [line for r in inputs.parallel for line in r.read().source]
        summary = asdict(
            extend.extend_tokenizer(
                lines,
                protected,
                source_tok,
                layout.tokenizer_dir,
                extension,
                path=inputs.target_text,
                progress=progress,
                cancel=cancel,
            )
        )
    else:
        tokenizer.train_tokenizer(
            lines, source_tok, layout.tokenizer_dir, settings, path=inputs.target_text, progress=progress, cancel=cancel
        )
        summary = {}
    summary["vocab_size"] = len(tokenizer.load_tokenizer(layout.tokenizer_dir))
    if vocabulary != EXTEND:  # kept in the record: the command line and the wizard show it from there
        warning = tokenizer.smaller_than_asked(settings.vocab_size, summary["vocab_size"])
        summary.update({"warning": warning} if warning else {})
    return clock.record("work/tokenizer", summary)


def align_corpora(
    layout: Layout,
    inputs: Inputs,
    source_tok,
    target_tok,
    settings: align.AlignSettings,
    *,
    init_method: str = "transtok",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> StageRecord:
    """Each parallel corpus on its own (work/alignment/, or work/alignment/<label>/ when there are several). Skipped
    when the initialisation is a baseline (`init_method` fvt, mean or random), which reads no alignment: aligning
    137k pairs took 44 s for nothing."""
    clock = _Clock()
    corpora = inputs.parallel
    if not corpora:
        return clock.record("", {"skipped": "no parallel corpus"})
    shutil.rmtree(layout.alignment_dir, ignore_errors=True)  # another run's corpora must not linger
    if init_method != "transtok":
        return clock.record(
            "", {"skipped": f"the {init_method} initialisation uses no alignment", UNUSED_BY: init_method}
        )
    stats = {
        r.label: asdict(
            align.align_corpus(
                r.read(),
                source_tok,
                target_tok,
                layout.alignment_of(r, len(corpora)),
                settings,
                progress=progress,
                cancel=cancel,
            )
        )
        for r in corpora
    }
    return clock.record("work/alignment", next(iter(stats.values())) if len(stats) == 1 else stats)


UNUSED_BY = "unused_by"  # in a skipped align stage's summary: the baseline initialisation that needs no alignment


def alignment_unused(state: ProjectState) -> bool:
    """The align stage was skipped for a baseline initialisation: the parallel corpora have no alignment counts."""
    record = state.stages.get("align")
    return record is not None and UNUSED_BY in record.summary


def evidence(layout: Layout, inputs: Inputs, source_tok, target_tok, *, aligned: bool = True) -> list[mapping.Evidence]:
    """Every resource of a project with its weight (see `evidence_of`); without `aligned` (a baseline's project) the
    parallel corpora give none."""
    n = len(inputs.parallel)
    found = inputs.resources if aligned else [r for r in inputs.resources if r.kind != resources.PARALLEL]
    return evidence_of(
        found,
        lambda r: layout.alignment_of(r, n),
        source_tok,
        target_tok,
        rules=word_rules(inputs.language_code, inputs.plural_endings, inputs.cognates),
    )


def word_rules(
    language: str, plural_endings: Sequence[str] | None = None, cognates: bool | None = None
) -> DictionarySettings:
    """How a dictionary is read: the target `language`'s rules (its plural endings, stemmer, accent folding and
    cognates: DictionarySettings.for_language), with what the user chose instead (None: the language's own)."""
    return DictionarySettings.for_language(language).chosen(plural_endings, cognates)


def evidence_of(
    found: Sequence[resources.Resource],
    alignment_of: Callable[[resources.Resource], str | Path],
    source_tok,
    target_tok,
    *,
    rules: DictionarySettings = DictionarySettings(),
) -> list[mapping.Evidence]:
    """Each resource's evidence with its weight: a parallel corpus's cached alignment counts (in the folder
    `alignment_of` gives: a project's work/alignment/…, or the folder a loose `tweety align` wrote), a dictionary
    read afresh and refused when none of its entries gives tokens, read with the word `rules` (`word_rules`)."""
    return [
        mapping.Evidence(
            r.label,
            mapping.ALIGNMENT_KIND,
            align.load_counts(alignment_of(r)),
            r.weight,
            align.tokens_per_pair(alignment_of(r)),
        )
        if r.kind == resources.PARALLEL
        else _dictionary(r, source_tok, target_tok, rules)
        for r in found
    ]


def _dictionary(r: resources.Resource, source_tok, target_tok, rules: DictionarySettings) -> mapping.Evidence:
    entries = r.read()
    check_tokenizes(entries, source_tok, target_tok, r.files[0])
    return mapping.dictionary_evidence(entries, source_tok, target_tok, name=r.label, weight=r.weight, settings=rules)


def check_tokenizes(entries: list[resources.DictionaryEntry], source_tok, target_tok, path: str) -> None:
    """A dictionary none of whose entries (of the first 2,000) gives known tokens on both sides adds nothing."""

    def known(tok, text: str) -> bool:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return any(i != tok.unk_token_id for i in ids)

    if not any(known(source_tok, e.source) and known(target_tok, e.target) for e in entries[:2000]):
        raise TweetyError(
            "none of the dictionary's entries can be read into tokens (another script or language?)",
            path=path,
            fix="check the dictionary: source-language word first, then its translation",
        )


def build_mapping(
    layout: Layout,
    inputs: Inputs,
    vocabulary: str,
    source_tok,
    target_tok,
    settings: mapping.MappingSettings,
    *,
    aligned: bool = True,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> tuple[mapping.Mapping, StageRecord]:
    clock = _Clock()
    overrides = [
        o
        for f in (inputs.overrides, layout.overrides_file)
        if f and Path(f).exists()
        for o in resources.read_overrides(f)
    ]
    found = evidence(layout, inputs, source_tok, target_tok, aligned=aligned)
    if settings.spelling_share is None and inputs.target_text:
        text = resources.read_text(inputs.target_text)
        settings = replace(settings, spelling_share=mapping.spelling_share_for(source_tok, text))
    m = write_mapping(
        layout.mapping_dir,
        found,
        overrides,
        vocabulary,
        source_tok,
        target_tok,
        settings,
        progress=progress,
        cancel=cancel,
    )
    details = {**m.coverage(), "resources": m.shares(), "spelling_share": settings.spelling_share}
    return m, clock.record("work/mapping", details)


def write_mapping(
    out: str | Path,
    found: list[mapping.Evidence],
    overrides: Sequence[resources.OverrideLine],
    vocabulary: str,
    source_tok,
    target_tok,
    settings: mapping.MappingSettings,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> mapping.Mapping:
    """The mapping from the evidence found, the overrides on top, written to `out` with each token's provenance (its
    resources' shares); extension keeps every source token's own row. A project's map stage and a loose `tweety map`
    both write it here."""
    m = mapping.build_mapping(
        source_tok, target_tok, evidence=found, overrides=overrides, settings=settings, progress=progress, cancel=cancel
    )
    if vocabulary == EXTEND:
        m = extend.keep_source_rows(m, len(source_tok))
    m.save(out, target_tok, source_tok)
    return m


def initialise(
    layout: Layout,
    state: ProjectState,
    source_tok,
    target_tok,
    settings: init.InitSettings,
    extension: extend.ExtensionSettings,
    *,
    model=None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> StageRecord:
    """Write the adapted model into `model/`. Replacement streams the source weights (seconds, little memory);
    extension loads the model (or changes `model`, a loaded copy of the source model), which the source-language
    probe needs."""
    clock = _Clock()
    if settings.method == "transtok" and alignment_unused(state):
        raise TweetyError(
            f"the parallel corpus was not aligned (the {state.stages['align'].summary[UNUSED_BY]} "
            "initialisation needs no alignment), so trans-tokenization has no evidence from it",
            fix="align first: `tweety align --project DIR`, then `tweety map` and `tweety init` with --project DIR",
        )
    out = layout.folder / "model"  # never an older folder's root, which holds the whole project
    summary = initialise_folder(
        out,
        layout.mapping_dir,
        state,
        source_tok,
        target_tok,
        settings,
        extension,
        model=model,
        progress=progress,
        cancel=cancel,
    )
    return clock.record("model", summary)


def initialise_folder(
    out: str | Path,
    mapping_dir: str | Path,
    state: ProjectState,
    source_tok,
    target_tok,
    settings: init.InitSettings,
    extension: extend.ExtensionSettings = extend.ExtensionSettings(),
    *,
    model=None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict:
    """The adapted model written to `out` from the mapping in `mapping_dir`, with the provenance the GGUF export and
    the model card read (`state`: source model, language, settings, inputs) beside it as project.json. A project's
    init stage and a loose `tweety init` both write it here. Returns the stage's summary."""
    out = Path(out)
    source_folder = models.resolve(state.source_model)
    check_space_for_model(source_folder, out)
    m = mapping.Mapping.load(mapping_dir)
    # The new tokens' frequencies are calibrated on the target text (core.calibrate), when there is one; it is read
    # once, here, and only when it is used.
    has_text = bool(state.inputs and state.inputs.target_text)
    share = settings.calibration_share if has_text else 0.0
    text = resources.read_text(state.inputs.target_text) if share else None
    if state.vocabulary == EXTEND:
        model = model if model is not None else models.load_model(source_folder)[0]
        summary = extend_rows(
            m,
            model,
            source_tok,
            target_tok,
            state.inputs,
            extension,
            out,
            share,
            text,
            progress=progress,
            cancel=cancel,
        )
    else:
        m = init.mapping_for_method(settings.method, m, source_tok, target_tok)
        init.initialise_folder(source_folder, m, target_tok, out, settings, text=text, progress=progress, cancel=cancel)
        summary = {"method": settings.method}
    summary["calibration"] = share
    replace(state, stages={}).save(out)
    return summary


def extend_rows(
    m: mapping.Mapping,
    model,
    source_tok,
    target_tok,
    inputs: Inputs,
    extension: extend.ExtensionSettings,
    out: Path,
    calibration: float = 0.0,
    text: str | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict:
    """The extended model (`model`, the source model, is changed): source rows kept, new rows trans-tokenized,
    lowered by the source-language probe and, with a `calibration` share, calibrated on the target `text`."""
    summary = {"method": "transtok", "kept": len(source_tok), "source_penalty": extension.source_penalty}
    if extension.source_penalty:
        corpus = inputs.parallel[0].read()
        w, on_source, on_target = extend.source_language_probe(model, source_tok, corpus.source, corpus.target)
        summary.update(probe_on_source=round(on_source, 3), probe_on_target=round(on_target, 3))
    extended = init.initialise(model, m, init.InitSettings(), progress=progress, cancel=cancel)
    if extension.source_penalty:
        extend.penalise_new_rows(extended, len(source_tok), -extension.source_penalty * w)
    if calibration and text:
        report = Reporter(progress, cancel, "Calibrating frequencies")
        calibrate.calibrate(extended, target_tok, text, calibration, first_row=len(source_tok), report=report)
    init.save_adapted(extended, target_tok, out)
    return summary


def hydra_pairs(
    model,
    language: str,
    *,
    parallel: resources.Resource | None = None,
    back_translate: str | None = None,
    lines: int = 400,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[tuple[str, str]]:
    """Training pairs for a Hydra's tuning: `lines` random pairs of a parallel corpus, or `lines` random lines of
    target-language text back-translated into the source language by the Hydra itself."""
    from core import hydra

    if (parallel is None) == (back_translate is None):
        raise TweetyError("tune a Hydra on a parallel corpus or on back-translated text (one of them)")
    if parallel is not None:
        corpus = parallel.read()
        pairs = list(zip(corpus.source, corpus.target))
        return random.Random(0).sample(pairs, min(lines, len(pairs)))
    text = [line for line in resources.read_lines(back_translate) if line.strip()]
    text = random.Random(0).sample(text, min(lines, len(text)))
    return hydra.back_translate(model, language, text, progress=progress, cancel=cancel)


# --- what a long job will write, so it is refused up front when the disk cannot hold it (core.jobs) ---------------

GGUF_BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32}  # q8_0: 32 weights in 34 bytes


def weights_bytes(model_dir: str | Path) -> int:
    return sum(f.stat().st_size for f in models.weight_files(Path(model_dir)))


def check_space_for_model(model_dir: str | Path, out: str | Path, what: str = "the adapted model") -> None:
    """An adapted (or fine-tuned) model is about as large as the model it is made from."""
    require_free_space(out, weights_bytes(model_dir), what)


def check_space_for_finetuning(model_dir: str | Path, out: str | Path) -> None:
    """The fine-tuned model, plus a checkpoint (weights and the optimizer's two moments) while it trains."""
    require_free_space(out, 4 * weights_bytes(model_dir), "fine-tuning (the model and its checkpoint)")


def check_space_for_gguf(model_dir: str | Path, out: str | Path, gguf_type: str) -> None:
    if not (Path(model_dir) / "config.json").is_file():
        return  # not a model folder: the export says so in its own words
    numel = sum(math.prod(t.shape) for t in models.safetensors_headers(models.weight_files(Path(model_dir))).values())
    require_free_space(Path(out).parent, int(numel * GGUF_BYTES_PER_WEIGHT.get(gguf_type, 4.0)), "the GGUF file")


@contextlib.contextmanager
def finetuning_output(out: str | Path, resume: bool):
    """Around a fine-tuning run: when the operating system fails it (a full disk) before any step was checkpointed,
    the output folder the run created — its marker, a half-written checkpoint — is removed; a run with a complete
    checkpoint keeps it, to be resumed once there is space."""
    try:
        yield
    except Exception as e:
        if plain_os_error(e) is not None and not resume and not _has_checkpoint(out):
            shutil.rmtree(out, ignore_errors=True)
        raise


def _has_checkpoint(out: str | Path) -> bool:
    from core import finetune

    try:
        return finetune.checkpoint_state(out) is not None
    except (TweetyError, OSError, ValueError):
        return False  # a half-written checkpoint is no checkpoint
