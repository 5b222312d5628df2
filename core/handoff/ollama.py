"""An Ollama `Modelfile` beside an exported GGUF, with a TEMPLATE that renders exactly the GGUF's own chat template.

Ollama does not read a GGUF's Jinja chat template (`tokenizer.chat_template`); it formats prompts with a Go template
(`TEMPLATE` in a Modelfile). The TEMPLATE written here is built by string construction from the Jinja template's
own rendered pieces: the Jinja template is rendered (as transformers renders it, `add_generation_prompt=True`) for a
one-message conversation, which shows its shape (ChatML `<|im_start|>role\\n…<|im_end|>\\n`, or Gemma's
`<start_of_turn>role\\n…<end_of_turn>\\n`), what it writes before the first turn, its default system prompt (SmolLM2's
English one) and how it joins a system prompt to the first user turn (Gemma). Then — the check that matters — the Go
template is executed by `go_render` (core.handoff.gotemplate, the subset of Go's text/template emitted here), with the
values Ollama passes (its `collate`: consecutive messages of one role merged, `.System` the system messages joined),
and must give the same text as the Jinja template for every conversation of `PROBES`. Any other shape, or a template
that fails the check, gets no TEMPLATE line: the Modelfile says why, and Ollama then picks its closest built-in
template from the file's own chat template.

Differences that remain, on purpose: the prompt starts without a BOS token when the file asks llama.cpp to add one
(`tokenizer.ggml.add_bos_token`; Ollama adds it when it tokenizes, so writing it too would double it), and Gemma's
template trims each message (`| trim`), which Go templates cannot: messages with leading or trailing spaces reach a
Gemma model as typed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import TweetyError
from core.handoff.gotemplate import go_render, go_string
from core.handoff.guard import MODELFILE, MODELFILE_MARKER
from core.models import gguf_header

Message = dict[str, str]

# Conversations every TEMPLATE must render exactly as the Jinja template does: with a system prompt and two user
# turns, without one, a single turn, and contents with inner line breaks and non-ASCII text.
PROBES: tuple[tuple[Message, ...], ...] = (
    (
        {"role": "system", "content": "You are a careful translator."},
        {"role": "user", "content": "Good morning."},
        {"role": "assistant", "content": "Buenos días."},
        {"role": "user", "content": "And good night?"},
    ),
    (
        {"role": "user", "content": "¿Quién eres?"},
        {"role": "assistant", "content": "Un modelo.\nPequeño."},
        {"role": "user", "content": "Cuéntame más."},
    ),
    ({"role": "system", "content": "Answer in Spanish.\nBe brief."}, {"role": "user", "content": "Hello"}),
    ({"role": "user", "content": "Hola"},),
)


# --- Jinja, as transformers renders it ------------------------------------------------------------------------------


def render_chat(chat_template: str, messages: Sequence[Message], *, bos_token: str = "", eos_token: str = "") -> str:
    """The prompt `chat_template` makes of `messages`, with the generation prompt, rendered by transformers' own
    renderer (sandboxed Jinja with trim_blocks and lstrip_blocks, `raise_exception`, `tojson`)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[list(messages)],
        chat_template=chat_template,
        add_generation_prompt=True,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    return rendered[0]


def ollama_values(messages: Sequence[Message], system: str | None = None) -> dict[str, Any]:
    """What Ollama passes a template that uses `.Messages` for a chat: the Modelfile's SYSTEM first when the
    conversation has no system message, consecutive messages of one role merged (blank line between), `.System` every
    system message joined."""
    msgs = [dict(m) for m in messages]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    collated: list[dict[str, str]] = []
    for m in msgs:
        if collated and collated[-1]["Role"] == m["role"] and m["role"] != "tool":
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    system_text = "\n\n".join(m["content"] for m in msgs if m["role"] == "system")
    return {"System": system_text, "Messages": collated, "Tools": None, "Response": ""}


# --- the Jinja template's shape → an Ollama TEMPLATE -----------------------------------------------------------------


@dataclass(frozen=True)
class ChatShape:
    kind: str  # "chatml" | "gemma"
    turn_start: str
    turn_end: str


SHAPES = (ChatShape("chatml", "<|im_start|>", "<|im_end|>"), ChatShape("gemma", "<start_of_turn>", "<end_of_turn>"))


@dataclass(frozen=True)
class OllamaTemplate:
    """A Go TEMPLATE (None: the chat template could not be carried over; `reason` says why) and the stop strings."""

    template: str | None
    stops: tuple[str, ...] = ()
    shape: str = ""
    reason: str = ""


def _literal(text: str) -> str:
    """`text` as template text: as it is, or as a Go string action when it holds template syntax."""
    return go_string(text).join(("{{ ", " }}")) if "{{" in text or "}}" in text else text


def _chatml(prefix: str, default_system: str | None, s: ChatShape) -> str:
    # Without a system message first, the template's own default system prompt opens the conversation.
    opening = (
        (
            f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}{s.turn_start}system\n'
            f"{_literal(default_system)}{s.turn_end}\n{{{{ end }}}}"
        )
        if default_system is not None
        else ""
    )
    return (
        f"{_literal(prefix)}{{{{ range $i, $m := .Messages }}}}{opening}"
        f"{s.turn_start}{{{{ $m.Role }}}}\n{{{{ $m.Content }}}}{s.turn_end}\n{{{{ end }}}}"
        f"{s.turn_start}assistant\n"
    )


def _gemma(prefix: str, joiner: str, s: ChatShape) -> str:
    # A leading system message is not a turn: its text opens the first turn after it, then `joiner`.
    return (
        f"{_literal(prefix)}{{{{ range $i, $m := .Messages }}}}"
        f'{{{{ if or (ne $i 0) (ne $m.Role "system") }}}}'
        f'{s.turn_start}{{{{ if eq $m.Role "assistant" }}}}model{{{{ else }}}}{{{{ $m.Role }}}}{{{{ end }}}}\n'
        f'{{{{ if and (eq $i 1) (eq (index $.Messages 0).Role "system") }}}}'
        f"{{{{ (index $.Messages 0).Content }}}}{_literal(joiner)}{{{{ end }}}}"
        f"{{{{ $m.Content }}}}{s.turn_end}\n{{{{ end }}}}{{{{ end }}}}{s.turn_start}model\n"
    )


def ollama_template(chat_template: str | None, bos_token: str = "") -> OllamaTemplate:
    """The Go TEMPLATE that renders what `chat_template` renders (module docstring), checked on `PROBES`.
    `bos_token`: what the Jinja template's `bos_token` stands for ("" when llama.cpp adds the BOS itself)."""
    if not chat_template:
        return OllamaTemplate(None, reason="the file has no chat template: the model is used for plain completion")

    def jinja(messages: Sequence[Message]) -> str:
        return render_chat(chat_template, messages, bos_token=bos_token)

    try:
        one = jinja(PROBES[-1])
    except Exception as e:  # a template error of any kind: Jinja's own, or the template's raise_exception
        return OllamaTemplate(None, reason=f"the chat template cannot be rendered here ({e})")
    shape = next((s for s in SHAPES if s.turn_start in one and s.turn_end in chat_template), None)
    if shape is None:
        return OllamaTemplate(
            None,
            reason="the chat template has neither ChatML (<|im_start|>) nor Gemma "
            "(<start_of_turn>) turns, the two shapes carried over to Ollama",
        )
    prefix = one[: one.index(shape.turn_start)]
    rest = one[len(prefix) :]
    if shape.kind == "chatml":
        opening = f"{shape.turn_start}system\n"
        default = rest[len(opening) : rest.index(shape.turn_end)] if rest.startswith(opening) else None
        template = _chatml(prefix, default, shape)
    else:
        system, user = PROBES[2][0]["content"], PROBES[2][1]["content"]
        try:
            both = jinja(PROBES[2])
        except Exception as e:
            return OllamaTemplate(None, reason=f"the chat template refuses a system prompt ({e})")
        start = both.find(system)
        joiner = both[start + len(system) : both.find(user, start)] if start >= 0 else "\n\n"
        template = _gemma(prefix, joiner, shape)
    for messages in PROBES:
        try:
            expected = jinja(messages)
            got = go_render(template, ollama_values(messages))
        except Exception as e:  # the Jinja template refused the conversation, or the Go template failed
            return OllamaTemplate(
                None, (shape.turn_end,), shape.kind, f"the {shape.kind} template could not be checked ({e})"
            )
        if got != expected:
            return OllamaTemplate(
                None,
                (shape.turn_end,),
                shape.kind,
                f"the chat template is {shape.kind}-like but renders differently from the standard {shape.kind} turns",
            )
    return OllamaTemplate(template, (shape.turn_end,), shape.kind)


# --- the Modelfile ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Modelfile:
    text: str
    template: OllamaTemplate
    system: str | None = None


def _gguf_chat(gguf: Path) -> tuple[str | None, str]:
    """(chat template, what its `bos_token` stands for) of a GGUF file."""
    header = gguf_header(gguf)
    template = header.get("tokenizer.chat_template")
    if header.get("tokenizer.ggml.add_bos_token") or "bos_token" not in (template or ""):
        return template, ""
    import gguf as gguf_py

    bos = header.get("tokenizer.ggml.bos_token_id")
    tokens = gguf_py.GGUFReader(gguf).fields.get("tokenizer.ggml.tokens")
    return template, (str(tokens.contents(int(bos))) if tokens is not None and bos is not None else "")


def _quoted(text: str) -> str:
    if '"""' in text:
        raise TweetyError(
            "the text contains three double quotes in a row, which a Modelfile cannot hold",
            fix='write the system prompt without """',
        )
    return f'"""{text}"""'


def modelfile(gguf: str | Path, *, system: str | None = None) -> Modelfile:
    """The Modelfile for `gguf` (to be written beside it): FROM, TEMPLATE, stop parameters and SYSTEM."""
    gguf = Path(gguf)
    template = ollama_template(*_gguf_chat(gguf))
    source = f"./{gguf.name}"
    lines = [
        f"{MODELFILE_MARKER} for {gguf.name}; it replaces this file at the next export (delete this line to "
        "keep your edits).",
        f"# Create the Ollama model: {ollama_command(gguf.stem, gguf.parent / MODELFILE)}",
        f'FROM "{source}"' if " " in source else f"FROM {source}",
    ]
    if template.template is not None:
        lines.append(f"# The model's chat template ({template.shape}), in Ollama's Go template syntax.")
        lines.append(f"TEMPLATE {_quoted(template.template)}")
    else:
        lines.append(
            f"# No TEMPLATE: {template.reason}. Ollama picks its closest built-in template from the chat "
            "template stored in the file; check a reply or two."
        )
    lines += [f'PARAMETER stop "{stop}"' for stop in template.stops]
    if system:
        lines.append(f"SYSTEM {_quoted(system)}")
    return Modelfile("\n".join(lines) + "\n", template, system)


def ollama_command(name: str, modelfile_path: str | Path) -> str:
    """The one command that makes the Ollama model (then `ollama run NAME`)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "model"
    path = str(modelfile_path)
    return f"ollama create {name} -f {path if ' ' not in path else chr(34) + path + chr(34)}"


def translation_system(model_name: str, target: str) -> str | None:
    """The SYSTEM line of a translation model (TowerInstruct and models adapted from it, what core.runtime treats as
    one): its task in one sentence. Chat models get none: their template's own default stays."""
    from core.translation import language_name

    if "tower" not in model_name.lower() or not target:
        return None
    return f"Translate the user's text into {language_name(target)}. Reply with the translation only."
