"""A project folder, stage by stage: what the wizard drives and what `tweety adapt`/`extend` run from start to end.

Each stage method runs the stage function (core.stages) over the folder's layout (core.layout), records what it did
and saves `project.json`, so a reopened project resumes at its first unfinished stage and any stage can be re-run
alone (the wizard's buttons, `tweety map --project DIR`). A re-run building stage makes every later stage stale;
they are forgotten, never silently kept.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

from core import stages
from core.errors import TweetyError
from core.models import DEFAULT_MODEL
from core.jobs import MARKER, CancelToken, ProgressFn, atomic_file, check_output_dir
from core.layout import (
    BUILDING,
    EXTEND,
    OPTIONAL,
    PROJECT_FILE,
    REPLACE,
    STAGES,
    Inputs,
    Layout,
    ProjectState,
    StageRecord,
)
from core.resources import distinct_labels

__all__ = ["Project", "Inputs", "ProjectState", "StageRecord", "PROJECT_FILE", "STAGES", "REPLACE", "EXTEND"]

log = logging.getLogger(__name__)

HYDRA = "hydra"  # the record of a tuned Hydra (not a step of the sequence: the wizard tunes it on demand)
TRANSLATION = "translation"  # the last translation measurement (core.translating)


class Project:
    def __init__(self, folder: str | Path, state: ProjectState):
        self.folder, self.state = Path(folder), state
        self.layout = Layout(self.folder, state)
        self._source = None  # (model, tokenizer), loaded once per session
        self._source_tok = None

    # -- folders (core.layout owns them) --
    tokenizer_dir = property(lambda self: self.layout.tokenizer_dir)
    alignment_dir = property(lambda self: self.layout.alignment_dir)
    mapping_dir = property(lambda self: self.layout.mapping_dir)
    model_dir = property(lambda self: self.layout.model_dir)
    finetune_dir = property(lambda self: self.layout.finetune_dir)
    split_dir = property(lambda self: self.layout.split_dir)
    export_dir = property(lambda self: self.layout.export_dir)
    overrides_file = property(lambda self: self.layout.overrides_file)  # the linguist's corrections, user-editable
    hydra_dir = property(lambda self: self.folder / "hydra")
    hydra_checkpoint_dir = property(lambda self: self.layout.work / "hydra-tuning")  # a stopped tune_hydra's steps
    final_model_dir = property(lambda self: self.layout.final_model_dir)  # fine-tuned when there is one

    @staticmethod
    def create(folder: str | Path, source_model: str = DEFAULT_MODEL) -> "Project":
        """A new project in `folder`, which must be new or empty (never a user's folder with files in it)."""
        folder = Path(folder)
        check_output_dir(folder, replace_ours=False)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("written by Tweety Studio\n")
        project = Project(folder, ProjectState(source_model=str(source_model)))
        project.save()
        return project

    @staticmethod
    def open(folder: str | Path) -> "Project":
        """Any project folder: the wizard's, `tweety adapt`'s or `tweety extend`'s, of this version or older."""
        return Project(folder, ProjectState.load(folder))

    def save(self) -> None:
        self.state.save(self.folder)

    @property
    def finished(self) -> list[str]:
        return [s for s in STAGES if s in self.state.stages]

    @property
    def next_stage(self) -> str | None:
        """The first stage not yet run (where a reopened project resumes). Fine-tuning is optional: once a later
        stage ran without it, it is not what the project waits for."""
        done = self.state.stages
        for i, stage in enumerate(STAGES):
            if stage not in done and not (stage in OPTIONAL and any(s in done for s in STAGES[i + 1 :])):
                return stage
        return None

    def stale_after(self, stage: str) -> list[str]:
        """The finished stages a re-run of `stage` would discard (for a warning before it runs)."""
        if stage not in BUILDING:
            return []
        later = STAGES[STAGES.index(stage) + 1 :]
        return [s for s in (*later, HYDRA, TRANSLATION) if s in self.state.stages]

    def _record(self, stage: str, record: StageRecord, settings=None) -> None:
        for name in self.stale_after(stage):
            self.state.stages.pop(name, None)
        if settings is not None:  # recorded under the settings' own name (the map stage's are "mapping")
            self.state.settings["mapping" if stage == "map" else stage] = asdict(settings)
        self.state.stages[stage] = record
        self.save()

    # -- source model --
    def set_source_model(self, spec: str) -> None:
        if spec != self.state.source_model:
            self.state.source_model, self._source, self._source_tok = str(spec), None, None
            self.state.stages.clear()
            self.save()

    def source(self):
        """(model, tokenizer) of the source model, loaded on first use."""
        from core.models import load_model

        if self._source is None:
            self._source = load_model(self.state.source_model)
            self._source_tok = self._source[1]
        return self._source

    def source_tokenizer(self):
        """The source model's tokenizer alone (no weights loaded: cheap enough for the GUI thread after the first
        conversion of a GGUF source)."""
        from core.models import load_tokenizer

        if self._source_tok is None:
            self._source_tok = load_tokenizer(self.state.source_model)
        return self._source_tok

    def target_tokenizer(self):
        from core import tokenizer

        return tokenizer.load_tokenizer(self.tokenizer_dir)

    # -- the stages --
    def set_inputs(
        self, inputs: Inputs, vocabulary: str | None = None, *, require_resource: bool = True
    ) -> dict[str, int]:
        """Validate every input file (raises `TweetyError` naming file and line) and record them. Returns counts."""
        from core import resources

        start = time.monotonic()
        inputs = replace(inputs, resources=tuple(distinct_labels(list(inputs.resources))))
        counts = stages.check_inputs(inputs, vocabulary or self.state.vocabulary, require_resource)
        self.state.inputs = inputs
        if vocabulary:
            self.state.vocabulary = vocabulary
        self.state.inputs_sha256 = resources.sha256_by_name(inputs.files())
        shutil.rmtree(self.split_dir, ignore_errors=True)  # the held-out split of the previous target text
        self._record("data", StageRecord(round(time.monotonic() - start, 2), ".", counts))
        return counts

    def inputs(self) -> Inputs:
        if self.state.inputs is None:
            raise TweetyError("no input files chosen yet", fix="fill in the Language & data page first")
        return self.state.inputs

    def advise(self, target_text: str | Path, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None):
        """Is adapting worth it? The source model measured on `target_text` before anything is adapted: keep,
        extend or replace (core.advise.Advice)."""
        from core.advise import advise
        from core.resources import read_text

        return advise(*self.source(), read_text(target_text), progress=progress, cancel=cancel)

    def train_tokenizer(
        self,
        settings=None,
        *,
        vocabulary: str | None = None,
        extension=None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ):
        """Train the target tokenizer — a new vocabulary (`replace`) or the source's extended with target-language
        tokens (`extend`, settings `extension`); returns it (a transformers tokenizer)."""
        from core import extend, tokenizer

        vocabulary = vocabulary or self.state.vocabulary
        settings = settings or self.state.settings_of(tokenizer.TokenizerSettings, "tokenizer")
        extension = extension or self.state.settings_of(extend.ExtensionSettings, "extend")
        inputs = self.inputs()
        stages.check_vocabulary(inputs, vocabulary)  # the files were read when the inputs were set
        record = stages.train_tokenizer(
            self.layout,
            inputs,
            self.source_tokenizer(),
            vocabulary,
            settings,
            extension,
            progress=progress,
            cancel=cancel,
        )
        self.state.vocabulary = vocabulary
        if vocabulary == EXTEND:
            self.state.settings["extend"] = {**asdict(extension), "gguf_pre": extend.gguf_pre(self.state.source_model)}
        self._record("tokenizer", record, settings)
        return self.target_tokenizer()

    def align(
        self,
        settings=None,
        *,
        init_method: str = "transtok",
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ):
        """Align each parallel corpus (skipped, recorded as such, when there is none, or when `init_method` is a
        baseline that reads no alignment: `run` says so for `tweety adapt --init fvt`). Returns the record."""
        from core import align

        settings = settings or self.state.settings_of(align.AlignSettings, "align")
        record = stages.align_corpora(
            self.layout,
            self.inputs(),
            self.source_tokenizer(),
            self.target_tokenizer(),
            settings,
            init_method=init_method,
            progress=progress,
            cancel=cancel,
        )
        self._record("align", record, settings)
        return record

    def build_mapping(self, settings=None, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None):
        """Build and save the target→source mapping from every resource and the overrides; returns it."""
        from core import mapping

        settings = settings or self.state.settings_of(mapping.MappingSettings, "mapping")
        m, record = stages.build_mapping(
            self.layout,
            self.inputs(),
            self.state.vocabulary,
            self.source_tokenizer(),
            self.target_tokenizer(),
            settings,
            aligned=not stages.alignment_unused(self.state),
            progress=progress,
            cancel=cancel,
        )
        self._record("map", record, settings)
        return m

    def add_overrides(self, lines) -> None:
        """Append `OverrideLine`s to the project's overrides file (created with its format help); they take effect
        at the next `build_mapping`. Lines the user wrote by hand are kept; lines that name no token are refused
        before anything is written. Needs only the tokenizers, never the model."""
        from core.mapping import OVERRIDES_HELP, resolve_overrides
        from core.resources import format_override

        resolve_overrides(lines, self.source_tokenizer(), self.target_tokenizer())
        old = self.overrides_file.read_text(encoding="utf-8") if self.overrides_file.exists() else OVERRIDES_HELP
        with atomic_file(self.overrides_file) as tmp:
            tmp.write_text(
                old + ("" if old.endswith("\n") else "\n") + "".join(format_override(o) + "\n" for o in lines),
                encoding="utf-8",
            )

    def remap(self, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None):
        """Mapping and initialisation again with the recorded settings, from the cached alignment counts (after
        the overrides changed)."""
        m = self.build_mapping(progress=progress, cancel=cancel)
        self.initialise(progress=progress, cancel=cancel)
        return m

    def initialise(
        self, settings=None, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None
    ) -> Path:
        """Write the adapted model (`model/`) from the mapping; the source model's files stay untouched."""
        import copy

        from core import extend, init

        settings = settings or self.state.settings_of(init.InitSettings, "init")
        # extension changes a loaded model: a copy of the one this session holds saves loading it again
        model = copy.deepcopy(self._source[0]) if self._source and self.state.vocabulary == EXTEND else None
        self.state.settings["init"] = asdict(settings)  # recorded before: the model folder's provenance has it
        record = stages.initialise(
            self.layout,
            self.state,
            self.source_tokenizer(),
            self.target_tokenizer(),
            settings,
            self.state.settings_of(extend.ExtensionSettings, "extend"),
            model=model,
            progress=progress,
            cancel=cancel,
        )
        shutil.rmtree(self.finetune_dir, ignore_errors=True)  # fine-tuned from the old initialisation: stale
        shutil.rmtree(self.hydra_checkpoint_dir, ignore_errors=True)  # a stopped tuning of the old tables, too
        self._record("init", record)
        self.write_model_cards()
        return self.model_dir

    def run(
        self,
        until: str = "init",
        *,
        tokenizer=None,
        extension=None,
        align=None,
        mapping=None,
        init=None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        """Every stage from the next unfinished one up to `until` (settings given here, else as recorded, else
        defaults): how `tweety adapt` runs, and how an interrupted project resumes."""
        steps = {
            "tokenizer": lambda: self.train_tokenizer(tokenizer, extension=extension, progress=progress, cancel=cancel),
            "align": lambda: self.align(align, init_method=self._init_method(init), progress=progress, cancel=cancel),
            "map": lambda: self.build_mapping(mapping, progress=progress, cancel=cancel),
            "init": lambda: self.initialise(init, progress=progress, cancel=cancel),
        }
        for stage in STAGES[STAGES.index("tokenizer") : STAGES.index(until) + 1]:
            if stage not in self.state.stages:
                steps[stage]()

    def _init_method(self, init=None) -> str:
        """The initialisation a run will use: `init`'s, else the recorded one (an interrupted run resumes with it)."""
        from core.init import InitSettings

        return (init or self.state.settings_of(InitSettings, "init")).method

    # -- after the model exists --
    def texts(self) -> tuple[Path, Path]:
        """(training text, held-out text) for fine-tuning and evaluation. Without a held-out file the last 5% of the
        target text is held out (written once to `work/split/`) and not trained on; the tokenizer did see it."""
        from core import resources

        inputs = self.inputs()
        if inputs.heldout_text:
            return Path(inputs.target_text), Path(inputs.heldout_text)
        train, held = self.split_dir / "train.txt", self.split_dir / "heldout.txt"
        if not held.exists():
            lines = resources.read_lines(inputs.target_text)
            cut = len(lines) - max(1, len(lines) // 20)
            for path, part in ((train, lines[:cut]), (held, lines[cut:])):
                with atomic_file(path) as tmp:
                    tmp.write_text("\n".join(part) + "\n", encoding="utf-8")
        return train, held

    def finetune(
        self,
        settings=None,
        *,
        resume: bool = False,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ):
        """Fine-tune `model/` into `finetuned/` (see core.finetune); `resume` continues a stopped run. A cancelled
        run records nothing but keeps its checkpoint (`finetune_checkpoint`). Returns `FinetuneResult`."""
        from core import finetune

        start = time.monotonic()
        settings = settings or finetune.FinetuneSettings()
        if not resume:
            stages.check_space_for_finetuning(self.model_dir, self.finetune_dir)
        train, held = self.texts()
        with stages.finetuning_output(self.finetune_dir, resume):
            result = finetune.finetune(
                self.model_dir,
                train,
                held,
                self.finetune_dir,
                settings,
                resume=resume,
                progress=progress,
                cancel=cancel,
            )
        self._record(
            "finetune",
            StageRecord(
                round(time.monotonic() - start, 2),
                "finetuned",
                {
                    "stage": settings.stage,
                    "steps": result.steps,
                    "initial_bpb": result.initial_bpb,
                    "final_bpb": result.final_bpb,
                    "tokens_per_s": round(result.tokens_per_s, 1),
                },
            ),
            settings,
        )
        self.write_model_cards()
        return result

    def record_finetuned(self, folder: str | Path) -> Path:
        """Use a model fine-tuned elsewhere (a cluster job's output folder) as the project's fine-tuned model, so
        Evaluate, Export and Chat use it. It must be this project's model: same vocabulary, same architecture."""
        from core.resources import read_json

        folder = Path(folder).resolve()
        theirs = read_json(folder / "config.json", "config.json is missing: this is not a model folder")
        ours = read_json(self.model_dir / "config.json", "the project has no adapted model yet")
        for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers"):
            if theirs.get(key) != ours.get(key):
                raise TweetyError(
                    f"this model does not belong to the project: its {key} is {theirs.get(key)}, the "
                    f"project's is {ours.get(key)}",
                    path=folder / "config.json",
                    fix="choose the output folder of this project's fine-tuning job",
                )
        provenance = folder / PROJECT_FILE
        tuned = (read_json(provenance, "").get("settings") or {}).get("finetune") if provenance.exists() else None
        output = (
            str(folder.relative_to(self.folder.resolve()))
            if folder.is_relative_to(self.folder.resolve())
            else str(folder)
        )
        self._record(
            "finetune",
            StageRecord(
                0.0,
                output,
                {
                    "stage": (tuned or {}).get("stage"),
                    "steps": (tuned or {}).get("steps"),
                    "trained elsewhere": str(folder),
                },
            ),
        )
        self.write_model_cards()
        return folder

    def finetune_checkpoint(self):
        """The state of the last fine-tuning run's checkpoint (`RunState`), or None."""
        from core.finetune import checkpoint_state

        return checkpoint_state(self.finetune_dir)

    def discard_finetune(self) -> None:
        self.state.stages.pop("finetune", None)
        shutil.rmtree(self.finetune_dir, ignore_errors=True)
        self.save()

    def _examples(self, code: str) -> dict:
        from core import hydra

        corpora = self.inputs().parallel
        return {code: hydra.corpus_examples(*corpora[0].files)} if corpora else {}

    def hydra(self, source_language: str = "en", target_language: str | None = None):
        """The source model's body with its own tables for `source_language` and the final model's for
        `target_language` (default: the project's language): a prompt read in one language, the reply written in
        the other. The Hydra tuned in this project (`tune_hydra`) when there is one. Three short pairs of the
        first parallel corpus, when there is one, make its translation prompt. core.hydra refuses a fine-tuned
        model whose body changed (stage `outer-layers`)."""
        from core import hydra

        code = target_language or self.state.language
        if not code:
            raise TweetyError(
                "the project has no target language code",
                fix="record it with the input files (the Language & data page; `--language` on the "
                "command line), or name the language to use (e.g. es)",
            )
        if HYDRA in self.state.stages and (self.hydra_dir / "hydra.json").exists():
            return hydra.load_hydra(self.hydra_dir)
        return hydra.build_hydra(
            self.source(), {code: self.final_model_dir}, source_language=source_language, examples=self._examples(code)
        )

    def tune_hydra(
        self,
        language: str | None = None,
        settings=None,
        *,
        source: str = "parallel",
        lines: int = 400,
        pairs: list[tuple[str, str]] | None = None,
        examples_of=None,
        run_key: dict[str, str] | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ) -> list[float]:
        """Tune the Hydra's tables of `language` (default: the project's) on `lines` pairs — of the first parallel
        corpus (`source="parallel"`), of the target text back-translated by the Hydra (`"back-translation"`), or
        the `pairs` given — and keep the tuned Hydra in `hydra/`. `examples_of`: each pair's prompt examples, and
        `run_key` what else makes the tuning the same (core.hydra.finetune_language). Returns the loss of each step.
        A cancelled or killed tuning leaves the Hydra as it was and its steps in `hydra_checkpoint_dir`: the same
        tuning started again continues from there (other settings start over)."""
        from core import hydra

        code = language or self.state.language
        settings = settings or hydra.HydraTuning()
        model = self.hydra(target_language=code)
        inputs = self.inputs()
        if pairs is not None:
            source = "given pairs"
        elif source == "parallel":
            if not inputs.parallel:
                raise TweetyError("the project has no parallel corpus to tune on", fix="tune by back-translation")
            pairs = stages.hydra_pairs(model, code, parallel=inputs.parallel[0], lines=lines)
        elif source == "back-translation":
            pairs = stages.hydra_pairs(
                model, code, back_translate=str(self.texts()[0]), lines=lines, progress=progress, cancel=cancel
            )
        else:
            raise TweetyError(f"unknown tuning source {source!r}", fix="choose parallel or back-translation")
        start = time.monotonic()
        losses = hydra.finetune_language(
            model,
            code,
            pairs,
            settings,
            examples_of=examples_of,
            checkpoint=self.hydra_checkpoint_dir,
            run_key=run_key,
            progress=progress,
            cancel=cancel,
        )
        hydra.save_hydra(model, self.hydra_dir)
        last = losses[-10:]
        self.state.stages[HYDRA] = StageRecord(
            round(time.monotonic() - start, 2),
            "hydra",
            {
                "language": code,
                "pairs": len(pairs),
                "from": source,
                "steps": settings.steps,
                "first_loss": round(losses[0], 4),
                "last_loss": round(sum(last) / len(last), 4),
            },
        )
        self.state.settings[HYDRA] = asdict(settings)
        self.state.stages.pop(TRANSLATION, None)  # measured with the Hydra before this tuning
        self.save()
        # Only now, with the tuned tables kept: a kill before this continues from the checkpoint instead.
        shutil.rmtree(self.hydra_checkpoint_dir, ignore_errors=True)
        return losses

    def hydra_tuning_checkpoint(self):
        """Where a stopped `tune_hydra` stands (core.hydra.TuningState: its step, of how many), or None when none
        stopped, or when what it kept cannot be read (the next tuning starts over and says so)."""
        from core.hydra import tuning_checkpoint

        try:
            return tuning_checkpoint(self.hydra_checkpoint_dir)
        except TweetyError:
            return None

    def evaluate(
        self, *, max_bytes: int = 0, progress: ProgressFn | None = None, cancel: CancelToken | None = None
    ) -> dict[str, dict]:
        """Bits per byte of the source model (own tokenizer), the adapted model as initialised and, when there is
        one, the fine-tuned model, on the held-out text."""
        from core import resources
        from core.evaluate import bits_per_byte
        from core.models import load_model

        start = time.monotonic()
        text = resources.head_bytes(resources.read_text(self.texts()[1]), max_bytes)
        results = {"source model": asdict(bits_per_byte(*self.source(), text, progress=progress, cancel=cancel))}
        models = {"adapted model": self.model_dir}
        if "finetune" in self.state.stages:
            models["fine-tuned model"] = self.final_model_dir
        for name, folder in models.items():
            results[name] = asdict(bits_per_byte(*load_model(folder), text, progress=progress, cancel=cancel))
        self._record("evaluate", StageRecord(round(time.monotonic() - start, 2), ".", results))
        self.write_model_cards()
        return results

    def export(
        self,
        settings=None,
        out_file: str | Path | None = None,
        *,
        handoff=None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
    ):
        """Export the final model (fine-tuned when there is one) as GGUF (default `export/<project>-<type>.gguf`),
        with its model card beside it and the hand-offs asked for (`handoff`, core.handoff.HandOff: an Ollama
        Modelfile, LM Studio's models folder). Returns `ExportResult` (its `handoff`: what was written beside)."""
        from core import export
        from core import handoff as H

        start = time.monotonic()
        settings = settings or export.ExportSettings()
        handoff = handoff or H.HandOff()
        name = self.folder.resolve().name
        facts = H.card_facts(self.state, name=name)
        if handoff.system is None:
            handoff = replace(handoff, system=H.translation_system(facts.source_name, facts.language))
        out = H.destination(out_file or self.export_dir / f"{self.folder.name}-{settings.type}.gguf", name, handoff)
        H.check_destination(out, handoff, settings.overwrite)  # before a byte is written
        stages.check_space_for_gguf(self.final_model_dir, out, settings.type)
        result = export.export_gguf(self.final_model_dir, out, settings, progress=progress, cancel=cancel)
        given = H.hand_off(result.path, facts, handoff, overwrite=settings.overwrite)
        self._record(
            "export",
            StageRecord(
                round(time.monotonic() - start, 2),
                str(out),
                {
                    "file": str(out),
                    "type": result.type,
                    "bytes": result.bytes,
                    "card": str(given.card),
                    **({"modelfile": str(given.modelfile), "ollama": given.ollama_command} if given.modelfile else {}),
                },
            ),
        )
        return replace(result, handoff=given, warnings=[*result.warnings, *given.warnings])

    def write_model_cards(self) -> None:
        """A model card (README.md) in each model folder, from what project.json records now (core.handoff); a
        README.md the user put there is left alone."""
        from core import handoff as H

        folders = {self.model_dir: H.ADAPTED}
        if "finetune" in self.state.stages:
            folders[self.final_model_dir] = H.FINETUNED
        for folder, which in folders.items():
            if not (folder / "config.json").is_file():
                continue
            try:
                H.write_model_card(folder, H.card_facts(self.state, name=self.folder.resolve().name, this_model=which))
            except (TweetyError, OSError) as e:  # a card is a courtesy: it never fails the stage it follows
                log.warning("no model card written in %s: %s", folder, e)
