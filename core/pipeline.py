"""The whole adaptation in one call (`tweety adapt`, `tweety extend`): a new project folder (core.layout) in which
every stage runs, tokenizer → align → map → init, the same stages and layout the wizard uses — so its output opens in
the wizard, resumes at fine-tuning, and any one stage can be re-run (`tweety map --project OUT …`). The folder
appears only when every stage has finished (cancel or failure leave nothing behind). `--model OUT` then means the
project's model (`OUT/model/`, or `OUT/finetuned/` once fine-tuned) for the commands that take a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from core import align, extend, init, mapping, models, resources, tokenizer
from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, atomic_dir
from core.layout import REPLACE, Inputs
from core.project import Project

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
    plural_endings: tuple[str, ...] | None = None  # a dictionary's word rules instead of the language's (Inputs)
    cognates: bool | None = None
    heldout_text: str | None = None  # for fine-tuning and evaluation in the project (default: the last 5%)
    vocabulary: str = REPLACE  # or EXTEND: keep the source vocabulary and add `extension.new_tokens` tokens
    tokenizer: tokenizer.TokenizerSettings = field(default_factory=tokenizer.TokenizerSettings)
    extension: extend.ExtensionSettings = field(default_factory=extend.ExtensionSettings)
    align: align.AlignSettings = field(default_factory=align.AlignSettings)
    mapping: mapping.MappingSettings = field(default_factory=mapping.MappingSettings)
    init: init.InitSettings = field(default_factory=init.InitSettings)


@dataclass(frozen=True)
class AdaptResult:
    out: Path
    seconds: dict[str, float]  # per stage
    coverage: dict[str, int]
    project: Project

    @property
    def model(self) -> Path:
        return self.project.model_dir


def all_resources(settings: AdaptSettings) -> tuple[resources.Resource, ...]:
    """`parallel` and `dictionary` (weight 1) followed by `resources`, each with a distinct label."""
    given = []
    if settings.parallel:
        given.append(resources.Resource(resources.PARALLEL, tuple(f for f in settings.parallel if f)))
    if settings.dictionary:
        given.append(resources.Resource(resources.DICTIONARY, (settings.dictionary,)))
    return tuple(resources.distinct_labels([*given, *settings.resources]))


def _absolute(path: str | None) -> str | None:
    # A project can be opened from anywhere (the wizard): its inputs are recorded as absolute paths.
    return str(Path(path).absolute()) if path else path


def inputs_of(settings: AdaptSettings) -> Inputs:
    return Inputs(
        target_text=_absolute(settings.target_text) or "",
        resources=tuple(
            resources.Resource(r.kind, tuple(map(_absolute, r.files)), r.weight, r.name)
            for r in all_resources(settings)
        ),
        language_code=settings.language or "",
        heldout_text=_absolute(settings.heldout_text),
        overrides=_absolute(settings.overrides),
        plural_endings=settings.plural_endings,
        cognates=settings.cognates,
    )


def adapt(
    settings: AdaptSettings, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None
) -> AdaptResult:
    """Every stage into a new project folder `settings.out`. Every input is read (and so validated) first; the
    source model's weights are loaded only by extension's probe (replacement streams them)."""
    if not settings.out:
        raise TweetyError("no output folder given", fix="pass --out DIR")
    if settings.vocabulary != REPLACE:
        settings.extension.check()
    with atomic_dir(settings.out) as tmp:
        project = Project.create(tmp, settings.source_model)
        # fvt, mean and random need no translation resource (the baselines of benchmarks/init_quality.py)
        project.set_inputs(
            inputs_of(settings), settings.vocabulary, require_resource=settings.init.method == "transtok"
        )
        project.run(
            "init",
            tokenizer=settings.tokenizer,
            align=settings.align,
            mapping=settings.mapping,
            init=settings.init,
            extension=settings.extension,
            progress=progress,
            cancel=cancel,
        )
        origins = {o.label for o in mapping.Origin}
        coverage = {k: v for k, v in project.state.stages["map"].summary.items() if k in origins}
        seconds = {name: record.seconds for name, record in project.state.stages.items()}
    return AdaptResult(Path(settings.out), seconds, coverage, Project.open(settings.out))
