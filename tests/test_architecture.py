"""The package is a one-way stack: no import cycle between modules of ``lstm_research`` and no
private name (leading underscore) imported from another module.

The import graph is read from the source with ``ast`` (module-level and function-level imports
alike), resolving relative imports and ``from package import submodule``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_names(root: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]):
    """Yield ``(imported module, imported name or None, line)`` for each import in the file,
    restricted to modules of the package. ``from pkg import sub`` yields the submodule."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            source = (_resolve_relative(module, is_package, node.level, node.module)
                      if node.level else node.module)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    yield sub, None, node.lineno
                elif source in modules:
                    yield source, alias.name, node.lineno


def import_graph(root: Path, package: str):
    """``(edges, private)``: ``edges[m]`` = the package modules ``m`` imports; ``private`` =
    ``(module, line, imported module, name)`` for each private name imported across modules."""
    modules = module_names(root, package)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private = []
    for m, path in modules.items():
        for target, name, line in imports_of(m, path, modules):
            if target == m:
                continue
            edges[m].add(target)
            if name is not None and name.startswith("_") and not name.startswith("__"):
                private.append((m, line, target, name))
    return edges, private


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted.
    A package importing its own submodules and being imported back by them counts: the
    ``__init__`` would run half-initialized."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    edges, _ = import_graph(ROOT, "lstm_research")
    cycles = find_cycles(edges)
    assert not cycles, "import cycles between modules:\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_no_private_names_imported_across_modules():
    _, private = import_graph(ROOT, "lstm_research")
    assert not private, "private names imported from another module:\n" + "\n".join(
        f"{m}:{line} imports {name} from {target}" for m, line, target, name in private)


# --- the checker itself, on a synthetic package -----------------------------------------------

def _package(tmp_path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "pkg" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_finds_a_cycle_through_relative_and_function_level_imports(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from ..c import g\n    return g\n",
        "c.py": "import pkg.a\n\ndef g():\n    pass\n",
        "d.py": "from pkg import c\n",
    })
    edges, private = import_graph(root, "pkg")
    assert edges["pkg.a"] == {"pkg.sub.b"}
    assert edges["pkg.sub.b"] == {"pkg.c"}
    assert edges["pkg.c"] == {"pkg.a"}
    assert edges["pkg.d"] == {"pkg.c"}
    assert find_cycles(edges) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert private == []


def test_checker_passes_a_one_way_package_and_flags_private_imports(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "from pkg.top import run\n",
        "low.py": "def _helper():\n    pass\n\ndef public():\n    pass\n",
        "mid.py": "from pkg.low import public, _helper\n",
        "top.py": "from . import mid\nfrom .low import public as run\n",
    })
    edges, private = import_graph(root, "pkg")
    assert edges["pkg"] == {"pkg.top"}
    assert edges["pkg.top"] == {"pkg.mid", "pkg.low"}
    assert find_cycles(edges) == []
    assert private == [("pkg.mid", 1, "pkg.low", "_helper")]
