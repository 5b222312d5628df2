"""A Hugging Face model card (`README.md`, a `huggingface_hub.ModelCard`) beside every export and in a project's
model folders: its metadata (language, licence, base model, inputs and their sha256, model-index) and plain-words text
from what a project's record (project.json) says, every recorded measurement included.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import TweetyError
from core.handoff.guard import CARD, CARD_MARKER, check_free
from core.jobs import atomic_file
from core.layout import ProjectState
from core.models import DEFAULT_MODEL, GEMMA_PACKAGE, KNOWN_LICENCES

log = logging.getLogger(__name__)

BPB, TPB, CHRF = "bits_per_byte", "tokens_per_byte", "chrf"
SOURCE, ADAPTED, FINETUNED = "source model", "adapted model", "fine-tuned model"
MODEL_TRANSLATORS = ("exported model", "hydra")  # core.translating's translators that are this model


@dataclass(frozen=True)
class Metric:
    model: str  # which model was measured: SOURCE, ADAPTED, FINETUNED, or a translator's name
    kind: str  # BPB | TPB | CHRF
    value: float
    dataset: str  # what it was measured on: a file name, or the held-out pairs of one
    task: str = "text-generation"  # or "translation"


@dataclass(frozen=True)
class CardFacts:
    """What a model card says, gathered from a project's record (`card_facts`)."""

    name: str
    this_model: str = ADAPTED  # ADAPTED or FINETUNED: which measured model the card describes
    language: str = ""  # ISO 639 code
    language_name: str = ""
    source_model: str = ""  # as recorded: `default`, a .gguf file or a folder
    source_name: str = ""
    base_model: str | None = None  # its Hugging Face id, when known
    licence: str | None = None  # Hugging Face licence id (apache-2.0, gemma, …), "other", or None when unknown
    licence_name: str | None = None
    licence_link: str | None = None
    licence_title: str | None = None  # its name in words, for the text
    vocabulary: str = "replace"
    init_method: str | None = None
    finetune: str | None = None  # "embeddings, 300 steps"
    inputs: tuple[tuple[str, str], ...] = ()  # (file name, sha256)
    metrics: tuple[Metric, ...] = ()
    gguf: str | None = None  # the GGUF file beside the card
    ollama: str | None = None  # the command that makes the Ollama model


def _source(spec: str) -> tuple[str, str | None, tuple[str | None, str | None, str | None, str | None]]:
    """(display name, Hugging Face id or None, (licence id, name for "other", link, name in words)) of a source
    model."""
    from core import models

    base = {DEFAULT_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct"}.get(spec)
    if base is None and (GEMMA_PACKAGE in spec or "gemma-3-270m" in spec.lower()):
        base = "google/gemma-3-270m"
    try:
        card = models.model_card(spec)
    except TweetyError as e:  # the source moved away since: the card says less
        log.info("no licence for the model card: %s", e)
        return Path(spec).name, base, (None, None, None, None)
    if base is None and Path(spec).is_dir():
        try:
            hub_id = str(json.loads((Path(spec) / "config.json").read_text()).get("_name_or_path") or "")
        except (OSError, ValueError):
            hub_id = ""
        base = hub_id if re.fullmatch(r"[\w.-]+/[\w.-]+", hub_id) and not Path(hub_id).exists() else None
    licence = card.licence
    if licence is None:
        return card.name, base, (None, None, None, None)
    key = next((k for k, known in KNOWN_LICENCES.items() if known.name == licence.name), None)
    return card.name, base, (key or "other", None if key else licence.name, licence.url or None, licence.name)


def card_facts(
    state: ProjectState, *, name: str, this_model: str | None = None, gguf: str | None = None, ollama: str | None = None
) -> CardFacts:
    """The facts of a project's record (project.json: the project's own, or a model folder's copy, which records
    no measurements): source, licence, inputs and their sha256, settings, and every recorded measurement."""
    finetuned = "finetune" in state.stages or "finetune" in state.settings
    this_model = this_model or (FINETUNED if finetuned else ADAPTED)
    inputs = state.inputs
    heldout = (
        Path(inputs.heldout_text).name
        if inputs and inputs.heldout_text
        else (f"the last 5% of {Path(inputs.target_text).name}" if inputs and inputs.target_text else "held-out text")
    )
    metrics: list[Metric] = []
    evaluated = state.stages.get("evaluate")
    if evaluated is not None:
        for model, result in evaluated.summary.items():
            if isinstance(result, dict):
                metrics += [
                    Metric(model, kind, round(float(result[kind]), 4), heldout) for kind in (BPB, TPB) if kind in result
                ]
    translation = state.stages.get("translation")
    if translation is not None:
        pairs = inputs.parallel[0].files[0] if inputs and inputs.parallel else "the parallel corpus"
        where = (
            f"{translation.summary.get('pairs', 0)} held-out pairs of {Path(pairs).name}, "
            f"{translation.summary.get('direction', '')}"
        )
        metrics += [
            Metric(translator, CHRF, round(float(score["chrf"]), 2), where, "translation")
            for translator, score in (translation.summary.get("scores") or {}).items()
        ]
    tuned = state.settings.get("finetune") or {}
    source_name, base, (licence, licence_name, link, title) = _source(state.source_model)
    return CardFacts(
        name=name,
        this_model=this_model,
        language=state.language or "",
        language_name=inputs.language_name if inputs else "",
        source_model=state.source_model,
        source_name=source_name,
        base_model=base,
        licence=licence,
        licence_name=licence_name,
        licence_link=link,
        licence_title=title,
        vocabulary=state.vocabulary,
        init_method=(state.settings.get("init") or {}).get("method"),
        finetune=f"{tuned.get('stage')}, {tuned.get('steps')} steps" if tuned and this_model == FINETUNED else None,
        inputs=tuple(sorted(state.inputs_sha256.items())),
        metrics=tuple(metrics),
        gguf=gguf,
        ollama=ollama,
    )


def folder_facts(folder: str | Path, name: str | None = None) -> CardFacts:
    """The card facts of a project folder (its record, measurements included) or of a model folder (its copy of
    the record, without measurements); a folder with no record gets a card that says only what it is."""
    from core.layout import PROJECT_FILE

    folder = Path(folder)
    name = name or folder.resolve().name
    if not (folder / PROJECT_FILE).is_file():
        return CardFacts(name=name)
    return card_facts(ProjectState.load(folder), name=name)


_KIND_WORDS = {BPB: "bits per byte", TPB: "tokens per byte", CHRF: "chrF"}


def _eval_results(facts: CardFacts) -> list:
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=m.task,
            dataset_type=re.sub(r"[^\w.-]+", "-", m.dataset).strip("-"),
            dataset_name=m.dataset,
            metric_type=m.kind,
            metric_value=m.value,
            metric_name=f"{_KIND_WORDS[m.kind]}, {m.model}"
            + (" (this model)" if m.model in (facts.this_model, *MODEL_TRANSLATORS) else ""),
        )
        for m in facts.metrics
    ]


def _body(facts: CardFacts) -> str:
    language = facts.language_name or facts.language or "a new language"
    lines = [
        f"{CARD_MARKER}: it replaces this file when the model changes; delete this line to keep your edits. -->",
        "",
        f"# {facts.name}",
        "",
        f"{facts.source_name or 'A language model'} adapted to {language} with Tweety Studio.",
        "",
        "## How it was made",
        "",
    ]
    lines.append(
        "- **Vocabulary**: "
        + (
            f"the source model's own, extended with tokens learnt from {language} text."
            if facts.vocabulary == "extend"
            else f"replaced by a new one learnt from {language} text, so texts are cut into fewer, more natural pieces."
        )
    )
    lines.append(
        "- **Start**: each new token starts from the source model's embeddings of the tokens it translates "
        f"(trans-tokenization{f', method {facts.init_method}' if facts.init_method else ''})."
    )
    lines.append(
        f"- **Training**: {facts.finetune}."
        if facts.finetune
        else "- **Training**: none yet — this is the model as initialised, before fine-tuning."
    )
    if facts.inputs:
        lines += ["", "Input files (sha256):", "", "| file | sha256 |", "|---|---|"]
        lines += [f"| {name} | `{digest}` |" for name, digest in facts.inputs]
    lines += ["", "## Results", ""]
    reading = [m for m in facts.metrics if m.kind in (BPB, TPB)]
    if reading:
        lines += [
            f"Measured on {reading[0].dataset}, text no model trained on. Bits per byte: how surprised a model "
            "is by the text (lower is better); tokens per byte: how finely it is cut (lower is shorter).",
            "",
            "| model | bits per byte | tokens per byte |",
            "|---|---:|---:|",
        ]
        for model in dict.fromkeys(m.model for m in reading):
            values = {m.kind: m.value for m in reading if m.model == model}
            mark = " (this model)" if model == facts.this_model else ""
            lines.append(f"| {model}{mark} | {values.get(BPB, '—')} | {values.get(TPB, '—')} |")
    chrf = [m for m in facts.metrics if m.kind == CHRF]
    if chrf:
        lines += [
            "",
            f"Translation, chrF on {chrf[0].dataset} (higher is better):",
            "",
            "| translator | chrF |",
            "|---|---:|",
        ] + [f"| {m.model} | {m.value} |" for m in sorted(chrf, key=lambda m: -m.value)]
    if not reading and not chrf:
        lines.append("Nothing measured yet (the wizard's Evaluate page, or `tweety eval`, measures it).")
    lines += [
        "",
        "## What to expect",
        "",
        f"The model writes {language} words and phrases; a small model's sentences wander, it may mix in the "
        "source model's language, and its facts are not to be trusted. Adapting a bigger model and training "
        "longer improves all of this.",
        "",
        "## Limits",
        "",
        "- Measured only on the held-out text above: other kinds of text may read worse.",
        "- Not evaluated for safety or bias beyond what the source model was.",
        "- Inherits the source model's licence and its limits.",
    ]
    if facts.gguf or facts.ollama:
        lines += ["", "## Run it", ""]
        if facts.gguf:
            lines.append(f"- `{facts.gguf}` runs in llama.cpp and the apps built on it (LM Studio, Ollama).")
        if facts.ollama:
            lines.append(f"- Ollama: `{facts.ollama}` (from this folder), then `ollama run {facts.ollama.split()[2]}`.")
    lines += ["", "## Licence", ""]
    if facts.licence == "gemma":
        lines.append(
            "Gemma is provided under and subject to the Gemma Terms of Use found at "
            "[ai.google.dev/gemma/terms](https://ai.google.dev/gemma/terms)."
        )
    elif facts.licence:
        lines.append(
            f"The source model's licence: {facts.licence_title or facts.licence_name or facts.licence}"
            + (f" ({facts.licence_link})." if facts.licence_link else ".")
        )
    else:
        lines.append("The source model's licence is not known to Tweety Studio: check it before sharing this model.")
    return "\n".join(lines) + "\n"


def model_card(facts: CardFacts):
    """A `huggingface_hub.ModelCard`: metadata (language, licence, base model, inputs, tags, model-index) and the
    plain-words text."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        language=[facts.language] if facts.language else None,
        license=facts.licence,
        license_name=facts.licence_name,
        license_link=facts.licence_link,
        base_model=facts.base_model,
        datasets=[name for name, _ in facts.inputs] or None,
        tags=["tweety-studio", "trans-tokenization", "gguf"],
        pipeline_tag="text-generation",
        model_name=facts.name,
        eval_results=_eval_results(facts) or None,
        inputs_sha256=dict(facts.inputs) or None,
    )
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}", body=_body(facts))


def write_model_card(folder: str | Path, facts: CardFacts, *, overwrite: bool = False, name: str = CARD) -> Path:
    """README.md (or `name`) in `folder`, atomically; a file there Tweety Studio did not write is refused (unless
    `overwrite`)."""
    path = Path(folder) / name
    check_free(path, CARD_MARKER, overwrite)
    text = str(model_card(facts))
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
