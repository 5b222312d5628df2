"""A project folder's state (`project.json`): what went in, which stages ran, how long they took, what they found.

The GUI reopens a project from it; the CLI writes it so a run can be inspected later."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from core.errors import TweetyError
from core.jobs import atomic_file

PROJECT_FILE = "project.json"


@dataclass
class StageRecord:
    seconds: float
    output: str  # folder, relative to the project
    summary: dict = field(default_factory=dict)


@dataclass
class ProjectState:
    source_model: str
    target_text: str | None = None
    parallel: list[str] | None = None
    dictionary: str | None = None
    language: str | None = None  # target language code (ISO 639), e.g. "es"
    inputs_sha256: dict[str, str] = field(default_factory=dict)  # input file name → sha256, for provenance
    settings: dict = field(default_factory=dict)
    stages: dict[str, StageRecord] = field(default_factory=dict)

    def save(self, folder: str | Path) -> None:
        with atomic_file(Path(folder) / PROJECT_FILE) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False))

    @staticmethod
    def load(folder: str | Path) -> "ProjectState":
        path = Path(folder) / PROJECT_FILE
        try:
            data = json.loads(path.read_text())
            data["stages"] = {k: StageRecord(**v) for k, v in data.get("stages", {}).items()}
            return ProjectState(**data)
        except FileNotFoundError:
            raise TweetyError("not a Tweety Studio project (no project.json)", path=path.parent,
                              fix="choose a folder created by Tweety Studio") from None
        except (json.JSONDecodeError, TypeError) as e:
            raise TweetyError(f"project.json is damaged ({e})", path=path, fix="restore it or start a new project")


# --- a project folder, stage by stage (what the desktop wizard drives) ----------------------------------------------

STAGES = ("data", "tokenizer", "align", "map", "init", "finetune", "evaluate", "export")
OPTIONAL = {"finetune"}


@dataclass(frozen=True)
class Inputs:
    """What the user chose on the data page; paths are kept as given (the files stay where the user keeps them)."""
    language_name: str
    language_code: str
    target_text: str
    parallel: tuple[str, str] | None = None  # (source side, target side); one TSV/TMX file: (file, "")
    dictionary: str | None = None
    heldout_text: str | None = None  # for evaluation; without it the last 5% of the target text is used


class Project:
    """A project folder: `project.json` plus one sub-folder per stage (`work/tokenizer`, `work/alignment`,
    `work/mapping`, `model/`, `finetuned/`, `export/`). Each stage method runs the core function, records what it
    did and saves the state, so a reopened project resumes after its last finished stage. Stages only read earlier
    stages' folders.
    """

    def __init__(self, folder: str | Path, state: ProjectState):
        self.folder, self.state = Path(folder), state
        self._source = None  # (model, tokenizer), loaded once per session

    # -- folders --
    tokenizer_dir = property(lambda self: self.folder / "work" / "tokenizer")
    alignment_dir = property(lambda self: self.folder / "work" / "alignment")
    mapping_dir = property(lambda self: self.folder / "work" / "mapping")
    model_dir = property(lambda self: self.folder / "model")
    finetune_dir = property(lambda self: self.folder / "finetuned")
    split_dir = property(lambda self: self.folder / "work" / "split")
    export_dir = property(lambda self: self.folder / "export")
    overrides_file = property(lambda self: self.folder / "overrides.tsv")  # the linguist's corrections, user-editable

    @staticmethod
    def create(folder: str | Path, source_model: str = "default") -> "Project":
        """A new project in `folder`, which must be new or empty (never a user's folder with files in it)."""
        from core.jobs import MARKER, check_output_dir

        folder = Path(folder)
        check_output_dir(folder, replace_ours=False)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("written by Tweety Studio\n")
        project = Project(folder, ProjectState(source_model=str(source_model)))
        project.save()
        return project

    @staticmethod
    def open(folder: str | Path) -> "Project":
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
            if stage not in done and not (stage in OPTIONAL and any(s in done for s in STAGES[i + 1:])):
                return stage
        return None

    def _record(self, stage: str, seconds: float, output: str, summary: dict) -> None:
        # A re-run building stage makes every later stage stale: they are forgotten, not silently kept.
        # (Evaluating or exporting again changes nothing the other stages read.)
        later = STAGES[STAGES.index(stage):] if stage not in ("evaluate", "export") else (stage,)
        for name in later:
            self.state.stages.pop(name, None)
        self.state.stages[stage] = StageRecord(round(seconds, 2), output, summary)
        self.save()

    # -- source model --
    def set_source_model(self, spec: str) -> None:
        if spec != self.state.source_model:
            self.state.source_model, self._source = str(spec), None
            self.state.stages.clear()
            self.save()

    def source(self):
        """(model, tokenizer) of the source model, loaded on first use."""
        from core.models import load_model

        if self._source is None:
            self._source = load_model(self.state.source_model)
        return self._source

    # -- stages --
    def set_inputs(self, inputs: Inputs) -> dict[str, int]:
        """Validate every input file (raises `TweetyError` naming file and line) and record them. Returns counts."""
        import time

        from core import resources

        start = time.monotonic()
        counts = {"target lines": len(resources.read_lines(inputs.target_text))}
        if inputs.parallel:
            counts["parallel pairs"] = len(resources.read_parallel(inputs.parallel[0], inputs.parallel[1] or None))
        if inputs.dictionary:
            counts["dictionary entries"] = len(resources.read_dictionary(inputs.dictionary))
        if inputs.heldout_text:
            counts["held-out lines"] = len(resources.read_lines(inputs.heldout_text))
        if not inputs.parallel and not inputs.dictionary:
            raise TweetyError("trans-tokenization needs a translation resource",
                              fix="add a parallel corpus and/or a bilingual dictionary")
        s = self.state
        s.target_text, s.dictionary, s.language = inputs.target_text, inputs.dictionary, inputs.language_code
        s.parallel = list(inputs.parallel) if inputs.parallel else None
        s.settings["inputs"] = asdict(inputs)
        s.inputs_sha256 = resources.sha256_by_name([inputs.target_text, inputs.dictionary, *(inputs.parallel or ())])
        shutil.rmtree(self.split_dir, ignore_errors=True)  # the held-out split of the previous target text
        self._record("data", time.monotonic() - start, ".", counts)
        return counts

    def inputs(self) -> Inputs:
        data = self.state.settings.get("inputs")
        if data is None:
            raise TweetyError("no input files chosen yet", fix="fill in the Language & data page first")
        data = dict(data)
        data["parallel"] = tuple(data["parallel"]) if data.get("parallel") else None
        return Inputs(**data)

    def train_tokenizer(self, settings=None, *, progress=None, cancel=None):
        """Train the target tokenizer; returns it (a transformers tokenizer)."""
        import time

        from core import resources, tokenizer

        settings = settings or tokenizer.TokenizerSettings()
        start = time.monotonic()
        _, source_tok = self.source()
        tokenizer.train_tokenizer(resources.read_lines(self.inputs().target_text), source_tok, self.tokenizer_dir,
                                  settings, progress=progress, cancel=cancel)
        tok = tokenizer.load_tokenizer(self.tokenizer_dir)
        self.state.settings["tokenizer"] = asdict(settings)
        self._record("tokenizer", time.monotonic() - start, "work/tokenizer", {"vocab_size": len(tok)})
        return tok

    def target_tokenizer(self):
        from core import tokenizer

        return tokenizer.load_tokenizer(self.tokenizer_dir)

    def align(self, settings=None, *, progress=None, cancel=None):
        """Align the parallel corpus (skipped, recorded as such, when there is none). Returns `AlignmentStats`."""
        import time

        from core import align, resources

        start = time.monotonic()
        inputs = self.inputs()
        if not inputs.parallel:
            self._record("align", 0, "", {"skipped": "no parallel corpus"})
            return None
        settings = settings or align.AlignSettings()
        corpus = resources.read_parallel(inputs.parallel[0], inputs.parallel[1] or None)
        stats = align.align_corpus(corpus, self.source()[1], self.target_tokenizer(), self.alignment_dir, settings,
                                   progress=progress, cancel=cancel)
        self.state.settings["align"] = asdict(settings)
        self._record("align", time.monotonic() - start, "work/alignment", asdict(stats))
        return stats

    def build_mapping(self, settings=None, *, progress=None, cancel=None):
        """Build and save the target→source mapping; returns it."""
        import time

        from core import align, mapping, resources

        start = time.monotonic()
        settings = settings or mapping.MappingSettings()
        inputs = self.inputs()
        counts = align.load_counts(self.alignment_dir) if inputs.parallel else None
        dictionary = resources.read_dictionary(inputs.dictionary) if inputs.dictionary else None
        overrides = resources.read_overrides(self.overrides_file) if self.overrides_file.exists() else ()
        source_tok, target_tok = self.source()[1], self.target_tokenizer()
        m = mapping.build_mapping(source_tok, target_tok, alignment_counts=counts, dictionary=dictionary,
                                  overrides=overrides, settings=settings, progress=progress, cancel=cancel)
        m.save(self.mapping_dir, target_tok, source_tok)
        self.state.settings["mapping"] = asdict(settings)
        self._record("map", time.monotonic() - start, "work/mapping", m.coverage())
        return m

    def add_overrides(self, lines) -> None:
        """Append `OverrideLine`s to the project's overrides file (created with its format help); they take effect
        at the next `build_mapping`. Lines the user wrote by hand are kept; lines that name no token are refused
        before anything is written."""
        from core.mapping import OVERRIDES_HELP, resolve_overrides
        from core.resources import format_override

        resolve_overrides(lines, self.source()[1], self.target_tokenizer())
        old = self.overrides_file.read_text(encoding="utf-8") if self.overrides_file.exists() else OVERRIDES_HELP
        with atomic_file(self.overrides_file) as tmp:
            tmp.write_text(old + ("" if old.endswith("\n") else "\n") +
                           "".join(format_override(o) + "\n" for o in lines), encoding="utf-8")

    def remap(self, *, progress=None, cancel=None):
        """Mapping and initialisation again, from the cached alignment counts (after the overrides changed)."""
        from core import init, mapping

        def saved(cls, key: str):  # settings as recorded (fields a newer version dropped are ignored)
            recorded = self.state.settings.get(key, {})
            return cls(**{k: v for k, v in recorded.items() if k in cls.__dataclass_fields__})

        m = self.build_mapping(saved(mapping.MappingSettings, "mapping"), progress=progress, cancel=cancel)
        self.initialise(saved(init.InitSettings, "init"), progress=progress, cancel=cancel)
        return m

    def initialise(self, settings=None, *, progress=None, cancel=None) -> Path:
        """Write the adapted model (`model/`), initialised from the mapping; streamed from the source model's files
        (seconds, little memory), which stay untouched."""
        import time

        from core import init, mapping, models

        start = time.monotonic()
        settings = settings or init.InitSettings()
        source_tok, target_tok = self.source()[1], self.target_tokenizer()
        m = init.mapping_for_method(settings.method, mapping.Mapping.load(self.mapping_dir), source_tok, target_tok)
        init.initialise_folder(models.resolve(self.state.source_model), m, target_tok, self.model_dir, settings,
                               progress=progress, cancel=cancel)
        shutil.rmtree(self.finetune_dir, ignore_errors=True)  # fine-tuned from the old initialisation: stale
        self.state.settings["init"] = asdict(settings)
        # The model folder carries the provenance the GGUF export reads.
        ProjectState(**{**asdict(self.state), "stages": {}}).save(self.model_dir)
        self._record("init", time.monotonic() - start, "model", {"method": settings.method})
        return self.model_dir

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

    def finetune(self, settings=None, *, resume: bool = False, progress=None, cancel=None):
        """Fine-tune `model/` into `finetuned/` (see core.finetune); `resume` continues a stopped run. A cancelled
        run records nothing but keeps its checkpoint (`finetune_checkpoint`). Returns `FinetuneResult`."""
        import time

        from core import finetune

        start = time.monotonic()
        settings = settings or finetune.FinetuneSettings()
        train, held = self.texts()
        result = finetune.finetune(self.model_dir, train, held, self.finetune_dir, settings, resume=resume,
                                   progress=progress, cancel=cancel)
        self.state.settings["finetune"] = asdict(settings)
        self._record("finetune", time.monotonic() - start, "finetuned", {
            "stage": settings.stage, "steps": result.steps, "initial_bpb": result.initial_bpb,
            "final_bpb": result.final_bpb, "tokens_per_s": round(result.tokens_per_s, 1)})
        return result

    def finetune_checkpoint(self):
        """The state of the last fine-tuning run's checkpoint (`RunState`), or None."""
        from core.finetune import checkpoint_state

        return checkpoint_state(self.finetune_dir)

    def discard_finetune(self) -> None:
        self.state.stages.pop("finetune", None)
        shutil.rmtree(self.finetune_dir, ignore_errors=True)
        self.save()

    @property
    def final_model_dir(self) -> Path:
        """The model to evaluate, export and chat with: the fine-tuned one when there is one."""
        return self.finetune_dir if "finetune" in self.state.stages else self.model_dir

    def hydra(self, source_language: str = "en", target_language: str | None = None):
        """The source model's body with its own tables for `source_language` and the final model's for
        `target_language` (default: the project's language) (core.hydra): a prompt read in the source language, the
        reply written in the target language. Three short pairs of the parallel corpus, when there is one, make its
        translation prompt. core.hydra refuses a fine-tuned model whose body changed (stage `outer-layers`)."""
        from core import hydra

        code = target_language or self.state.language
        if not code:
            raise TweetyError("the project has no target language code", fix="type the code (e.g. es) in To")
        inputs = self.inputs()
        examples = {}
        if inputs.parallel:
            examples[code] = hydra.corpus_examples(inputs.parallel[0], inputs.parallel[1] or None)
        return hydra.build_hydra(self.source(), {code: self.final_model_dir},
                                 source_language=source_language, examples=examples)

    def evaluate(self, *, max_bytes: int = 0, progress=None, cancel=None) -> dict[str, dict]:
        """Bits per byte of the source model (own tokenizer), the adapted model as initialised and, when there is
        one, the fine-tuned model, on the held-out text."""
        import time

        from core import resources
        from core.evaluate import bits_per_byte
        from core.models import load_model

        start = time.monotonic()
        text = resources.head_bytes(resources.read_text(self.texts()[1]), max_bytes)
        results = {"source model": asdict(bits_per_byte(*self.source(), text, progress=progress, cancel=cancel))}
        models = {"adapted model": self.model_dir}
        if "finetune" in self.state.stages:
            models["fine-tuned model"] = self.finetune_dir
        for name, folder in models.items():
            results[name] = asdict(bits_per_byte(*load_model(folder), text, progress=progress, cancel=cancel))
        self._record("evaluate", time.monotonic() - start, ".", results)
        return results

    def export(self, settings=None, out_file: str | Path | None = None, *, progress=None, cancel=None):
        """Export the final model (fine-tuned when there is one) as GGUF (default `export/<project>-<type>.gguf`).
        Returns `ExportResult`."""
        import time

        from core import export

        start = time.monotonic()
        settings = settings or export.ExportSettings()
        out = Path(out_file) if out_file else self.export_dir / f"{self.folder.name}-{settings.type}.gguf"
        result = export.export_gguf(self.final_model_dir, out, settings, progress=progress, cancel=cancel)
        self._record("export", time.monotonic() - start, str(out), {"file": str(out), "type": result.type,
                                                                   "bytes": result.bytes})
        return result
