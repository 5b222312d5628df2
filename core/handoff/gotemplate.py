"""A small executor of Go's text/template, for the subset core.handoff.ollama emits: text with `{{-`/`-}}` trimming,
`range $i, $m := .Messages`, `if`/`else if`/`else`, `eq ne and or not len index slice`, fields of `.`, `$` and
variables, string and integer literals. It is the check that matters for an Ollama TEMPLATE: executed with the values
Ollama passes (core.handoff.ollama.ollama_values), it must give the same text as the Jinja template it was made from.
When it was written, `go_render` reproduced the expected outputs of Ollama's own template tests for the 15 of its
built-in templates inside this subset (45 conversations); tests/test_handoff.py checks Go's rules case by case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class GoTemplateError(ValueError):
    """A template outside the subset `go_render` executes, or one Go would refuse."""


_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_]\w*)*)'
    r"|(?P<field>(?:\.[A-Za-z_]\w*)+|\.)|(?P<ident>[A-Za-z_]\w*)|(?P<op>:=|=|,|\(|\)))"
)
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
        inner = template[start + 2 : end]
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
            inner = _parse_expr(tokens[i : j - 1])
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
                    nodes.append(
                        _Node("assign", expr=_parse_expr(toks[2:]), names=(toks[0][1],), declare=toks[1][1] == ":=")
                    )
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
            toks = toks[split + 1 :]
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
        return items[value(args[1]) : value(args[2]) if len(args) == 3 else None]
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
