"""Handing an exported model to the tools people already use: an Ollama `Modelfile`, LM Studio's models folder, and a
Hugging Face model card (`README.md`) beside every export and in a project's model folders.

The package reads bottom to top:
- `gotemplate`: a small executor of Go's text/template, for the subset an Ollama TEMPLATE is written in here;
- `guard`: the files written beside an export, their marker lines, and never writing over a user's file;
- `ollama`: the Modelfile, with a TEMPLATE built from the GGUF's Jinja chat template and checked to render the same;
- `card`: the model card, from what a project's record (project.json) says;
- `place`: where an export goes (LM Studio's layout) and the hand-offs written after it (`hand_off`).

A stages-floor package: it reads GGUF headers (core.models) and project records (core.layout), never core.project.
Everything public is importable from `core.handoff` itself (`from core import handoff; handoff.hand_off(...)`).
"""

from core.handoff.card import (
    ADAPTED,
    BPB,
    CHRF,
    FINETUNED,
    MODEL_TRANSLATORS,
    SOURCE,
    TPB,
    CardFacts,
    Metric,
    card_facts,
    folder_facts,
    model_card,
    write_model_card,
)
from core.handoff.gotemplate import GoTemplateError, go_render, go_string
from core.handoff.guard import CARD, CARD_MARKER, MODELFILE, MODELFILE_MARKER, check_free
from core.handoff.ollama import (
    PROBES,
    SHAPES,
    ChatShape,
    Message,
    Modelfile,
    OllamaTemplate,
    modelfile,
    ollama_command,
    ollama_template,
    ollama_values,
    render_chat,
    translation_system,
)
from core.handoff.place import (
    LMSTUDIO_PUBLISHER,
    HandOff,
    HandOffResult,
    check_destination,
    destination,
    hand_off,
    lmstudio_models_dir,
    lmstudio_path,
)

__all__ = [
    "ADAPTED",
    "BPB",
    "CARD",
    "CARD_MARKER",
    "CHRF",
    "FINETUNED",
    "LMSTUDIO_PUBLISHER",
    "MODELFILE",
    "MODELFILE_MARKER",
    "MODEL_TRANSLATORS",
    "PROBES",
    "SHAPES",
    "SOURCE",
    "TPB",
    "CardFacts",
    "ChatShape",
    "GoTemplateError",
    "HandOff",
    "HandOffResult",
    "Message",
    "Metric",
    "Modelfile",
    "OllamaTemplate",
    "card_facts",
    "check_destination",
    "check_free",
    "destination",
    "folder_facts",
    "go_render",
    "go_string",
    "hand_off",
    "lmstudio_models_dir",
    "lmstudio_path",
    "model_card",
    "modelfile",
    "ollama_command",
    "ollama_template",
    "ollama_values",
    "render_chat",
    "translation_system",
    "write_model_card",
]
