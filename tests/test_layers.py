"""The package's floors, checked on the source (STYLE.md › Layered packages): every module under core/ and app/ is
parsed with `ast` — imports inside functions included — and the test fails on

(a) an upward import: a module importing one on a higher floor;
(b) any core module importing app (the core is Qt-free and knows nothing of the wizard);
(c) a module using another module's private name: `from core.x import _y`, or `x._y` where `x` is an imported core
    module.

Floors, bottom to top (imports within a floor are allowed; a package's submodules are on the package's floor):
readers and records → stages → orchestration → command line and wizard. A new module must be placed on a floor
here, or the test says so.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FLOORS: list[tuple[str, list[str]]] = [
    # Readers, records and the shared plumbing every stage uses.
    (
        "readers",
        [
            "core",
            "core.errors",
            "core.jobs",
            "core.resources",
            "core.layout",
            "core.models",
            "core.convert",
            "core.translation",
            "core.memory",
            "core.pofile",
        ],
    ),
    # The stages: each reads and writes files and knows nothing of the project folder's bookkeeping.
    (
        "stages",
        [
            "core.tokenizer",
            "core.align",
            "core.dictionary",
            "core.mapping",
            "core.calibrate",
            "core.init",
            "core.extend",
            "core.finetune",
            "core.distributed",
            "core.evaluate",
            "core.hydra",
            "core.export",
            "core.runtime",
            "core.translators",
            "core.lexicon",
            "core.advise",
            "core.handoff",
        ],
    ),
    # The project folder and the runs of stages over it.
    ("orchestration", ["core.pipeline", "core.project", "core.stages", "core.translating"]),
    # What people run.
    ("top", ["core.cli", "app"]),
]
# "core" is the package's own __init__ (a docstring): it names only itself, not every core module under it.
EXACT = {"core"}

# Violations that exist today in files another change is rewriting, as (importer, imported, rule), e.g.
# ("core.extend", "core.project", "upward") while a stage still recorded its own run in the project folder. Each
# entry is a debt: remove it with the import it excuses. An entry that no longer matches anything fails the test
# too, so the list can only shrink. Empty since core/extend.py stopped importing core.project and core.pipeline.
KNOWN: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    rule: str  # "upward" | "core imports app" | "private name" | "no floor"
    line: int
    detail: str

    @property
    def key(self) -> tuple[str, str, str]:
        return self.importer, self.imported, self.rule

    def __str__(self) -> str:
        return f"{self.importer}:{self.line}: {self.rule}: {self.detail}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    files = sorted((ROOT / "core").rglob("*.py")) + sorted((ROOT / "app").rglob("*.py"))
    return {module_name(f): f for f in files if "__pycache__" not in f.parts}


def floor_of(module: str) -> int | None:
    """The index of the floor `module` is on: the longest listed name that is it or a package above it."""
    best, floor = -1, None
    for index, (_, names) in enumerate(FLOORS):
        for name in names:
            matches = module == name or (name not in EXACT and module.startswith(name + "."))
            if matches and len(name) > best:
                best, floor = len(name), index
    return floor


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class ImportScan(ast.NodeVisitor):
    """Every import of a core/app module in one file, with scopes for module aliases (`from core import export` in a
    function binds `export` in that function only), and every `alias._name` on such an alias."""

    def __init__(self, module: str, is_package: bool, modules: set[str]):
        self.module, self.modules = module, modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.imports: list[tuple[str, int, str | None]] = []  # (imported module, line, the name taken from it)
        self.private_uses: list[tuple[str, int, str]] = []  # (module, line, its private name used)
        self.scopes: list[dict[str, str]] = [{}]  # alias → module, innermost last

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.package.split(".")
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def _ours(self, name: str) -> bool:
        return name.split(".")[0] in ("core", "app")

    def _existing(self, dotted: str) -> str:
        """The longest prefix of `dotted` that is a module of ours (imports name attributes too)."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in self.modules:
                return ".".join(parts[:n])
        return dotted

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not self._ours(alias.name):
                continue
            self.imports.append((self._existing(alias.name), node.lineno, None))
            if alias.asname:
                self.scopes[-1][alias.asname] = alias.name
            else:  # `import core.x` binds `core`; `core.x._y` is resolved through it
                self.scopes[-1][alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        source = self._absolute(node)
        if not self._ours(source):
            return
        for alias in node.names:
            submodule = f"{source}.{alias.name}"
            if submodule in self.modules:  # `from core import hydra`: the submodule itself
                self.imports.append((submodule, node.lineno, None))
                self.scopes[-1][alias.asname or alias.name] = submodule
            else:
                self.imports.append((self._existing(source), node.lineno, alias.name))

    def _scoped(self, node) -> None:
        self.scopes.append({})
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _scoped

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name):
            target = next((scope[inner.id] for scope in reversed(self.scopes) if inner.id in scope), None)
            if target is not None:
                dotted = ".".join([target] + chain[::-1])
                owner = self._existing(dotted)
                rest = dotted[len(owner) + 1 :].split(".") if dotted != owner else []
                if rest and _private(rest[0]):
                    self.private_uses.append((owner, node.lineno, rest[0]))
                    return
        self.generic_visit(node)


def violations() -> list[Violation]:
    modules = all_modules()
    found = []
    for module, path in modules.items():
        scan = ImportScan(module, path.name == "__init__.py", set(modules))
        scan.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        mine = floor_of(module)
        if mine is None:
            found.append(Violation(module, module, "no floor", 1, "not on any floor: add it to FLOORS"))
            continue
        for imported, line, name in scan.imports:
            if imported == module:
                continue
            theirs = floor_of(imported)
            if module.startswith("core") and imported.split(".")[0] == "app":
                found.append(Violation(module, imported, "core imports app", line, f"imports {imported}"))
            elif theirs is None:
                found.append(Violation(module, imported, "no floor", line, f"imports {imported}, on no floor"))
            elif theirs > mine:
                found.append(
                    Violation(
                        module,
                        imported,
                        "upward",
                        line,
                        f"a {FLOORS[mine][0]} module imports {imported} ({FLOORS[theirs][0]})",
                    )
                )
            if name is not None and _private(name):
                found.append(Violation(module, imported, "private name", line, f"imports {imported}.{name}"))
        for imported, line, name in scan.private_uses:
            if imported != module:
                found.append(Violation(module, imported, "private name", line, f"uses {imported}.{name}"))
    return found


def test_every_module_is_on_a_floor_and_imports_only_downwards():
    found = violations()
    new = [str(v) for v in found if v.key not in KNOWN]
    assert not new, "layering violations:\n" + "\n".join(new)
    stale = KNOWN - {v.key for v in found}
    assert not stale, f"KNOWN entries that no longer happen (remove them): {sorted(stale)}"


def _scan(module: str, source: str) -> list[Violation]:
    """`violations()`'s checks on one module's source, as if it were that module of the repository."""
    modules = set(all_modules())
    scan = ImportScan(module, False, modules)
    scan.visit(ast.parse(source))
    out = []
    for imported, line, name in scan.imports:
        theirs, mine = floor_of(imported), floor_of(module)
        if module.startswith("core") and imported.split(".")[0] == "app":
            out.append(Violation(module, imported, "core imports app", line, ""))
        elif theirs is not None and mine is not None and theirs > mine:
            out.append(Violation(module, imported, "upward", line, ""))
        if name is not None and _private(name):
            out.append(Violation(module, imported, "private name", line, ""))
    out += [Violation(module, m, "private name", line, n) for m, line, n in scan.private_uses if m != module]
    return out


@pytest.mark.parametrize(
    "module, source, rule",
    [
        ("core.export", "def f():\n    from core.project import Project\n", "upward"),  # inside a function too
        ("core.runtime", "import core.pipeline as p\n", "upward"),
        ("core.jobs", "from core import hydra\n", "upward"),  # a package, named through `from core import`
        ("core.hydra.store", "from core.finetune.loop import finetune\n", None),  # same floor
        ("core.tokenizer", "from app.window import MainWindow\n", "core imports app"),
        ("core.hydra.gguf", "from core.export import _special_tokens\n", "private name"),
        ("core.cli", "from core import export\n\ndef f():\n    return export._special_tokens\n", "private name"),
        ("core.cli", "import core.export\nx = core.export._special_tokens\n", "private name"),
        ("core.cli", "from core import export\nx = export.Plan\n", None),
        ("core.hydra.prompt", "from .model import Hydra\nfrom ..finetune import finetune\n", None),  # relative imports
        ("core.translation", "from . import runtime\n", "upward"),
    ],
)
def test_the_checker_catches_each_kind(module, source, rule):
    rules = {v.rule for v in _scan(module, source)}
    assert rules == ({rule} if rule else set())


def test_the_repository_check_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    """The whole-repository check (not only `_scan`) fails on `from core.project import Project` in core/export.py:
    run on a copy of the sources with that one line added."""
    import shutil
    import sys

    for folder in ("core", "app"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    export = tmp_path / "core" / "export.py"
    export.write_text(
        export.read_text(encoding="utf-8") + "\n\ndef _late():\n    from core.project import Project\n"
        "    return Project\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = [v for v in violations() if v.key == ("core.export", "core.project", "upward")]
    assert len(found) == 1 and "a stages module imports core.project (orchestration)" in str(found[0])


# Files that still probe "does this tokenizer add BOS" themselves instead of calling core.tokenizer.adds_bos; the same
# rule as KNOWN (remove an entry with the probe).
KNOWN_BOS_PROBES: set[str] = set()


def test_the_adds_bos_probe_has_one_owner():
    """Whether a tokenizer adds BOS is asked in one place (core.tokenizer.adds_bos): a second copy of the probe
    could answer differently (another probe text, another special-token check) and the export would disagree with
    training about the first token of every window."""
    probes = {
        path.relative_to(ROOT).as_posix()
        for path in all_modules().values()
        if '("a")["input_ids"][:1]' in path.read_text(encoding="utf-8")
    }
    assert probes - KNOWN_BOS_PROBES == {"core/tokenizer.py"}
    assert not KNOWN_BOS_PROBES - probes, "KNOWN_BOS_PROBES entries that no longer probe (remove them)"


def test_hydra_translates_without_the_llama_cpp_runtime():
    """Hydra models share the translation prompt and the resumable file translation with the GGUF runtime through
    core.translation (a floor below both), so nothing in core.hydra imports core.runtime (llama.cpp)."""
    modules = all_modules()
    for module, path in modules.items():
        if module == "core.hydra" or module.startswith("core.hydra."):
            scan = ImportScan(module, path.name == "__init__.py", set(modules))
            scan.visit(ast.parse(path.read_text(encoding="utf-8")))
            assert not [line for imported, line, _ in scan.imports if imported == "core.runtime"], module


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (at the top or inside functions). A package's own __init__ importing
    its submodules (re-exporting them) is left out: that is how a package presents itself, not a dependency."""
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        scan = ImportScan(module, path.name == "__init__.py", set(modules))
        scan.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        is_package = path.name == "__init__.py"
        graph[module] = {
            m
            for m, _, _ in scan.imports
            if m != module and m in modules and not (is_package and m.startswith(module + "."))
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    """Issue 29: modules import each other one way only (core.hydra.model once imported core.hydra.store back)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check itself
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(group) for group in found)
