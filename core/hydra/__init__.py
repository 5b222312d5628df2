"""Hydra models: one transformer body, one embedding table and LM head per language.

Trans-tokenization changes only a model's vocabulary tables; the body is the source model's, untouched. So the tables
of several adapted models can be swapped around one shared body: read a prompt with the source language's
embeddings and write with the target language's head (and read back what was written with the target language's
embeddings), and the model translates into a language it was never trained to translate into — zero-shot, from its
instruction-following in the source language.

The package reads bottom to top:
- `model`: the Hydra in memory — segment-aware forward passes and generation;
- `store`: the Hydra folder on disk — build, save, load, add and remove a language (the folder layout is there);
- `prompt`: few-shot translation prompts, their example pairs, and translating a text, a batch or a file;
- `tuning`: a language's own fine-tune on translation pairs (checkpointed, resumable), and back-translation to make
  such pairs;
- `gguf`: the whole Hydra as one GGUF with a merged vocabulary, and generation from it with llama.cpp.

Everything public is importable from `core.hydra` itself (`from core import hydra; hydra.build_hydra(...)`).
"""

from core.hydra.gguf import GGUF_LAYOUT_KEY, export_hydra_gguf, generate_gguf, gguf_layout
from core.hydra.model import EMBED, HEAD, Generation, GenerationSettings, Hydra, Language, Segment, TextFn
from core.hydra.prompt import (
    EXAMPLES,
    NO_REPEAT,
    TranslationPrompt,
    choose_examples,
    corpus_examples,
    reply_limit,
    translate,
    translate_batch,
    translate_file,
    translation_segments,
)
from core.hydra.store import (
    FORMAT,
    HYDRA_FILE,
    add_language,
    build_hydra,
    load_hydra,
    read_config,
    read_language,
    remove_language,
    save_hydra,
    save_language,
)
from core.hydra.tuning import HydraTuning, TuningState, back_translate, finetune_language, reply_loss, tuning_checkpoint

__all__ = [
    "EMBED",
    "EXAMPLES",
    "FORMAT",
    "GGUF_LAYOUT_KEY",
    "HEAD",
    "HYDRA_FILE",
    "NO_REPEAT",
    "Generation",
    "GenerationSettings",
    "Hydra",
    "HydraTuning",
    "Language",
    "Segment",
    "TextFn",
    "TranslationPrompt",
    "TuningState",
    "add_language",
    "back_translate",
    "build_hydra",
    "choose_examples",
    "corpus_examples",
    "export_hydra_gguf",
    "finetune_language",
    "generate_gguf",
    "gguf_layout",
    "load_hydra",
    "read_config",
    "read_language",
    "remove_language",
    "reply_limit",
    "reply_loss",
    "save_hydra",
    "save_language",
    "translate",
    "translate_batch",
    "translate_file",
    "translation_segments",
    "tuning_checkpoint",
]
