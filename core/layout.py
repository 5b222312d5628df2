"""The project folder: its layout and its `project.json` record, owned here and nowhere else.

One layout serves `tweety adapt`, `tweety extend` and the wizard:
    project.json                        inputs, settings, each finished stage's record (typed below)
    overrides.tsv                       the linguist's mapping corrections (user-editable)
    work/tokenizer/ work/alignment/[<resource>/] work/mapping/ work/split/   each stage's own output
    model/                              the adapted model as initialised (a Hugging Face folder)
    finetuned/                          the fine-tuned model, when there is one
    export/                             GGUF files
Older folders still open: `tweety adapt` before this layout wrote the model at the folder root and recorded the
init stage's output as "."; `Layout.model_dir` follows the recorded output, so both read the same way. Files written
by a newer version (unknown keys) load too; the unknown keys are dropped.

This is a bottom-layer module (it imports only errors, jobs and resources): models resolve a project folder to its
final model through it, and every stage above can read it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import TweetyError
from core.jobs import atomic_file
from core.models import DEFAULT_MODEL
from core.resources import DICTIONARY, PARALLEL, Resource

PROJECT_FILE = "project.json"
SCHEMA = 2  # 1: single parallel/dictionary fields at the top level (before the one-pipeline layout)

STAGES = ("data", "tokenizer", "align", "map", "init", "finetune", "evaluate", "export")
OPTIONAL = {"finetune"}
BUILDING = STAGES[: STAGES.index("finetune") + 1]  # re-running one of these makes every later stage stale
REPLACE, EXTEND = "replace", "extend"
VOCABULARIES = (REPLACE, EXTEND)


@dataclass
class StageRecord:
    seconds: float
    output: str  # folder (or file), relative to the project
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Inputs:
    """What the user chose: the target text, the translation resources (each with its weight) and the language.
    Paths are kept as given (the files stay where the user keeps them)."""

    target_text: str
    resources: tuple[Resource, ...] = ()
    language_code: str = ""  # ISO 639, e.g. "es"; written into exported GGUFs
    language_name: str = ""
    heldout_text: str | None = None  # for evaluation; without it the last 5% of the target text is held out
    overrides: str | None = None  # an overrides file outside the project (the CLI's --overrides)
    # A dictionary's word rules where the user chose other than the language's own (None: the language's;
    # core.dictionary.DictionarySettings.for_language): its plural endings (() for none), and whether a word without
    # translations takes the source word spelled like it (cognates)
    plural_endings: tuple[str, ...] | None = None
    cognates: bool | None = None

    @property
    def parallel(self) -> list[Resource]:
        return [r for r in self.resources if r.kind == PARALLEL]

    @property
    def dictionaries(self) -> list[Resource]:
        return [r for r in self.resources if r.kind == DICTIONARY]

    def files(self) -> list[str]:
        """Every input file, for provenance (sha256 in project.json)."""
        return [
            f
            for f in (
                self.target_text,
                *(f for r in self.resources for f in r.files),
                self.heldout_text,
                self.overrides,
            )
            if f
        ]

    @staticmethod
    def from_dict(data: dict) -> "Inputs":
        """Tolerant of older records: the wizard's single `parallel`/`dictionary` fields become resources."""
        given = list(data.get("resources") or ())
        rs = [Resource(r["kind"], tuple(r["files"]), float(r.get("weight", 1.0)), r.get("name", "")) for r in given]
        if not given:
            if data.get("parallel"):
                rs.append(Resource(PARALLEL, tuple(f for f in data["parallel"] if f)))
            if data.get("dictionary"):
                rs.append(Resource(DICTIONARY, (data["dictionary"],)))
        return Inputs(
            target_text=data.get("target_text") or "",
            resources=tuple(rs),
            language_code=data.get("language_code") or data.get("language") or "",
            language_name=data.get("language_name") or "",
            heldout_text=data.get("heldout_text"),
            overrides=data.get("overrides"),
            plural_endings=None if data.get("plural_endings") is None else tuple(data["plural_endings"]),
            cognates=data.get("cognates"),
        )


@dataclass
class ProjectState:
    source_model: str
    inputs: Inputs | None = None
    vocabulary: str = REPLACE  # REPLACE the source vocabulary, or EXTEND it with target-language tokens
    inputs_sha256: dict[str, str] = field(default_factory=dict)  # input file name → sha256, for provenance
    settings: dict[str, dict] = field(default_factory=dict)  # stage name → its settings dataclass as a dict
    stages: dict[str, StageRecord] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def language(self) -> str | None:
        return (self.inputs.language_code or None) if self.inputs else None

    def settings_of(self, cls, key: str):
        """A stage's recorded settings as `cls` (defaults where nothing is recorded; fields another version wrote
        and this one does not know are dropped)."""
        recorded = self.settings.get(key) or {}
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in recorded.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        # `language` at the top too: a model folder's copy is read by the GGUF export (general.languages)
        return {**asdict(self), "language": self.language}

    def save(self, folder: str | Path) -> None:
        with atomic_file(Path(folder) / PROJECT_FILE) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))

    @staticmethod
    def from_dict(data: dict) -> "ProjectState":
        settings = dict(data.get("settings") or {})
        inputs = data.get("inputs")
        if inputs is None:  # schema 1: the wizard kept its Inputs in settings, the CLI its files at the top level
            legacy = dict(settings.pop("inputs", None) or {})
            legacy.setdefault("target_text", data.get("target_text"))
            legacy.setdefault("parallel", data.get("parallel"))
            legacy.setdefault("dictionary", data.get("dictionary"))
            legacy.setdefault("language_code", data.get("language"))
            legacy["resources"] = settings.pop("resources", None)
            inputs = legacy if legacy.get("target_text") else None
        stages = {
            k: StageRecord(**{f: v[f] for f in ("seconds", "output", "summary") if f in v})
            for k, v in (data.get("stages") or {}).items()
        }
        if inputs and stages and "data" not in stages:  # `tweety adapt` recorded no data stage before
            stages = {"data": StageRecord(0.0, ".", {}), **stages}
        vocabulary = data.get("vocabulary") or (EXTEND if "extend" in settings else REPLACE)
        return ProjectState(
            source_model=str(data.get("source_model") or DEFAULT_MODEL),
            inputs=Inputs.from_dict(inputs) if inputs else None,
            vocabulary=vocabulary,
            inputs_sha256=dict(data.get("inputs_sha256") or {}),
            settings=settings,
            stages=stages,
        )

    @staticmethod
    def load(folder: str | Path) -> "ProjectState":
        path = Path(folder) / PROJECT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            return ProjectState.from_dict(data)
        except FileNotFoundError:
            raise TweetyError(
                "not a Tweety Studio project (no project.json)",
                path=path.parent,
                fix="choose a folder created by Tweety Studio",
            ) from None
        except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
            raise TweetyError(
                f"project.json is damaged ({e})", path=path, fix="restore it or start a new project"
            ) from None


class Layout:
    """Where each stage of a project folder reads and writes."""

    def __init__(self, folder: str | Path, state: ProjectState | None = None):
        self.folder = Path(folder)
        self.state = state

    work = property(lambda self: self.folder / "work")
    tokenizer_dir = property(lambda self: self.work / "tokenizer")
    alignment_dir = property(lambda self: self.work / "alignment")
    mapping_dir = property(lambda self: self.work / "mapping")
    split_dir = property(lambda self: self.work / "split")
    finetune_dir = property(lambda self: self.folder / "finetuned")
    export_dir = property(lambda self: self.folder / "export")
    overrides_file = property(lambda self: self.folder / "overrides.tsv")

    def alignment_of(self, resource: Resource, n_corpora: int) -> Path:
        """One corpus aligns into work/alignment/, several each into work/alignment/<label>/."""
        return self.alignment_dir / (resource.label if n_corpora > 1 else "")

    @property
    def model_dir(self) -> Path:
        """The adapted model as initialised: `model/`, or where an older folder's init record says it is."""
        record = self.state.stages.get("init") if self.state else None
        if record is not None and record.output not in ("", "model"):
            return (self.folder / record.output).resolve()
        return self.folder / "model"

    @property
    def final_model_dir(self) -> Path:
        """The model to evaluate, export and chat with: the fine-tuned one when there is one."""
        record = self.state.stages.get("finetune") if self.state else None
        if record is not None and record.output not in ("", "finetuned"):
            return Path(record.output) if Path(record.output).is_absolute() else self.folder / record.output
        return self.finetune_dir if record is not None else self.model_dir


def project_model(folder: str | Path) -> Path | None:
    """The final model of a project folder (fine-tuned when there is one), or None when `folder` is no project or
    has no model yet. Lets `--model PROJECT` mean the project's model everywhere a model folder is asked for."""
    folder = Path(folder)
    if not (folder / PROJECT_FILE).is_file() or (folder / "config.json").is_file():
        return None
    model = Layout(folder, ProjectState.load(folder)).final_model_dir
    return model if (model / "config.json").is_file() else None
