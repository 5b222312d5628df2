"""A project folder's state (`project.json`): what went in, which stages ran, how long they took, what they found.

The GUI reopens a project from it; the CLI writes it so a run can be inspected later."""
from __future__ import annotations

import json
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
