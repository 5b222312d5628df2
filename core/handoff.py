"""Handing an exported model to the tools people already use: an Ollama `Modelfile`, LM Studio's models folder, and a
Hugging Face model card (`README.md`) beside every export and in a project's model folders.

Ollama does not read a GGUF's Jinja chat template (`tokenizer.chat_template`); it formats prompts with a Go template
(`TEMPLATE` in a Modelfile). The TEMPLATE written here is built by string construction from the Jinja template's
own rendered pieces: the Jinja template is rendered (as transformers renders it, `add_generation_prompt=True`) for a
one-message conversation, which shows its shape (ChatML `<|im_start|>role\\n…<|im_end|>\\n`, or Gemma's
`<start_of_turn>role\\n…<end_of_turn>\\n`), what it writes before the first turn, its default system prompt (SmolLM2's
English one) and how it joins a system prompt to the first user turn (Gemma). Then — the check that matters — the Go
template is executed by `go_render`, a small executor of Go's text/template for the subset emitted here (text with
`{{-`/`-}}` trimming, `range $i, $m := .Messages`, `if`/`else if`/`else`, `eq ne and or not len index slice`, fields
of `.`, `$` and variables, string and integer literals), with the values Ollama passes (its `collate`: consecutive
messages of one role merged, `.System` the system messages joined), and must give the same text as the Jinja template
for every conversation of `PROBES`. Any other shape, or a template that fails the check, gets no TEMPLATE line: the
Modelfile says why, and Ollama then picks its closest built-in template from the file's own chat template.
When it was written, `go_render` reproduced the expected outputs of Ollama's own template tests for the 15 of its
built-in templates inside this subset (45 conversations); tests/test_handoff.py checks Go's rules case by case.

Differences that remain, on purpose: the prompt starts without a BOS token when the file asks llama.cpp to add one
(`tokenizer.ggml.add_bos_token`; Ollama adds it when it tokenizes, so writing it too would double it), and Gemma's
template trims each message (`| trim`), which Go templates cannot: messages with leading or trailing spaces reach a
Gemma model as typed.

Files here are written atomically (core.jobs.atomic_file) and never over a user's file: a Modelfile or README.md
that Tweety Studio wrote carries its marker line and may be replaced; any other is refused unless `overwrite`.

A stages-floor module: it reads GGUF headers (core.models) and project records (core.layout), never core.project.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import TweetyError
from core.jobs import atomic_file
from core.layout import ProjectState
from core.models import DEFAULT_MODEL, GEMMA_PACKAGE, KNOWN_LICENCES, gguf_header

log = logging.getLogger(__name__)

MODELFILE = "Modelfile"
CARD = "README.md"
# A file that starts with (or, for the card, contains) its marker was written by Tweety Studio and may be replaced.
MODELFILE_MARKER = "# Written by Tweety Studio"
CARD_MARKER = "<!-- Written by Tweety Studio"
LMSTUDIO_PUBLISHER = "tweety-studio"

Message = dict[str, str]

# Conversations every TEMPLATE must render exactly as the Jinja template does: with a system prompt and two user
# turns, without one, a single turn, and contents with inner line breaks and non-ASCII text.
PROBES: tuple[tuple[Message, ...], ...] = (
    ({"role": "system", "content": "You are a careful translator."}, {"role": "user", "content": "Good morning."},
     {"role": "assistant", "content": "Buenos días."}, {"role": "user", "content": "And good night?"}),
    ({"role": "user", "content": "¿Quién eres?"}, {"role": "assistant", "content": "Un modelo.\nPequeño."},
     {"role": "user", "content": "Cuéntame más."}),
    ({"role": "system", "content": "Answer in Spanish.\nBe brief."}, {"role": "user", "content": "Hello"}),
    ({"role": "user", "content": "Hola"},),
)


# --- Jinja, as transformers renders it ------------------------------------------------------------------------------

def render_chat(chat_template: str, messages: Sequence[Message], *, bos_token: str = "", eos_token: str = "") -> str:
    """The prompt `chat_template` makes of `messages`, with the generation prompt, rendered by transformers' own
    renderer (sandboxed Jinja with trim_blocks and lstrip_blocks, `raise_exception`, `tojson`)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[list(messages)], chat_template=chat_template,
                                        add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token)
    return rendered[0]


# --- Go text/template, the subset emitted here ------------------------------------------------------------------------

class GoTemplateError(ValueError):
    """A template outside the subset `go_render` executes, or one Go would refuse."""


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_]\w*)*)'
                    r'|(?P<field>(?:\.[A-Za-z_]\w*)+|\.)|(?P<ident>[A-Za-z_]\w*)|(?P<op>:=|=|,|\(|\)))')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}


def go_string(text: str) -> str:
    """A Go string literal of `text` (for text that must not be read as template syntax)."""
    inverse = {v: k for k, v in _ESCAPES.items()}
    return '"' + "".join("\\" + inverse[c] if c in inverse else c for c in text) + '"'


def _lex(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", inner) items, with Go's trim markers applied to the neighbouring text."""
    items: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            items.append(("text", template[pos:]))
            return items
        text = template[pos:start]
        end = template.find("}}", start)
        if end < 0:
            raise GoTemplateError("unclosed action")
        inner = template[start + 2:end]
        if inner[:1] == "-" and inner[1:2].isspace():
            text, inner = text.rstrip(" \t\r\n"), inner[1:]
        trim_next = inner[-1:] == "-" and inner[-2:-1].isspace()
        if trim_next:
            inner = inner[:-1]
        items += [("text", text), ("action", inner.strip())]
        pos = end + 2
        if trim_next:
            while pos < len(template) and template[pos] in " \t\r\n":
                pos += 1


@dataclass
class _Node:
    kind: str  # text | output | if | range | assign
    text: str = ""
    expr: Any = None  # a parsed pipeline
    branches: list[tuple[Any, list[_Node]]] = field(default_factory=list)  # if: (condition, body) in order
    body: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)
    names: tuple[str, ...] = ()  # range variables, or the assigned variable
    declare: bool = True


def _tokens(source: str) -> list[tuple[str, str, bool]]:
    """(kind, text, follows the previous token without a space) of one action."""
    out, pos = [], 0
    while pos < len(source.rstrip()):
        m = _TOKEN.match(source, pos)
        if m is None or m.end() == pos:
            raise GoTemplateError(f"cannot read {source[pos:]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind), m.start(kind) == pos))
        pos = m.end()
    return out


def _parse_expr(tokens: list[tuple[str, str, bool]]) -> Any:
    """A command: a function and its arguments, or one operand. Operands: ("lit", v), ("field", names),
    ("var", name, names), ("paren", expr, names), ("call", name, args)."""
    args, i = [], 0

    def operand() -> Any:
        nonlocal i
        kind, text, _ = tokens[i]
        i += 1
        if kind == "str":
            return ("lit", re.sub(r"\\(.)", lambda m: _ESCAPES[m.group(1)], text[1:-1]))
        if kind == "num":
            return ("lit", int(text))
        if kind == "field":
            return ("field", tuple(n for n in text.split(".") if n))
        if kind == "var":
            name, *names = text.split(".")
            return ("var", name, tuple(names))
        if kind == "ident":
            return ("fn", text)
        if text == "(":
            depth, j = 1, i
            while depth:
                if j >= len(tokens):
                    raise GoTemplateError("unclosed parenthesis")
                depth += {"(": 1, ")": -1}.get(tokens[j][1], 0) if tokens[j][0] == "op" else 0
                j += 1
            inner = _parse_expr(tokens[i:j - 1])
            i = j
            names: tuple[str, ...] = ()
            if i < len(tokens) and tokens[i][0] == "field" and tokens[i][2]:  # (x).Field
                names = tuple(n for n in tokens[i][1].split(".") if n)
                i += 1
            return ("paren", inner, names)
        raise GoTemplateError(f"unexpected {text!r}")

    while i < len(tokens):
        args.append(operand())
    if not args:
        raise GoTemplateError("empty action")
    if args[0][0] == "fn":
        return ("call", args[0][1], args[1:])
    if len(args) > 1:
        raise GoTemplateError("only a function takes arguments")
    return args[0]


def _parse(template: str) -> list[_Node]:
    items = _lex(template)
    pos = 0

    def block(until: tuple[str, ...]) -> tuple[list[_Node], str]:
        nonlocal pos
        nodes: list[_Node] = []
        while pos < len(items):
            kind, text = items[pos]
            pos += 1
            if kind == "text":
                if text:
                    nodes.append(_Node("text", text))
                continue
            word = text.split(None, 1)[0] if text else ""
            if word in ("end", "else"):
                if word not in until:
                    raise GoTemplateError(f"unexpected {{{{ {text} }}}}")
                return nodes, text
            if word == "if":
                nodes.append(_if(text[2:]))
            elif word == "range":
                nodes.append(_range(text[5:]))
            elif word in ("with", "define", "template", "block", "break", "continue"):
                raise GoTemplateError(f"{{{{ {word} }}}} is outside the supported subset")
            else:
                toks = _tokens(text)
                if len(toks) > 2 and toks[0][0] == "var" and toks[1][1] in (":=", "="):
                    nodes.append(_Node("assign", expr=_parse_expr(toks[2:]), names=(toks[0][1],),
                                       declare=toks[1][1] == ":="))
                else:
                    nodes.append(_Node("output", expr=_parse_expr(toks)))
        if until:
            raise GoTemplateError("missing {{ end }}")
        return nodes, ""

    def _if(condition: str) -> _Node:
        node = _Node("if")
        while True:
            body, stop = block(("end", "else"))
            node.branches.append((_parse_expr(_tokens(condition)), body))
            if stop == "end":
                return node
            rest = stop[4:].strip()
            if rest.startswith("if "):
                condition = rest[3:]
                continue
            node.otherwise, _ = block(("end",))
            return node

    def _range(header: str) -> _Node:
        toks = _tokens(header)
        names: list[str] = []
        if ":=" in [t[1] for t in toks]:
            split = [t[1] for t in toks].index(":=")
            names = [t[1] for t in toks[:split] if t[0] == "var"]
            toks = toks[split + 1:]
        node = _Node("range", expr=_parse_expr(toks), names=tuple(names))
        node.body, stop = block(("end", "else"))
        if stop != "end":
            node.otherwise, _ = block(("end",))
        return node

    nodes, _ = block(())
    return nodes


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, (list, tuple, dict)) and not value)


def _field(value: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        if not isinstance(value, dict) or name not in value:
            raise GoTemplateError(f"can't evaluate field {name}")
        value = value[name]
    return value


def _comparable(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, int) and isinstance(b, int)) or (isinstance(a, str) and isinstance(b, str))


class _Scope:
    def __init__(self, root: Any):
        self.root, self.frames = root, [{"$": root}]

    def lookup(self, name: str) -> Any:
        for frame in reversed(self.frames):
            if name in frame:
                return frame[name]
        raise GoTemplateError(f"undefined variable {name}")

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.frames):
            if name in frame:
                frame[name] = value
                return
        raise GoTemplateError(f"undefined variable {name}")


def _eval(expr: Any, dot: Any, scope: _Scope) -> Any:
    kind = expr[0]
    if kind == "lit":
        return expr[1]
    if kind == "field":
        return _field(dot, expr[1])
    if kind == "var":
        return _field(scope.lookup(expr[1]), expr[2])
    if kind == "paren":
        return _field(_eval(expr[1], dot, scope), expr[2])
    if kind == "fn":
        raise GoTemplateError(f"{expr[1]} needs arguments")
    name, args = expr[1], expr[2]
    value = lambda a: _eval(a, dot, scope)  # noqa: E731 - arguments are evaluated lazily (and/or stop early)
    if name in ("and", "or"):
        result = None
        for a in args:
            result = value(a)
            if _truth(result) != (name == "and"):
                return result
        return result
    if name == "not" and len(args) == 1:
        return not _truth(value(args[0]))
    if name in ("eq", "ne") and len(args) >= 2:
        first, rest = value(args[0]), [value(a) for a in args[1:]]
        if not all(_comparable(first, r) for r in rest):
            raise GoTemplateError("incompatible types for comparison")
        return any(first == r for r in rest) if name == "eq" else first != rest[0]
    if name == "len" and len(args) == 1:
        return len(value(args[0]))
    if name == "index" and len(args) == 2:
        return value(args[0])[value(args[1])]
    if name == "slice" and len(args) in (2, 3):
        items = value(args[0])
        return items[value(args[1]):value(args[2]) if len(args) == 3 else None]
    raise GoTemplateError(f"function {name} with {len(args)} arguments is outside the supported subset")


def _print(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _execute(nodes: list[_Node], dot: Any, scope: _Scope, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "output":
            out.append(_print(_eval(node.expr, dot, scope)))
        elif node.kind == "assign":
            value = _eval(node.expr, dot, scope)
            if node.declare:
                scope.frames[-1][node.names[0]] = value
            else:
                scope.assign(node.names[0], value)
        elif node.kind == "if":
            for condition, body in node.branches:
                if _truth(_eval(condition, dot, scope)):
                    scope.frames.append({})
                    _execute(body, dot, scope, out)
                    scope.frames.pop()
                    break
            else:
                scope.frames.append({})
                _execute(node.otherwise, dot, scope, out)
                scope.frames.pop()
        else:  # range
            items = _eval(node.expr, dot, scope)
            if not items:
                _execute(node.otherwise, dot, scope, out)
            for i, item in enumerate(items or ()):
                frame = dict(zip(node.names, (i, item) if len(node.names) == 2 else (item,)))
                scope.frames.append(frame)
                _execute(node.body, item, scope, out)
                scope.frames.pop()


def go_render(template: str, values: dict[str, Any]) -> str:
    """Execute a Go text/template of the supported subset (module docstring) on `values`."""
    out: list[str] = []
    _execute(_parse(template), values, _Scope(values), out)
    return "".join(out)


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
    opening = (f'{{{{ if and (eq $i 0) (ne $m.Role "system") }}}}{s.turn_start}system\n'
               f"{_literal(default_system)}{s.turn_end}\n{{{{ end }}}}") if default_system is not None else ""
    return (f"{_literal(prefix)}{{{{ range $i, $m := .Messages }}}}{opening}"
            f"{s.turn_start}{{{{ $m.Role }}}}\n{{{{ $m.Content }}}}{s.turn_end}\n{{{{ end }}}}"
            f"{s.turn_start}assistant\n")


def _gemma(prefix: str, joiner: str, s: ChatShape) -> str:
    # A leading system message is not a turn: its text opens the first turn after it, then `joiner`.
    return (f"{_literal(prefix)}{{{{ range $i, $m := .Messages }}}}"
            f'{{{{ if or (ne $i 0) (ne $m.Role "system") }}}}'
            f'{s.turn_start}{{{{ if eq $m.Role "assistant" }}}}model{{{{ else }}}}{{{{ $m.Role }}}}{{{{ end }}}}\n'
            f'{{{{ if and (eq $i 1) (eq (index $.Messages 0).Role "system") }}}}'
            f"{{{{ (index $.Messages 0).Content }}}}{_literal(joiner)}{{{{ end }}}}"
            f"{{{{ $m.Content }}}}{s.turn_end}\n{{{{ end }}}}{{{{ end }}}}{s.turn_start}model\n")


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
        return OllamaTemplate(None, reason="the chat template has neither ChatML (<|im_start|>) nor Gemma "
                                           "(<start_of_turn>) turns, the two shapes carried over to Ollama")
    prefix = one[:one.index(shape.turn_start)]
    rest = one[len(prefix):]
    if shape.kind == "chatml":
        opening = f"{shape.turn_start}system\n"
        default = rest[len(opening):rest.index(shape.turn_end)] if rest.startswith(opening) else None
        template = _chatml(prefix, default, shape)
    else:
        system, user = PROBES[2][0]["content"], PROBES[2][1]["content"]
        try:
            both = jinja(PROBES[2])
        except Exception as e:
            return OllamaTemplate(None, reason=f"the chat template refuses a system prompt ({e})")
        start = both.find(system)
        joiner = both[start + len(system):both.find(user, start)] if start >= 0 else "\n\n"
        template = _gemma(prefix, joiner, shape)
    for messages in PROBES:
        try:
            expected = jinja(messages)
            got = go_render(template, ollama_values(messages))
        except Exception as e:  # the Jinja template refused the conversation, or the Go template failed
            return OllamaTemplate(None, (shape.turn_end,), shape.kind,
                                  f"the {shape.kind} template could not be checked ({e})")
        if got != expected:
            return OllamaTemplate(None, (shape.turn_end,), shape.kind, f"the chat template is {shape.kind}-like but "
                                  f"renders differently from the standard {shape.kind} turns")
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
        raise TweetyError("the text contains three double quotes in a row, which a Modelfile cannot hold",
                          fix="write the system prompt without \"\"\"")
    return f'"""{text}"""'


def modelfile(gguf: str | Path, *, system: str | None = None) -> Modelfile:
    """The Modelfile for `gguf` (to be written beside it): FROM, TEMPLATE, stop parameters and SYSTEM."""
    gguf = Path(gguf)
    template = ollama_template(*_gguf_chat(gguf))
    source = f"./{gguf.name}"
    lines = [f"{MODELFILE_MARKER} for {gguf.name}; it replaces this file at the next export (delete this line to "
             "keep your edits).", f"# Create the Ollama model: {ollama_command(gguf.stem, gguf.parent / MODELFILE)}",
             f'FROM "{source}"' if " " in source else f"FROM {source}"]
    if template.template is not None:
        lines.append(f"# The model's chat template ({template.shape}), in Ollama's Go template syntax.")
        lines.append(f"TEMPLATE {_quoted(template.template)}")
    else:
        lines.append(f"# No TEMPLATE: {template.reason}. Ollama picks its closest built-in template from the chat "
                     "template stored in the file; check a reply or two.")
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


# --- never over a user's file ---------------------------------------------------------------------------------------

def _ours(path: Path, marker: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return marker in f.read(4096)
    except OSError:
        return False


def check_free(path: Path, marker: str, overwrite: bool) -> None:
    """Refuse `path` when it holds a file Tweety Studio did not write (unless `overwrite`)."""
    if path.exists() and not overwrite and not _ours(path, marker):
        raise TweetyError(f"{path.name} exists and was not written by Tweety Studio; Tweety Studio never overwrites "
                          "your files", path=path, fix="move it away or export into another folder (or confirm "
                          "replacing it: --force)")


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


# --- the model card -------------------------------------------------------------------------------------------------

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


def card_facts(state: ProjectState, *, name: str, this_model: str | None = None, gguf: str | None = None,
               ollama: str | None = None) -> CardFacts:
    """The facts of a project's record (project.json: the project's own, or a model folder's copy, which records
    no measurements): source, licence, inputs and their sha256, settings, and every recorded measurement."""
    finetuned = "finetune" in state.stages or "finetune" in state.settings
    this_model = this_model or (FINETUNED if finetuned else ADAPTED)
    inputs = state.inputs
    heldout = Path(inputs.heldout_text).name if inputs and inputs.heldout_text else (
        f"the last 5% of {Path(inputs.target_text).name}" if inputs and inputs.target_text else "held-out text")
    metrics: list[Metric] = []
    evaluated = state.stages.get("evaluate")
    if evaluated is not None:
        for model, result in evaluated.summary.items():
            if isinstance(result, dict):
                metrics += [Metric(model, kind, round(float(result[kind]), 4), heldout) for kind in (BPB, TPB)
                            if kind in result]
    translation = state.stages.get("translation")
    if translation is not None:
        pairs = inputs.parallel[0].files[0] if inputs and inputs.parallel else "the parallel corpus"
        where = f"{translation.summary.get('pairs', 0)} held-out pairs of {Path(pairs).name}, " \
                f"{translation.summary.get('direction', '')}"
        metrics += [Metric(translator, CHRF, round(float(score["chrf"]), 2), where, "translation")
                    for translator, score in (translation.summary.get("scores") or {}).items()]
    tuned = state.settings.get("finetune") or {}
    source_name, base, (licence, licence_name, link, title) = _source(state.source_model)
    return CardFacts(
        name=name, this_model=this_model, language=state.language or "",
        language_name=inputs.language_name if inputs else "", source_model=state.source_model,
        source_name=source_name, base_model=base, licence=licence, licence_name=licence_name, licence_link=link,
        licence_title=title,
        vocabulary=state.vocabulary, init_method=(state.settings.get("init") or {}).get("method"),
        finetune=f"{tuned.get('stage')}, {tuned.get('steps')} steps" if tuned and this_model == FINETUNED else None,
        inputs=tuple(sorted(state.inputs_sha256.items())), metrics=tuple(metrics), gguf=gguf, ollama=ollama)


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

    return [EvalResult(task_type=m.task, dataset_type=re.sub(r"[^\w.-]+", "-", m.dataset).strip("-"),
                       dataset_name=m.dataset, metric_type=m.kind, metric_value=m.value,
                       metric_name=f"{_KIND_WORDS[m.kind]}, {m.model}"
                                   + (" (this model)" if m.model in (facts.this_model, *MODEL_TRANSLATORS) else ""))
            for m in facts.metrics]


def _body(facts: CardFacts) -> str:
    language = facts.language_name or facts.language or "a new language"
    lines = [f"{CARD_MARKER}: it replaces this file when the model changes; delete this line to keep your edits. -->",
             "", f"# {facts.name}", "",
             f"{facts.source_name or 'A language model'} adapted to {language} with Tweety Studio.", "",
             "## How it was made", ""]
    lines.append("- **Vocabulary**: " + (
        f"the source model's own, extended with tokens learnt from {language} text." if facts.vocabulary == "extend"
        else f"replaced by a new one learnt from {language} text, so texts are cut into fewer, more natural pieces."))
    lines.append("- **Start**: each new token starts from the source model's embeddings of the tokens it translates "
                 f"(trans-tokenization{f', method {facts.init_method}' if facts.init_method else ''}).")
    lines.append(f"- **Training**: {facts.finetune}." if facts.finetune else
                 "- **Training**: none yet — this is the model as initialised, before fine-tuning.")
    if facts.inputs:
        lines += ["", "Input files (sha256):", "", "| file | sha256 |", "|---|---|"]
        lines += [f"| {name} | `{digest}` |" for name, digest in facts.inputs]
    lines += ["", "## Results", ""]
    reading = [m for m in facts.metrics if m.kind in (BPB, TPB)]
    if reading:
        lines += [f"Measured on {reading[0].dataset}, text no model trained on. Bits per byte: how surprised a model "
                  "is by the text (lower is better); tokens per byte: how finely it is cut (lower is shorter).", "",
                  "| model | bits per byte | tokens per byte |", "|---|---:|---:|"]
        for model in dict.fromkeys(m.model for m in reading):
            values = {m.kind: m.value for m in reading if m.model == model}
            mark = " (this model)" if model == facts.this_model else ""
            lines.append(f"| {model}{mark} | {values.get(BPB, '—')} | {values.get(TPB, '—')} |")
    chrf = [m for m in facts.metrics if m.kind == CHRF]
    if chrf:
        lines += ["", f"Translation, chrF on {chrf[0].dataset} (higher is better):", "", "| translator | chrF |",
                  "|---|---:|"] + [f"| {m.model} | {m.value} |" for m in sorted(chrf, key=lambda m: -m.value)]
    if not reading and not chrf:
        lines.append("Nothing measured yet (the wizard's Evaluate page, or `tweety eval`, measures it).")
    lines += ["", "## What to expect", "",
              f"The model writes {language} words and phrases; a small model's sentences wander, it may mix in the "
              "source model's language, and its facts are not to be trusted. Adapting a bigger model and training "
              "longer improves all of this.", "", "## Limits", "",
              "- Measured only on the held-out text above: other kinds of text may read worse.",
              "- Not evaluated for safety or bias beyond what the source model was.",
              "- Inherits the source model's licence and its limits."]
    if facts.gguf or facts.ollama:
        lines += ["", "## Run it", ""]
        if facts.gguf:
            lines.append(f"- `{facts.gguf}` runs in llama.cpp and the apps built on it (LM Studio, Ollama).")
        if facts.ollama:
            lines.append(f"- Ollama: `{facts.ollama}` (from this folder), then `ollama run "
                         f"{facts.ollama.split()[2]}`.")
    lines += ["", "## Licence", ""]
    if facts.licence == "gemma":
        lines.append("Gemma is provided under and subject to the Gemma Terms of Use found at "
                     "[ai.google.dev/gemma/terms](https://ai.google.dev/gemma/terms).")
    elif facts.licence:
        lines.append(f"The source model's licence: {facts.licence_title or facts.licence_name or facts.licence}"
                     + (f" ({facts.licence_link})." if facts.licence_link else "."))
    else:
        lines.append("The source model's licence is not known to Tweety Studio: check it before sharing this model.")
    return "\n".join(lines) + "\n"


def model_card(facts: CardFacts):
    """A `huggingface_hub.ModelCard`: metadata (language, licence, base model, inputs, tags, model-index) and the
    plain-words text."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        language=[facts.language] if facts.language else None, license=facts.licence,
        license_name=facts.licence_name, license_link=facts.licence_link, base_model=facts.base_model,
        datasets=[name for name, _ in facts.inputs] or None, tags=["tweety-studio", "trans-tokenization", "gguf"],
        pipeline_tag="text-generation", model_name=facts.name, eval_results=_eval_results(facts) or None,
        inputs_sha256=dict(facts.inputs) or None)
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n\n{{ body }}", body=_body(facts))


def write_model_card(folder: str | Path, facts: CardFacts, *, overwrite: bool = False) -> Path:
    """README.md in `folder`, atomically; a README.md Tweety Studio did not write is refused (unless `overwrite`)."""
    path = Path(folder) / CARD
    check_free(path, CARD_MARKER, overwrite)
    text = str(model_card(facts))
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


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


def check_destination(gguf: Path, handoff: HandOff, overwrite: bool) -> None:
    """Before exporting: the card and Modelfile beside `gguf` must not be a user's files."""
    check_free(gguf.parent / CARD, CARD_MARKER, overwrite)
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
            warnings.append(f"the Modelfile has no TEMPLATE: {made.template.reason}; Ollama will pick its closest "
                            "built-in template")
    # The card sits beside the Modelfile: its command names it from there.
    beside = ollama_command(gguf.stem, MODELFILE) if command else None
    card = write_model_card(gguf.parent, replace(facts, gguf=gguf.name, ollama=beside), overwrite=overwrite)
    return HandOffResult(card, modelfile_path, command, tuple(warnings))
