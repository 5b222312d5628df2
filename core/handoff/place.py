"""Where an export goes and what goes beside it: LM Studio's models folder and its layout, the hand-offs asked for
(`HandOff`), and writing them after an export (`hand_off`: the Modelfile and the model card).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from core.errors import TweetyError
from core.handoff.card import CardFacts, write_model_card
from core.handoff.guard import CARD, CARD_MARKER, MODELFILE, MODELFILE_MARKER, check_free, is_free
from core.handoff.ollama import modelfile, ollama_command
from core.jobs import atomic_file

LMSTUDIO_PUBLISHER = "tweety-studio"


# --- LM Studio ------------------------------------------------------------------------------------------------------


def lmstudio_models_dir() -> Path:
    """LM Studio's models folder: ~/.lmstudio/models on Linux, macOS and Windows (LM Studio 0.3 and later); the
    older ~/.cache/lm-studio/models when only that one exists."""
    home = Path.home()
    new, old = home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"
    return old if old.is_dir() and not new.exists() else new


def _folder_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-.") or "model"


def lmstudio_path(models_dir: str | Path, model: str, file_name: str, publisher: str = LMSTUDIO_PUBLISHER) -> Path:
    """Where LM Studio finds a GGUF: `<models dir>/<publisher>/<model>/<file>.gguf` (a file straight in the models
    folder, or one folder down, is not listed)."""
    if not Path(file_name).name.lower().endswith(".gguf"):
        raise TweetyError("the file name should end in .gguf", fix="name the file like model.gguf")
    return Path(models_dir).expanduser() / _folder_name(publisher) / _folder_name(model) / Path(file_name).name


# --- an export and its hand-offs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandOff:
    """What goes with an export: the model card always; an Ollama Modelfile; the file placed in LM Studio's models
    folder (`lmstudio`: that folder) instead of at the given path."""

    ollama: bool = False
    lmstudio: str | Path | None = None
    publisher: str = LMSTUDIO_PUBLISHER
    system: str | None = None  # the Modelfile's SYSTEM line


def destination(out: str | Path, model: str, handoff: HandOff) -> Path:
    """Where the GGUF goes: `out`, or in LM Studio's layout (`out`'s file name) under `handoff.lmstudio`."""
    out = Path(out)
    return lmstudio_path(handoff.lmstudio, model, out.name, handoff.publisher) if handoff.lmstudio else out


def card_path(gguf: Path, overwrite: bool) -> Path:
    """Where the model card beside `gguf` goes: README.md, or `<name>.README.md` where a README.md of the user's is
    there (a folder of the user's own files, a source checkout): the card must not cost the export."""
    readme = gguf.parent / CARD
    return readme if overwrite or is_free(readme, CARD_MARKER) else gguf.parent / f"{gguf.stem}.{CARD}"


def check_destination(gguf: Path, handoff: HandOff, overwrite: bool) -> None:
    """Before exporting: the card and Modelfile beside `gguf` must not be a user's files."""
    check_free(card_path(gguf, overwrite), CARD_MARKER, overwrite)
    if handoff.ollama:
        check_free(gguf.parent / MODELFILE, MODELFILE_MARKER, overwrite)


@dataclass(frozen=True)
class HandOffResult:
    card: Path
    modelfile: Path | None = None
    ollama_command: str | None = None
    warnings: tuple[str, ...] = ()


def hand_off(gguf: str | Path, facts: CardFacts, handoff: HandOff, *, overwrite: bool = False) -> HandOffResult:
    """After an export: the Modelfile (when asked) and the model card beside `gguf`."""
    gguf = Path(gguf)
    warnings: list[str] = []
    modelfile_path = command = None
    if handoff.ollama:
        made = modelfile(gguf, system=handoff.system)
        modelfile_path = gguf.parent / MODELFILE
        check_free(modelfile_path, MODELFILE_MARKER, overwrite)
        with atomic_file(modelfile_path) as tmp:
            tmp.write_text(made.text, encoding="utf-8")
        command = ollama_command(gguf.stem, modelfile_path)
        if made.template.template is None:
            warnings.append(
                f"the Modelfile has no TEMPLATE: {made.template.reason}; Ollama will pick its closest built-in template"
            )
    # The card sits beside the Modelfile: its command names it from there.
    beside = ollama_command(gguf.stem, MODELFILE) if command else None
    path = card_path(gguf, overwrite)
    if path.name != CARD:
        warnings.append(
            f"{CARD} beside the file is not Tweety Studio's, so the model card was written as {path.name} (name it "
            f"{CARD} where you publish the model)"
        )
    card = write_model_card(
        gguf.parent, replace(facts, gguf=gguf.name, ollama=beside), overwrite=overwrite, name=path.name
    )
    return HandOffResult(card, modelfile_path, command, tuple(warnings))
